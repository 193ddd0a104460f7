"""eakd: Entropy-based Adaptive Knowledge Distillation (EA-KD, ICCV 2025) for PyTorch.

The three-line use::

    from eakd import EntropyAdaptive, build_loss
    kd = EntropyAdaptive(build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0), temperature=3.0)
    loss = ce + kd(student_logits, teacher_logits, target)
"""

from . import core, functional, losses
from .adaptive import EAStats, EntropyAdaptive
from .core import WEIGHT_KINDS, EASettings, ea_weights, entropy, reduce, standardize_logits
from .losses import DistillationLoss, build_loss, list_losses

__version__ = "0.1.0"

__all__ = [
    "WEIGHT_KINDS",
    "DistillationLoss",
    "EASettings",
    "EAStats",
    "EntropyAdaptive",
    "__version__",
    "build_loss",
    "core",
    "ea_weights",
    "entropy",
    "functional",
    "list_losses",
    "losses",
    "reduce",
    "standardize_logits",
]
