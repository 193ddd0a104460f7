"""Transformed Teacher Matching and its weighted form (Zheng & Yang, "Knowledge Distillation
Based on Transformed Teacher Matching", ICLR 2024).

With ``p = softmax(z^t)`` and ``gamma = 1/T``, the teacher is power-transformed,
``p~ = p^gamma / U``, ``U = sum_c p_c^gamma`` (equivalently ``softmax(z^t / T)``), and matched by
the student at temperature 1, without the ``T^2`` factor:

* TTM:  ``l_n = KL(p~_n || softmax(z^s_n))``
* WTTM: ``l_n = U_n * KL(p~_n || softmax(z^s_n))``, ``U_n = exp((1 - gamma) H_gamma(p_n))``
  (``H_gamma`` the Renyi entropy), a teacher-only, gradient-free sample weight.
"""

from __future__ import annotations

import torch

from ...core.reduction import reduce
from ..base import DistillationLoss, finish, prepare_logits
from ..registry import register_loss
from ._common import as_rows, kl_rows

__all__ = ["TTMLoss", "WTTMLoss", "ttm_loss", "wttm_loss"]


def _ttm_per_item(s, t, gamma, weighted, standardize):
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1] (gamma = 1/T), got {gamma}")
    s2, t2, _ = prepare_logits(s, t, standardize=standardize)
    zs, zt = as_rows(s2).float(), as_rows(t2).float()
    log_p = torch.log_softmax(zt, -1)
    scaled = gamma * log_p
    log_u = torch.logsumexp(scaled, -1, keepdim=True)  # log U_n
    per = kl_rows(scaled - log_u, torch.log_softmax(zs, -1))
    if weighted:
        per = per * log_u.squeeze(-1).exp()
    return finish(per.view(s.shape[:-1]), s, t)


def ttm_loss(
    student_logits,
    teacher_logits,
    target=None,
    *,
    gamma=0.1,
    standardize=False,
    weight=None,
    mask=None,
    reduction="mean",
    num_items=None,
):
    """TTM per item, ``KL(softmax(z^t * gamma) || softmax(z^s))`` (ICLR 2024). The per-pair
    ``gamma`` and loss weight come from the TTM paper's appendix; ``gamma=0.1`` is its
    vgg13 -> vgg8 example (with loss weight 45)."""
    per = _ttm_per_item(student_logits, teacher_logits, gamma, False, standardize)
    return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


def wttm_loss(
    student_logits,
    teacher_logits,
    target=None,
    *,
    gamma=0.1,
    standardize=False,
    weight=None,
    mask=None,
    reduction="mean",
    num_items=None,
):
    """WTTM per item, ``U_n * KL(p~_n || softmax(z^s_n))`` with ``U_n = sum_c p_nc^gamma``."""
    per = _ttm_per_item(student_logits, teacher_logits, gamma, True, standardize)
    return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


class _TTMBase(DistillationLoss):
    weighted = False

    def __init__(self, gamma: float = 0.1, standardize: bool = False) -> None:
        super().__init__()
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1] (gamma = 1/T), got {gamma}")
        self.gamma = float(gamma)
        self.standardize = bool(standardize)

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        return _ttm_per_item(
            student_logits, teacher_logits, self.gamma, self.weighted, self.standardize
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


@register_loss("ttm")
class TTMLoss(_TTMBase):
    """Transformed teacher matching (ICLR 2024); see :func:`ttm_loss`."""


@register_loss("wttm")
class WTTMLoss(_TTMBase):
    """Weighted transformed teacher matching (ICLR 2024); see :func:`wttm_loss`."""

    weighted = True
