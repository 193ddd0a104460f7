"""The detection experiment's configuration: nested dataclasses, bound strictly from YAML.

A config file mirrors :class:`DetectionConfig`; ``key=value`` overrides use dotted paths
(``optim.lr=0.02``, ``distill.ea.enabled=true``). An unknown key or a value of the wrong type
fails before anything is built, naming the key and the valid ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ...config import apply_overrides, from_dict, load_config, to_dict
from .model import ModelConfig

__all__ = [
    "DataConfig",
    "DetectionConfig",
    "DistillConfig",
    "EAConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
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
class EAConfig:
    """Entropy-adaptive weights per RoI (:class:`eakd.EntropyAdaptive`)."""

    enabled: bool = False
    temperature: float = 3.0
    max_entropy: float | None = None
    kind: str = "ea"
    normalize: bool = False


@dataclass
class DistillConfig:
    """The RoI classification-logit distillation term, added with ``weight``.

    ``loss`` is a registered eakd loss name (``kd``, ``dkd``, ...) and ``loss_kwargs`` its
    keyword arguments (e.g. ``{temperature: 1.0}``; DKD: ``{alpha: 1, beta: 0.25,
    temperature: 1}``, the detection recipe of METHODS.md section 10).
    """

    loss: str = "kd"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    ea: EAConfig = field(default_factory=EAConfig)


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
    clip_grad_norm: float | None = None


@dataclass
class RunConfig:
    """Where and how the run happens.

    ``device: auto`` picks CUDA when available; ``precision`` is ``fp32``, ``bf16`` or ``fp16``
    (autocast). ``eval_every`` / ``checkpoint_every`` count iterations (0: at the end only).
    """

    output_dir: str = "runs/detection"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 5000
    progress: bool = True
    deterministic: bool = False


@dataclass
class DetectionConfig:
    """A detection run: plain training when ``distill`` is absent, distillation otherwise."""

    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig | None = None
    distill: DistillConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

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

            ea = self.distill.ea
            build_distill_loss(
                self.distill.loss, self.distill.loss_kwargs, ea.enabled, ea.temperature,
                ea.max_entropy, ea.kind, ea.normalize,
            )  # fmt: skip
        elif self.teacher is not None:
            raise ValueError(
                "a teacher is configured but no 'distill' section: add one (e.g. distill: "
                "{loss: kd}) or remove the teacher"
            )
        d, o, r = self.data, self.optim, self.run
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
        if r.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"run.precision must be fp32, bf16 or fp16, got {r.precision!r}")
        if r.log_every < 1 or r.eval_every < 0 or r.checkpoint_every < 0:
            raise ValueError("run.log_every >= 1, run.eval_every and checkpoint_every >= 0")

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
