"""Softmax entropy, computed exactly in float32 from ``log_softmax``."""

from __future__ import annotations

import math

import torch

from .validation import check_logits

__all__ = ["entropy", "entropy_from_log_probs", "entropy_from_softmax"]


def entropy_from_log_probs(
    log_probs: torch.Tensor, dim: int = -1, finite: bool = False
) -> torch.Tensor:
    """``H = -sum_c p_c log p_c`` given ``log p``, clamped to ``[0, log C]``.

    ``p = 0`` entries (``log p = -inf``, from masked logits) contribute 0. ``finite=True``
    promises finite log-probabilities (finite logits), which spares that guard.
    """
    probs = log_probs.exp()
    if finite:  # in place unless autograd needs exp's output
        terms = probs * log_probs if log_probs.requires_grad else probs.mul_(log_probs)
    else:  # xlogy semantics: a class with p == 0 (log p == -inf) contributes nothing
        zero = torch.zeros((), dtype=probs.dtype, device=probs.device)
        terms = torch.where(probs > 0, probs * log_probs, zero)
    return terms.sum(dim).neg_().clamp_(0.0, math.log(log_probs.shape[dim]))


def entropy_from_softmax(
    logits: torch.Tensor, probs: torch.Tensor, lse: torch.Tensor, consume: bool = False
) -> torch.Tensor:
    """``H = lse(z) - sum_c p_c z_c`` for the rows of ``z`` (last dimension), given
    ``p = softmax(z)`` and ``lse(z)`` that a kernel already holds; clamped to ``[0, log C]``.

    For the fused loss kernels: no ``log`` of a probability is taken, so confident logits stay
    finite. ``consume=True`` overwrites ``probs`` (a scratch buffer) instead of allocating.
    """
    prod = probs.mul_(logits) if consume else probs * logits
    return (lse - prod.sum(-1)).clamp_(0.0, math.log(logits.shape[-1]))


def entropy(
    logits: torch.Tensor,
    temperature: float = 1.0,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Entropy of ``softmax(logits / temperature)`` along ``dim``, per row, in float32.

    .. math:: H = -\sum_c p_c \log p_c,\qquad p = \mathrm{softmax}(z / T)

    Computed as ``logsumexp(z/T) - sum_c p_c z_c/T`` on float32 copies of the logits, with no
    epsilon, so uniform logits give exactly ``log C`` (up to float rounding) and logits of
    magnitude 1e4 stay finite in float32 and bfloat16. The result is clamped to the exact
    bounds ``[0, log C]`` to remove rounding excursions.

    Args:
        logits: ``(..., C, ...)`` floating tensor.
        temperature: softmax temperature ``T > 0`` (the paper's ``T'`` for EA weights).
        dim: class dimension.
        mask: optional boolean tensor of the output's shape; masked-out rows give 0.

    Returns:
        ``logits`` shape without ``dim``, float32. Gradients flow unless the caller detaches.
    """
    check_logits(logits.movedim(dim, -1) if logits.dim() > 1 else logits, "logits")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    log_p = torch.log_softmax(z, dim=dim)
    h = entropy_from_log_probs(log_p, dim=dim)
    if mask is not None:
        h = torch.where(mask, h, torch.zeros((), dtype=h.dtype, device=h.device))
    return h
