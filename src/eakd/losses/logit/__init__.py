"""Logit distillation losses: KD, DKD, CTKD, MLD, TTM/WTTM (each usable with standardisation)."""

from .ctkd import CTKDLoss, GlobalTemperature, cosine_lambda, ctkd_loss, gradient_reversal
from .dkd import DKDLoss, dkd_loss
from .kd import KDLoss, kd_loss
from .mld import (
    MLDBatchLoss,
    MLDClassLoss,
    MLDLoss,
    confidence_masks,
    mld_batch_loss,
    mld_class_loss,
    mld_loss,
)
from .ttm import TTMLoss, WTTMLoss, ttm_loss, wttm_loss

__all__ = [
    "CTKDLoss",
    "DKDLoss",
    "GlobalTemperature",
    "KDLoss",
    "MLDBatchLoss",
    "MLDClassLoss",
    "MLDLoss",
    "TTMLoss",
    "WTTMLoss",
    "confidence_masks",
    "cosine_lambda",
    "ctkd_loss",
    "dkd_loss",
    "gradient_reversal",
    "kd_loss",
    "mld_batch_loss",
    "mld_class_loss",
    "mld_loss",
    "ttm_loss",
    "wttm_loss",
]
