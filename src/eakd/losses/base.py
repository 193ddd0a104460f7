"""Base class of every distillation loss: per-item computation, then the one reduction."""

from __future__ import annotations

import torch
from torch import nn

from ..core.entropy import entropy
from ..core.reduction import reduce
from ..core.transforms import standardize_logits
from ..core.validation import check_finite, check_pair, check_target, mask_teacher

__all__ = ["DistillationLoss", "logit_entropies", "prepare_logits"]


def prepare_logits(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    needs_target: bool = False,
    standardize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate a logit pair (and target), detach the teacher, optionally standardise both.

    ``-inf`` teacher logits (masked classes) become :data:`eakd.core.validation.MASKED_LOGIT`,
    whose probability is exactly 0 (:func:`eakd.core.validation.mask_teacher`)."""
    s, t = check_pair(student_logits, teacher_logits)
    if needs_target or target is not None:
        target = check_target(target, s)
    t = mask_teacher(t.detach(), standardize=standardize)
    if standardize:
        s, t = standardize_logits(s), standardize_logits(t)
    return s, t, target


class DistillationLoss(nn.Module):
    """A distillation loss over items (samples, RoIs, tokens).

    Subclasses implement :meth:`per_item_loss`, returning the unreduced loss of shape
    ``logits.shape[:-1]``; :meth:`forward` adds weights/masks and reduces through
    :func:`eakd.core.reduce`. Subclasses that can compute the EA entropies in the same pass over
    the logits override :meth:`per_item_with_entropies`.

    Class attributes:
        per_item: ``False`` for batch-level terms (no per-item form; EA refuses them).
        needs_target: whether ``target`` (class indices) is required.
    """

    per_item: bool = True
    needs_target: bool = False

    def per_item_loss(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def item_mask(self, target: torch.Tensor | None) -> torch.Tensor | None:
        """The items to keep when the caller gives no mask (token losses: ``labels != -100``)."""
        return None

    def per_item_with_entropies(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor | None,
        entropy_temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(per_item, H_S, H_T)`` with the raw-logit entropies at ``T'`` (detached, float32).

        The default computes them apart with :func:`eakd.core.entropy`; losses that can form
        them in the same pass over the logits (KD, DKD, the token divergences, ReviewKD's
        final logits) override it."""
        per_item = self.per_item_loss(student_logits, teacher_logits, target)
        return (per_item, *logit_entropies(student_logits, teacher_logits, entropy_temperature))

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        weight: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        reduction: str = "mean",
        num_items: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        per_item = self.per_item_loss(student_logits, teacher_logits, target)
        if mask is None:
            mask = self.item_mask(target)
        return reduce(per_item, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


@torch.no_grad()
def logit_entropies(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    standardized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached float32 entropies ``(H_S, H_T)`` of ``softmax(z / T')`` per item, from the raw
    logits or, with ``standardized``, from z-scored ones (the released DKD+LS code)."""
    zs, zt = check_pair(student_logits, teacher_logits, "student logits", "teacher logits")
    zt = mask_teacher(zt, "teacher logits", standardize=standardized)
    if standardized:
        zs, zt = standardize_logits(zs), standardize_logits(zt)
    return entropy(zs, temperature), entropy(zt, temperature)


def finish(
    per_item: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Check a per-item result for NaN/inf (ignoring masked items) and cast to the input dtype."""
    check = per_item if mask is None else per_item[mask]
    check_finite(check, ("student_logits", student_logits), ("teacher_logits", teacher_logits))
    out_dtype = torch.promote_types(student_logits.dtype, teacher_logits.dtype)
    return per_item if per_item.dtype == out_dtype else per_item.to(out_dtype)


def unflatten(x: torch.Tensor | None, lead: torch.Size) -> torch.Tensor | None:
    """``(N,) -> lead`` (the logits' shape without the class dimension)."""
    return x if x is None or x.shape == lead else x.view(lead)
