"""Distillation losses, each computed per item and registered by name."""

from . import feature, logit, token
from .base import DistillationLoss
from .logit import *  # noqa: F403
from .logit import __all__ as _logit_all
from .registry import LOSSES, build_loss, list_losses, register_loss

__all__ = [
    "LOSSES",
    "DistillationLoss",
    "build_loss",
    "feature",
    "list_losses",
    "logit",
    "register_loss",
    "token",
]
__all__ += list(_logit_all)
