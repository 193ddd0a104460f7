"""Hinton KD (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015)."""

from __future__ import annotations

import torch

from ...core.reduction import reduce
from ..base import DistillationLoss, finish, logit_entropies, prepare_logits, unflatten
from ..registry import register_loss
from ._common import as_rows, kl_rows, log_softmax_t
from ._fused import kd_rows

__all__ = ["KDLoss", "kd_loss", "kd_per_item"]


def kd_per_item(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float | torch.Tensor = 4.0,
    standardize: bool = False,
    entropy_temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-item KD and, when ``entropy_temperature`` is given, the raw-logit entropies at it."""
    s, t, _ = prepare_logits(student_logits, teacher_logits, standardize=standardize)
    lead = s.shape[:-1]
    if isinstance(temperature, torch.Tensor):
        # learnable temperature (CTKD): plain autograd so the temperature gets its gradient
        per = temperature**2 * kl_rows(
            log_softmax_t(as_rows(t), temperature), log_softmax_t(as_rows(s), temperature)
        )
        hs = ht = None
    else:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        fuse = entropy_temperature if not standardize else None
        per, hs, ht = kd_rows(as_rows(s), as_rows(t), temperature, fuse)
    per = finish(unflatten(per, lead), student_logits, teacher_logits)
    return per, unflatten(hs, lead), unflatten(ht, lead)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 4.0,
    standardize: bool = False,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Knowledge distillation loss, per item:

    .. math:: \ell_n = T^2\,\mathrm{KL}(\sigma(z^t_n / T) \,\|\, \sigma(z^s_n / T))

    Args:
        student_logits, teacher_logits: ``(..., C)``; the teacher is detached.
        target: unused (accepted for a uniform signature).
        temperature: ``T`` (CIFAR-100: 4; ImageNet: 1). A tensor is allowed (CTKD).
        standardize: apply logit standardisation (Sun et al., CVPR 2024) to both sides first.
        weight, mask, reduction, num_items: see :func:`eakd.core.reduce`.

    Returns:
        Per-item loss of shape ``(...)`` for ``reduction="none"``, else a scalar. Defaults follow
        the CIFAR-100 recipe (T = 4; loss weights 0.1 CE / 0.9 KD are the caller's).
    """
    per, _, _ = kd_per_item(student_logits, teacher_logits, temperature, standardize)
    return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


@register_loss("kd")
class KDLoss(DistillationLoss):
    """Module form of :func:`kd_loss` (Hinton et al., 2015). Default ``temperature=4.0``."""

    def __init__(self, temperature: float = 4.0, standardize: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.standardize = bool(standardize)

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        return kd_per_item(student_logits, teacher_logits, self.temperature, self.standardize)[0]

    def per_item_with_entropies(self, student_logits, teacher_logits, target, entropy_temperature):
        per, hs, ht = kd_per_item(
            student_logits,
            teacher_logits,
            self.temperature,
            self.standardize,
            entropy_temperature=entropy_temperature,
        )
        if hs is None:  # standardised logits: the fused pass saw z-scores, EA wants raw logits
            hs, ht = logit_entropies(student_logits, teacher_logits, entropy_temperature)
        return per, hs, ht

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, standardize={self.standardize}"
