"""Functional forms of every loss: ``eakd.functional.kd_loss(student, teacher, ...)``."""

from .core.entropy import entropy
from .core.reduction import reduce
from .core.transforms import standardize_logits
from .core.weights import ea_weights
from .losses.logit import (
    ctkd_loss,
    dkd_loss,
    kd_loss,
    mld_batch_loss,
    mld_class_loss,
    mld_loss,
    ttm_loss,
    wttm_loss,
)

__all__ = [
    "ctkd_loss",
    "dkd_loss",
    "ea_weights",
    "entropy",
    "kd_loss",
    "mld_batch_loss",
    "mld_class_loss",
    "mld_loss",
    "reduce",
    "standardize_logits",
    "ttm_loss",
    "wttm_loss",
]
