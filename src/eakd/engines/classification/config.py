"""The schema of a classification experiment (bound strictly from YAML by ``eakd.config``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ...core import EASettings
from ...models.input_adapter import InputSpec
from ...objectives import list_methods
from ..run import PRECISIONS

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "LogConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "resolve_ea",
]


@dataclass
class ModelConfig:
    """A model from the zoo (``eakd list``) or an external ``torchvision:``/``timm:`` name.

    ``input`` (an :class:`eakd.models.InputSpec`: ``size``, ``mean``, ``std``,
    ``interpolation``) is set for a model trained at another input size or normalisation than
    the dataset's, such as a 224-px transformer teacher of a 64-px Tiny-ImageNet student: the
    model then sees each batch resized to ``size`` and normalised with its own ``mean``/``std``
    (:class:`eakd.models.InputAdapter`). ``replace_head`` loads the checkpoint without its
    classifier, which keeps its fresh initialisation (fine-tuning ImageNet weights on another
    class count).
    """

    name: str = "resnet8x4"
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputSpec | None = None
    replace_head: bool = False

    def __post_init__(self) -> None:
        if self.replace_head and not self.checkpoint:
            raise ValueError("replace_head replaces the classifier of a checkpoint: set checkpoint")


@dataclass
class DataConfig:
    """Dataset by registry name. ``options`` are dataset-specific (sizes, seeds, subsets).
    ``batch_size`` is the global training batch, split evenly over DDP processes (as
    mdistiller's ``BATCH_SIZE``); ``test_batch_size`` is per process."""

    name: str = "cifar100"
    root: str | None = None
    batch_size: int = 64
    test_batch_size: int = 256
    num_workers: int = 2
    augment: Literal["default", "none", "mld"] = "default"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """The training objective: ``ce_weight * CE + warm(epoch) * kd_weight * distill``.

    ``loss`` holds the keyword arguments of the registered loss (temperature, alpha, beta,
    standardize, ...). ``warmup_epochs`` ramps the distillation term linearly,
    ``min(epoch / warmup_epochs, 1)`` with epochs from 1 (DKD: 20 on CIFAR).
    For MLD, ``mld_official`` reproduces the released code (confidence masks as batch-mean
    factors, the strong view's T = 2 and 6 terms taken from the weak logits, class/batch
    consistency on the weak view only); ``False`` follows the MLD paper. MLD runs the student
    once per view, weak then strong, as the released code does (in train mode BatchNorm
    normalises each view over its own samples and updates its running statistics twice per
    step); ``mld_batched_views`` runs one student forward over both views concatenated: faster,
    but BatchNorm normalises over both views together and updates its running statistics once,
    which is not what the released code ran.

    Feature methods build their loss from the two models, ``loss`` holding the other keyword
    arguments: ``reviewkd`` (``kd_weight`` = lambda_R, ``warmup_epochs`` = 20 on CIFAR) and
    ``fcfd`` (its KL/L2 weights, the L2 warm-up and ``ea_targets`` live in ``loss``; keep
    ``kd_weight`` 1 and ``warmup_epochs`` 0, and set ``optim.nesterov``).
    """

    name: str = "kd"
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    warmup_epochs: int = 0
    loss: dict[str, Any] = field(default_factory=dict)
    mld_official: bool = True
    mld_batched_views: bool = False

    def __post_init__(self) -> None:
        if self.name not in list_methods():
            base = self.name.removeprefix("ea_")
            if base != self.name and base in list_methods():
                raise ValueError(
                    f"method.name={self.name} is not a method: EA is switched on apart, use "
                    f"method.name={base} ea.enabled=true"
                )
            raise ValueError(f"method.name must be one of {list_methods()}, got {self.name!r}")


@dataclass
class OptimConfig:
    """SGD with a per-epoch schedule and an optional linear learning-rate warm-up."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclass
class TrainConfig:
    """``precision``: ``fp32``, or autocast to ``bf16`` / ``fp16`` (fp16 needs CUDA; its loss
    is scaled). ``grad_clip``: clip the global gradient norm to this value (null: off).
    ``loss_ceiling``: a finite training loss above it warns once that the run is probably
    diverging (0: never); a NaN/inf loss always stops the run."""

    __renamed__: ClassVar[dict[str, str]] = {
        "amp": "use train.precision (fp32, bf16 or fp16; amp: none is precision: fp32) instead"
    }

    epochs: int = 240
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    precision: str = "fp32"
    grad_clip: float | None = None
    eval_every: int = 1
    progress: bool = True
    threads: int | None = None
    loss_ceiling: float = 1e4

    def __post_init__(self) -> None:
        if not self.loss_ceiling >= 0:
            raise ValueError(f"train.loss_ceiling must be >= 0 (0: off), got {self.loss_ceiling}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"train.precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )


@dataclass
class LogConfig:
    """``diagnostics`` records per-epoch EA statistics and the loss per teacher-entropy bin
    (what the analysis figures need, without a re-run); ``test_entropies`` stores the
    student's (and once the teacher's) test-set entropies at each evaluation.

    ``save_epochs`` lists the epochs (from 1, increasing, at most ``train.epochs``) after
    which the student's weights are kept as ``checkpoints/epochNNNN.pt`` (``{"model":
    state_dict, "epoch", "arch", "config"}``, like ``best.pt``): what the per-epoch loss
    landscapes, Area@level and t-SNE of ``eakd analyze`` read (the paper shows epochs 40, 120
    and 240 of 240).

    ``trackers`` lists experiment trackers by the names Accelerate's ``log_with`` takes
    (``wandb``, ``mlflow``, ``comet_ml``, ...): every epoch's row goes to them as well."""

    tensorboard: bool = True
    trackers: list[str] = field(default_factory=list)
    diagnostics: bool = True
    test_entropies: bool = True
    entropy_bins: int = 1024
    save_epochs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        epochs = list(self.save_epochs)
        if any(e < 1 for e in epochs):
            raise ValueError(f"log.save_epochs must list epochs >= 1, got {epochs}")
        if epochs != sorted(set(epochs)):
            raise ValueError(
                f"log.save_epochs must list each epoch once, in increasing order, got {epochs}"
            )


@dataclass
class ExperimentConfig:
    """One run, written to ``<output_dir>/<name>``. ``ea`` is the :class:`eakd.core.EASettings`
    section every engine shares; :func:`resolve_ea` applies its preset once the class count is
    known."""

    name: str = "experiment"
    output_dir: str = "runs"
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    ea: EASettings = field(default_factory=EASettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.method.name != "vanilla" and self.teacher is None:
            raise ValueError(
                f"method {self.method.name!r} distils from a teacher: set teacher.name (and "
                "teacher.checkpoint), or use method.name=vanilla to train without one"
            )
        if self.method.name == "vanilla" and self.ea.enabled:
            raise ValueError("ea.enabled needs a distillation method, not method.name=vanilla")
        if self.ea.granularity != "item":
            raise ValueError(
                "ea.granularity must be 'item' in classification (a weight per sample; "
                "'sequence' is for token losses)"
            )
        if self.method.name == "mld" and self.data.augment != "mld":
            raise ValueError("method mld trains on weak and strong views: set data.augment=mld")
        if self.train.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.train.epochs}")


def resolve_ea(cfg: ExperimentConfig, num_classes: int) -> EASettings:
    """The run's EA settings with ``ea.preset`` applied for its method and class count: what
    the task weighs with and what ``results.json`` records under ``"ea"``."""
    standardized = bool(cfg.method.loss.get("standardize", False))
    return cfg.ea.resolve(cfg.method.name, num_classes, standardized=standardized)
