"""The detection experiment's configuration: nested dataclasses, bound strictly from YAML.

A config file mirrors :class:`DetectionConfig`; ``key=value`` overrides use dotted paths
(``optim.lr=0.02``, ``ea.enabled=true``). An unknown key or a value of the wrong type fails
before anything is built, naming the key and the valid ones; a renamed key names its new place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...config import apply_overrides, from_dict, load_config, to_dict
from ...core import EASettings
from ..run import PRECISIONS, RunDir
from .model import ModelConfig

__all__ = [
    "DataConfig",
    "DetectionConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "load_detection_config",
]


@dataclass
class DataConfig:
    """COCO-format data. ``batch_size`` is the global batch (split over DDP processes).

    ``contiguous_labels: false`` uses COCO category ids as labels (91 outputs on COCO), to fit
    torchvision's COCO checkpoints; see :class:`CocoDetection`.
    """

    train_images: str = ""
    train_annotations: str = ""
    val_images: str = ""
    val_annotations: str = ""
    batch_size: int = 8
    eval_batch_size: int = 8
    workers: int = 2
    hflip: float = 0.5
    filter_empty: bool = True
    box_tolerance: float = 1.0
    contiguous_labels: bool = True


@dataclass
class DistillConfig:
    """The RoI classification-logit distillation term, added with ``weight``.

    ``loss`` is a registered eakd loss name (``kd``, ``dkd``, ...) and ``loss_kwargs`` its
    keyword arguments (e.g. ``{temperature: 1.0}``; DKD: ``{alpha: 1, beta: 0.25,
    temperature: 1}``, mdistiller's detection recipe).
    """

    loss: str = "kd"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    __renamed__: ClassVar[dict[str, str]] = {
        "ea": "use the top-level ea: section instead (the same keys)"
    }


@dataclass
class OptimConfig:
    """SGD with linear warm-up and a multistep decay, counted in iterations."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    max_iters: int = 180_000
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    milestones: list[int] = field(default_factory=lambda: [120_000, 160_000])
    gamma: float = 0.1

    __renamed__: ClassVar[dict[str, str]] = {"clip_grad_norm": "use train.grad_clip instead"}


@dataclass
class TrainConfig:
    """How the run happens.

    ``device: auto`` picks CUDA when available; ``precision`` is ``fp32``, ``bf16`` or ``fp16``
    (autocast); ``grad_clip`` clips the global gradient norm (``None``: off). ``log_every``,
    ``eval_every`` and ``checkpoint_every`` count iterations (0: at the end only). ``threads``
    sets torch's CPU threads (``None``: torch's default). A finite loss above ``loss_ceiling``
    warns once that the run is probably diverging (0: never). ``tensorboard`` writes the logged
    rows as TensorBoard events too (when it is installed); ``trackers`` lists experiment
    trackers by the names Accelerate's ``log_with`` takes (``wandb``, ``mlflow``, ...).
    """

    seed: int = 0
    precision: str = "fp32"
    grad_clip: float | None = None
    device: str = "auto"
    threads: int | None = None
    deterministic: bool = False
    progress: bool = True
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 5000
    loss_ceiling: float = 1e4
    tensorboard: bool = True
    trackers: list[str] = field(default_factory=list)


@dataclass
class DetectionConfig:
    """A detection run: plain training when ``distill`` is absent, distillation otherwise.

    The run's files are in ``output_dir/name`` (:attr:`run_dir`). ``ea`` weights the
    distillation term per RoI; ``max_entropy: null`` is ``H_ub = log(K + 1)``.
    """

    name: str = "detection"
    output_dir: str = "runs"
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig | None = None
    distill: DistillConfig | None = None
    ea: EASettings = field(default_factory=EASettings)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    __renamed__: ClassVar[dict[str, str]] = {
        "run": "run.output_dir is now output_dir (the run directory is output_dir/name); the "
        "other run.* keys moved to train: (train.seed, train.precision, train.device, "
        "train.threads, train.deterministic, train.progress, train.log_every, train.eval_every, "
        "train.checkpoint_every)"
    }

    @property
    def run_dir(self) -> RunDir:
        return RunDir(os.path.join(self.output_dir, self.name))

    def validate(self, need_train: bool = True, check_files: bool = True) -> None:
        """Check values and cross-field rules; raise ``ValueError`` naming the key.

        ``check_files=False`` skips the existence checks of checkpoint paths (to check a config
        on a machine without the data and weights).
        """
        self.student.validate("student", check_files)
        if self.teacher is not None:
            self.teacher.validate("teacher", check_files)
        if self.distill is not None:
            if self.teacher is None or self.teacher.checkpoint is None:
                raise ValueError(
                    "distill needs a trained teacher: set teacher.checkpoint to its weights "
                    "(a checkpoint written by 'eakd detect train' or a torchvision state dict)"
                )
            from .distill import build_distill_loss

            build_distill_loss(self.distill.loss, self.distill.loss_kwargs, self.ea)
        elif self.teacher is not None:
            raise ValueError(
                "a teacher is configured but no 'distill' section: add one (e.g. distill: "
                "{loss: kd}) or remove the teacher"
            )
        elif self.ea.enabled:
            raise ValueError("ea.enabled weights a distillation term: add a 'distill' section")
        if self.ea.granularity != "item":
            raise ValueError("ea.granularity must be 'item' in detection (a weight per RoI)")
        d, o, t = self.data, self.optim, self.train
        keys = ("train_images", "train_annotations") if need_train else ()
        for key in (*keys, "val_images", "val_annotations"):
            if not getattr(d, key):
                raise ValueError(f"data.{key} is required (a COCO-format path)")
        if d.batch_size < 1 or d.eval_batch_size < 1 or d.workers < 0:
            raise ValueError("data.batch_size/eval_batch_size must be >= 1, data.workers >= 0")
        if o.lr <= 0 or o.max_iters < 1 or o.warmup_iters < 0 or not 0 < o.warmup_factor <= 1:
            raise ValueError(
                "optim: lr > 0, max_iters >= 1, warmup_iters >= 0, 0 < warmup_factor <= 1"
            )
        if list(o.milestones) != sorted(o.milestones):
            raise ValueError(f"optim.milestones must increase, got {o.milestones}")
        if t.precision not in PRECISIONS:
            raise ValueError(
                f"train.precision must be one of {list(PRECISIONS)}, got {t.precision!r}"
            )
        if t.threads is not None and t.threads < 1:
            raise ValueError(f"train.threads must be >= 1 (or null), got {t.threads}")
        if not t.loss_ceiling >= 0:
            raise ValueError(f"train.loss_ceiling must be >= 0 (0: off), got {t.loss_ceiling}")
        if t.log_every < 1 or t.eval_every < 0 or t.checkpoint_every < 0:
            raise ValueError("train.log_every >= 1, train.eval_every and checkpoint_every >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-serialisable data (what checkpoints and ``config.yaml`` store)."""
        return to_dict(self)


def load_detection_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> DetectionConfig:
    """Read a YAML config (or start from the defaults), apply ``key=value`` overrides (values
    parsed as YAML) and bind the result to :class:`DetectionConfig` strictly."""
    overrides = list(overrides)
    data = load_config(path, overrides) if path is not None else apply_overrides({}, overrides)
    return from_dict(DetectionConfig, data)
