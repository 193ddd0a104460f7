"""The one place where per-item losses meet weights, masks and normalisation."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["REDUCTIONS", "check_mask", "check_num_items", "check_reduction", "reduce"]

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    """Raise unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_num_items(
    num_items: int | float | torch.Tensor, mask: torch.Tensor | None, numel: int
) -> float:
    """Return ``num_items`` as a float; raise unless it can divide a mean over ``numel`` items.

    It must be a positive finite number (or a one-element tensor holding one), with one
    exception: 0 is accepted when there is nothing to count, every item being masked out by
    ``mask`` (or there being no items), so that a micro-batch of padding only gives 0 under
    gradient accumulation. A tensor is read once (one device sync).
    """
    if isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(
                "num_items must be a number or a one-element tensor, got a tensor of shape "
                f"{tuple(num_items.shape)}"
            )
        value = float(num_items)
    elif isinstance(num_items, numbers.Real) and not isinstance(num_items, bool):
        value = float(num_items)
    else:
        raise TypeError(f"num_items must be a number or a tensor, got {type(num_items).__name__}")
    if value > 0 and math.isfinite(value):
        return value
    if value == 0 and (numel == 0 or (mask is not None and not bool(mask.any()))):
        return value
    raise ValueError(
        f"num_items must be > 0 (the count the mean divides by), got {value:g}; 0 is allowed "
        "only when every item is masked out"
    )


def check_mask(mask: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Raise unless ``mask`` is a boolean tensor that broadcasts to the items' ``shape``."""
    shape = torch.Size(shape)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a boolean tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got dtype {mask.dtype}")
    if mask.shape != shape:
        try:
            if torch.broadcast_shapes(mask.shape, shape) == shape:
                return mask
        except RuntimeError:
            pass
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, which does not broadcast to the per-item "
            f"loss of shape {tuple(shape)} (one entry per item: the logits' shape without "
            "their class dimension)"
        )
    return mask


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
            exact. Must be > 0, or 0 when every item is masked out (the mean is then 0); see
            :func:`check_num_items`. Ignored for ``"sum"``/``"none"``.
    """
    check_reduction(reduction)
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
        check_mask(mask, out.shape)
        out = torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))
    if reduction == "none":
        return out
    if reduction == "mean" and mask is None and num_items is None:
        return out.mean()
    total = out.sum()
    if reduction == "sum":
        return total
    if num_items is not None:
        if check_num_items(num_items, mask, out.numel()) == 0:
            return total  # every item masked out: the total is 0
        if isinstance(num_items, torch.Tensor):
            return total / num_items.to(device=total.device, dtype=total.dtype)
        return total / float(num_items)
    if mask is None:
        return total / out.numel()
    count = mask.expand_as(out).sum() if mask.shape != out.shape else mask.sum()
    # an all-masked input has a zero total and a zero count: 0, not NaN
    return total / count.to(device=total.device, dtype=total.dtype).clamp_min(1)
