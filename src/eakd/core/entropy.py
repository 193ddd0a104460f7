"""Softmax entropy, computed exactly in float32 from ``log_softmax``."""

from __future__ import annotations

import math

import torch

from .validation import check_logits

__all__ = ["entropy", "entropy_from_log_probs"]


def entropy_from_log_probs(log_probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``H = -sum_c p_c log p_c`` given ``log p``; ``p = 0`` entries contribute 0."""
    probs = log_probs.exp()
    # xlogy semantics: a class with p == 0 (log p == -inf) contributes nothing.
    terms = torch.where(probs > 0, probs * log_probs, torch.zeros((), dtype=probs.dtype))
    return -terms.sum(dim)


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
    num_classes = logits.shape[dim]
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    log_p = torch.log_softmax(z, dim=dim)
    h = entropy_from_log_probs(log_p, dim=dim).clamp(0.0, math.log(num_classes))
    if mask is not None:
        h = torch.where(mask, h, torch.zeros((), dtype=h.dtype, device=h.device))
    return h
