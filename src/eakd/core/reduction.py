"""The one place where per-item losses meet weights, masks and normalisation."""

from __future__ import annotations

import torch

__all__ = ["REDUCTIONS", "reduce"]

REDUCTIONS = ("none", "mean", "sum")


def reduce(
    per_item: torch.Tensor,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Reduce an unreduced loss over its items (samples, RoIs, tokens).

    .. math:: L = \frac{1}{D} \sum_i m_i\, w_i\, \ell_i,\qquad
              D = \text{num\_items} \text{ if given, else } \sum_i m_i \text{ (or the item count)}

    Weights are used as given (the EA-KD convention: no renormalisation by ``sum w``). Masked
    items are removed with ``where`` *before* any sum, so NaN/inf at padded positions cannot leak
    in, and an all-masked input gives 0 rather than NaN.

    Args:
        per_item: unreduced loss, any shape ``S`` (e.g. ``(N,)`` or ``(B, T)``).
        weight: optional tensor broadcastable to ``S`` (the EA weights; detached by the caller).
        mask: optional boolean tensor broadcastable to ``S``; ``False`` drops an item.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (weighted, masked items of shape ``S``).
        num_items: the denominator of ``"mean"``, e.g. the number of valid tokens in the whole
            accumulated batch (``num_items_in_batch``) so gradient accumulation and DDP stay
            exact. Ignored for ``"sum"``/``"none"``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    out = per_item
    if weight is not None:
        if weight.shape != per_item.shape:
            try:
                torch.broadcast_shapes(weight.shape, per_item.shape)
            except RuntimeError:
                raise ValueError(
                    f"weight has shape {tuple(weight.shape)}, which does not broadcast to the "
                    f"per-item loss of shape {tuple(per_item.shape)}"
                ) from None
        out = out * weight
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got dtype {mask.dtype}")
        out = torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))
    if reduction == "none":
        return out
    if reduction == "mean" and mask is None and num_items is None:
        return out.mean()
    total = out.sum()
    if reduction == "sum":
        return total
    if num_items is not None:
        denom = num_items
    elif mask is not None:
        denom = mask.expand_as(out).sum() if mask.shape != out.shape else mask.sum()
    else:
        denom = out.numel()
    if isinstance(denom, torch.Tensor):
        denom = denom.to(device=total.device, dtype=total.dtype).clamp_min(1)
        return total / denom
    return total / max(float(denom), 1.0)
