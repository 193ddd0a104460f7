"""Decoupled KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022)."""

from __future__ import annotations

import torch

from ...core.reduction import reduce
from ..base import DistillationLoss, finish, logit_entropies, prepare_logits, unflatten
from ..registry import register_loss
from ._common import as_rows
from ._fused import dkd_rows

__all__ = ["DKDLoss", "dkd_loss", "dkd_per_item"]


def _dkd_rows_autograd(s, t, target, temperature, alpha, beta):
    """DKD by plain autograd in log space (used when the temperature is a learnable tensor)."""
    u = s.float() / temperature
    v = t.float() / temperature
    onehot = torch.zeros_like(u, dtype=torch.bool).scatter_(1, target.view(-1, 1), True)
    lse_s, lse_t = torch.logsumexp(u, -1), torch.logsumexp(v, -1)
    lse_nt_s = torch.logsumexp(u.masked_fill(onehot, float("-inf")), -1)
    lse_nt_t = torch.logsumexp(v.masked_fill(onehot, float("-inf")), -1)
    log_qy = u.gather(1, target.view(-1, 1)).view(-1) - lse_s
    log_py = v.gather(1, target.view(-1, 1)).view(-1) - lse_t
    log_qn, log_pn = lse_nt_s - lse_s, lse_nt_t - lse_t
    tckd = log_py.exp() * (log_py - log_qy) + log_pn.exp() * (log_pn - log_qn)
    log_q_hat = (u - lse_nt_s.unsqueeze(1)).masked_fill(onehot, 0.0)
    log_p_hat = (v - lse_nt_t.unsqueeze(1)).masked_fill(onehot, 0.0)
    p_hat = log_p_hat.exp().masked_fill(onehot, 0.0)
    nckd = (p_hat * (log_p_hat - log_q_hat)).sum(-1)
    return temperature**2 * (alpha * tckd + beta * nckd)


def dkd_per_item(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | torch.Tensor = 4.0,
    standardize: bool = False,
    entropy_temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-item DKD and, when ``entropy_temperature`` is given, the raw-logit entropies at it."""
    s, t, target = prepare_logits(
        student_logits, teacher_logits, target, needs_target=True, standardize=standardize
    )
    lead = s.shape[:-1]
    y = target.reshape(-1)
    if isinstance(temperature, torch.Tensor):
        per = _dkd_rows_autograd(as_rows(s), as_rows(t), y, temperature, alpha, beta)
        hs = ht = None
    else:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        fuse = entropy_temperature if not standardize else None
        per, hs, ht = dkd_rows(as_rows(s), as_rows(t), y, temperature, alpha, beta, fuse)
    per = finish(unflatten(per, lead), student_logits, teacher_logits)
    return per, unflatten(hs, lead), unflatten(ht, lead)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | torch.Tensor = 4.0,
    standardize: bool = False,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Decoupled knowledge distillation, per item (Zhao et al., CVPR 2022):

    .. math::
        \ell_n = T^2\big(\alpha\,\mathrm{KL}(b^t_n \| b^s_n)
                 + \beta\,\mathrm{KL}(\hat p^t_n \| \hat p^s_n)\big)

    with ``b = [p_y, 1 - p_y]`` the target/non-target split of ``p = softmax(z/T)`` (TCKD) and
    ``p_hat`` the softmax over the non-target classes only (NCKD). The non-target softmax is
    exact (the target class is removed) rather than the reference code's ``-1000`` shift, and
    every log-probability is formed in log space so confident outputs stay finite.

    The warm-up factor ``min(epoch / warmup, 1)`` belongs to the caller. CIFAR-100 defaults:
    ``alpha=1, beta=8, T=4`` (ImageNet: ``beta=0.5, T=1``; detection: ``beta=0.25, T=1``).

    Args:
        target: ``(...)`` class indices.
        weight, mask, reduction, num_items: see :func:`eakd.core.reduce`.
    """
    per, _, _ = dkd_per_item(
        student_logits, teacher_logits, target, alpha, beta, temperature, standardize
    )
    return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


@register_loss("dkd")
class DKDLoss(DistillationLoss):
    """Module form of :func:`dkd_loss` (Zhao et al., CVPR 2022)."""

    needs_target = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = float(temperature)
        self.standardize = bool(standardize)

    def _call(self, s, t, target, entropy_temperature=None):
        return dkd_per_item(
            s,
            t,
            target,
            self.alpha,
            self.beta,
            self.temperature,
            self.standardize,
            entropy_temperature=entropy_temperature,
        )

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        return self._call(student_logits, teacher_logits, target)[0]

    def per_item_with_entropies(self, student_logits, teacher_logits, target, entropy_temperature):
        per, hs, ht = self._call(student_logits, teacher_logits, target, entropy_temperature)
        if hs is None:  # standardised logits: the fused pass saw z-scores, EA wants raw logits
            hs, ht = logit_entropies(student_logits, teacher_logits, entropy_temperature)
        return per, hs, ht

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
            f"standardize={self.standardize}"
        )
