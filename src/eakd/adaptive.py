"""``EntropyAdaptive``: EA-KD as a wrapper around any per-item distillation loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .core.entropy import entropy
from .core.reduction import reduce
from .core.transforms import standardize_logits
from .core.validation import check_pair
from .core.weights import WEIGHT_KINDS, resolve_max_entropy, weights_from_entropies
from .losses.base import DistillationLoss

__all__ = ["EAStats", "EntropyAdaptive"]

WEIGHT_LOGITS = ("raw", "standardized")
GRANULARITIES = ("item", "sequence")


@dataclass(frozen=True)
class EAStats:
    """What the last forward computed, detached: for logging and the analysis tools."""

    weights: torch.Tensor
    student_entropy: torch.Tensor
    teacher_entropy: torch.Tensor
    per_item: torch.Tensor
    mask: torch.Tensor | None = None


class EntropyAdaptive(nn.Module):
    r"""Entropy-based adaptive reweighting of a per-item distillation loss (EA-KD, ICCV 2025).

    .. math::
        L = \frac{1}{D}\sum_n w_n \ell_n,\qquad
        w_n = \tfrac12 H^T_n \Big(1 + \frac{H^S_n}{H_{ub}}\Big)\ (\text{detached})

    where ``l_n`` is the wrapped loss per item (sample, RoI, token), ``H`` the entropies of
    ``softmax(z / T')`` and ``D`` the item count (or ``num_items``). The wrapped loss keeps its
    form; only its per-item weighting changes. Weights are not renormalised (paper behaviour),
    so EA also rescales the loss by the mean weight; ``normalize=True`` divides by it instead.

    Args:
        loss: a per-item loss: a registered :class:`DistillationLoss` (fast path: KD and DKD
            compute the entropies in the same pass over the logits) or any callable
            ``loss(student, teacher, target, reduction="none") -> per-item tensor``.
        temperature: the entropy temperature ``T'`` (3 on CIFAR/Tiny-ImageNet, 2 on ImageNet).
        max_entropy: ``H_ub``; ``None`` means ``log C``. The released CIFAR KD/DKD code used 100.
        kind: the weight formula, see :data:`eakd.core.WEIGHT_KINDS` (paper Tables 1 and 9).
        weight_logits: ``"raw"`` (paper default) or ``"standardized"`` (entropies of
            z-scored logits, as the released DKD+LS code computed them).
        normalize: divide the weights by their (masked) mean, so only the relative weighting
            changes. Off by default (paper behaviour).
        granularity: ``"item"`` (a weight per sample / RoI / token) or ``"sequence"`` for
            ``(B, T)`` items: ``w_b`` from the mean token entropies over each sequence's valid
            tokens (``mask``), given to all of that sequence's tokens, so the usual token-mean
            reduction is kept and weights of 1 reproduce the unweighted loss exactly.

    Example::

        kd = EntropyAdaptive(build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0))
        loss = ce + kd(student_logits, teacher_logits, target)
    """

    def __init__(
        self,
        loss: Any,
        temperature: float = 3.0,
        max_entropy: float | None = None,
        kind: str = "ea",
        weight_logits: str = "raw",
        normalize: bool = False,
        granularity: str = "item",
    ) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be a loss module or callable, got {type(loss).__name__}")
        if not getattr(loss, "per_item", True):
            name = type(loss).__name__
            raise ValueError(
                f"{name} is a batch-level term with no per-item form, so it cannot be "
                "entropy-weighted; wrap only per-item terms (e.g. MLD's instance term 'mld') "
                "and add batch-level terms unweighted"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if kind not in WEIGHT_KINDS:
            raise ValueError(f"kind must be one of {sorted(WEIGHT_KINDS)}, got {kind!r}")
        if weight_logits not in WEIGHT_LOGITS:
            raise ValueError(f"weight_logits must be one of {WEIGHT_LOGITS}, got {weight_logits!r}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if max_entropy is not None:
            resolve_max_entropy(max_entropy, 2)
        self.loss = loss
        self.temperature = float(temperature)
        self.max_entropy = max_entropy
        self.kind = kind
        self.weight_logits = weight_logits
        self.normalize = bool(normalize)
        self.granularity = granularity
        self.last_stats: EAStats | None = None

    @property
    def per_item(self) -> bool:
        return True

    def _per_item(self, loss, student, teacher, target, fuse: bool):
        if isinstance(loss, DistillationLoss):
            if fuse:
                return loss.per_item_with_entropies(student, teacher, target, self.temperature)
            return loss.per_item_loss(student, teacher, target), None, None
        return loss(student, teacher, target, reduction="none"), None, None

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        logits: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        reduction: str = "mean",
        num_items: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted, reduced loss.

        Args:
            student, teacher: the wrapped loss's inputs (logits, or features when ``logits``
                is given).
            target: class indices, passed to the wrapped loss.
            logits: ``(student_logits, teacher_logits)`` to take the entropies from, for
                losses whose inputs are not logits (ReviewKD, FCFD feature terms).
            mask, reduction, num_items: see :func:`eakd.core.reduce`.
        """
        loss = self.loss  # one nn.Module attribute lookup: this is the hot path
        fuse = logits is None and self.weight_logits == "raw" and self.kind != "none"
        if fuse and mask is None and reduction != "none":
            fast = self._weighted_node(loss, student, teacher, target, reduction, num_items)
            if fast is not None:
                return fast
        per_item, hs, ht = self._per_item(loss, student, teacher, target, fuse)
        if hs is None:
            zs, zt = logits if logits is not None else (student, teacher)
            hs, ht = self._entropies(zs, zt)
        if per_item.shape != hs.shape:
            raise ValueError(
                f"the wrapped loss returned shape {tuple(per_item.shape)} for reduction='none', "
                f"but the weights have the items' shape {tuple(hs.shape)} (the logits without "
                "their class dimension); the loss must return one value per item"
            )
        if mask is None and isinstance(loss, DistillationLoss):
            mask = loss.item_mask(target)
        if self.granularity == "sequence":
            hs, ht = _sequence_means(hs, mask), _sequence_means(ht, mask)
        num_classes = (logits[0] if logits is not None else student).shape[-1]
        h_ub = resolve_max_entropy(self.max_entropy, num_classes)
        w = weights_from_entropies(hs, ht, h_ub, self.kind)
        if self.normalize:
            mean_w = reduce(w, mask=mask, reduction="mean")
            w = w / mean_w.clamp_min(torch.finfo(w.dtype).tiny)
        # plain attribute, set past nn.Module.__setattr__ (not a parameter, buffer or module)
        object.__setattr__(self, "last_stats", EAStats(w, hs, ht, per_item.detach(), mask))
        return reduce(per_item, weight=w, mask=mask, reduction=reduction, num_items=num_items)

    def _weighted_node(self, loss, student, teacher, target, reduction, num_items):
        """The loss's one-node path (see :meth:`DistillationLoss.weighted_loss`), when these
        options allow it; else ``None``."""
        if (
            self.granularity != "item"
            or self.normalize
            or not isinstance(loss, DistillationLoss)
            or type(loss).weighted_loss is DistillationLoss.weighted_loss  # no such path
            or isinstance(num_items, torch.Tensor)
            or not isinstance(student, torch.Tensor)
            or student.dim() != 2
            or loss.item_mask(target) is not None
        ):
            return None
        if reduction == "sum":
            denom = 1.0
        else:
            denom = float(num_items) if num_items is not None else float(student.shape[0])
            denom = max(denom, 1.0)
        h_ub = resolve_max_entropy(self.max_entropy, student.shape[-1])
        kind = self.kind

        def weigh(hs, ht):
            return weights_from_entropies(hs, ht, h_ub, kind)

        out = loss.weighted_loss(student, teacher, target, self.temperature, weigh, denom)
        if out is None:
            return None
        value, per_item, w, hs, ht = out
        object.__setattr__(self, "last_stats", EAStats(w, hs, ht, per_item, None))
        return value

    @torch.no_grad()
    def _entropies(self, zs: torch.Tensor, zt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zs, zt = check_pair(zs, zt, "student logits", "teacher logits")
        if self.weight_logits == "standardized":
            zs, zt = standardize_logits(zs), standardize_logits(zt)
        return entropy(zs, self.temperature), entropy(zt, self.temperature)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, max_entropy={self.max_entropy}, kind={self.kind!r}, "
            f"weight_logits={self.weight_logits!r}, normalize={self.normalize}, "
            f"granularity={self.granularity!r}"
        )


def _sequence_means(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sequence mean of ``(B, T)`` token entropies over valid tokens, broadcast back to
    ``(B, T)``; a sequence without valid tokens gets 0 (its tokens are masked anyway)."""
    if h.dim() != 2:
        raise ValueError(
            f"granularity='sequence' needs (B, T) items (logits (B, T, V)), got items of shape "
            f"{tuple(h.shape)}"
        )
    if mask is None:
        return h.mean(1, keepdim=True).expand_as(h)
    m = mask.to(h.dtype)
    total = torch.where(mask, h, torch.zeros((), dtype=h.dtype, device=h.device)).sum(1)
    return (total / m.sum(1).clamp_min(1.0)).unsqueeze(1).expand_as(h)
