"""``EntropyAdaptive``: EA-KD as a wrapper around any per-item distillation loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .core.reduction import check_mask, check_num_items, check_reduction, reduce
from .core.settings import EASettings, EAStats
from .core.weights import sequence_means, weights_from_entropies
from .losses.base import DistillationLoss, finish, logit_entropies, prepare_logits
from .losses.logit._fused import STACK_BELOW, temperature_scales, weighted_kd_small
from .losses.logit.kd import KDLoss

__all__ = ["EAStats", "EntropyAdaptive"]


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
        loss: a per-item loss: a registered :class:`DistillationLoss` (KD, DKD and the token
            divergences compute the entropies in the same pass over the logits, see
            :meth:`DistillationLoss.per_item_with_entropies`) or any callable
            ``loss(student, teacher, target, reduction="none") -> per-item tensor``.
        ea: the options, an :class:`eakd.core.EASettings` (``enabled`` is not consulted:
            wrapping a loss is enabling EA). Defaults to the paper's settings.
        **options: :class:`~eakd.core.EASettings` fields applied over ``ea``: ``temperature``
            (``T'``; 3 on CIFAR/Tiny-ImageNet, 2 on ImageNet), ``max_entropy`` (``H_ub``,
            ``None`` = ``log C``; the released CIFAR KD/DKD code used 100), ``kind`` (the weight
            formula, :data:`eakd.core.WEIGHT_KINDS`, paper Tables 1 and 9), ``weight_logits``
            (``"raw"`` or ``"standardized"``), ``normalize``, ``granularity`` (``"item"``: a
            weight per sample / RoI / token; ``"sequence"`` for ``(B, T)`` items: ``w_b`` from
            the mean token entropies over each sequence's valid tokens, given to all of its
            tokens, so weights of 1 reproduce the unweighted token mean exactly).

    Example::

        kd = EntropyAdaptive(build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0))
        loss = ce + kd(student_logits, teacher_logits, target)
    """

    def __init__(self, loss: Any, ea: EASettings | None = None, **options: Any) -> None:
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
        if ea is not None and not isinstance(ea, EASettings):
            raise TypeError(f"ea must be an EASettings, got {type(ea).__name__}")
        self.loss = loss
        self.settings = ea = EASettings.from_options(ea, **options)
        self.last_stats: EAStats | None = None
        # EA-KD on small logits has a one-node kernel (see _fused.weighted_kd_small); its
        # temperature scales follow the inputs' device like a buffer
        self._kd_kernel = (
            type(loss) is KDLoss
            and not loss.standardize
            and ea.granularity == "item"
            and ea.weight_logits == "raw"
            and not ea.normalize
        )
        self._kd_scales: torch.Tensor | None = None
        self._kd_scales_for: float | None = None  # the KD temperature they were built for

    # the settings, read where the wrapper is inspected (logs, the analysis)
    @property
    def temperature(self) -> float:
        return self.settings.temperature

    @property
    def max_entropy(self) -> float | None:
        return self.settings.max_entropy

    @property
    def kind(self) -> str:
        return self.settings.kind

    @property
    def weight_logits(self) -> str:
        return self.settings.weight_logits

    @property
    def normalize(self) -> bool:
        return self.settings.normalize

    @property
    def granularity(self) -> str:
        return self.settings.granularity

    @property
    def per_item(self) -> bool:
        return True

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
        ea, loss = self.settings, self.loss
        check_reduction(reduction)
        if mask is not None:  # the entropies and weights use it too: one entry per item
            items = (logits[0] if logits is not None else student).shape[:-1]
            mask = check_mask(mask, items).expand(items)
        if (
            self._kd_kernel
            and logits is None
            and mask is None
            and reduction != "none"
            and not isinstance(num_items, torch.Tensor)
            and isinstance(student, torch.Tensor)
            and student.dim() == 2
            and student.numel() < STACK_BELOW
            and student.dtype == torch.float32
            and getattr(teacher, "dtype", None) == torch.float32
        ):
            return self._small_kd(student, teacher, reduction, num_items)
        is_loss = isinstance(loss, DistillationLoss)
        if is_loss and logits is None and ea.weight_logits == "raw":
            per_item, hs, ht = loss.per_item_with_entropies(
                student, teacher, target, ea.temperature
            )
        else:
            if is_loss:
                per_item = loss.per_item_loss(student, teacher, target)
            else:
                per_item = loss(student, teacher, target, reduction="none")
            zs, zt = logits if logits is not None else (student, teacher)
            standardized = ea.weight_logits == "standardized"
            hs, ht = logit_entropies(zs, zt, ea.temperature, standardized)
        if per_item.shape != hs.shape:
            raise ValueError(
                f"the wrapped loss returned shape {tuple(per_item.shape)} for reduction='none', "
                f"but the weights have the items' shape {tuple(hs.shape)} (the logits without "
                "their class dimension); the loss must return one value per item"
            )
        if mask is None and is_loss:
            mask = loss.item_mask(target)
        if ea.granularity == "sequence":
            hs, ht = sequence_means(hs, mask), sequence_means(ht, mask)
        num_classes = (logits[0] if logits is not None else student).shape[-1]
        w = weights_from_entropies(hs, ht, ea.max_entropy_for(num_classes), ea.kind)
        if ea.normalize:
            mean_w = reduce(w, mask=mask, reduction="mean")
            w = w / mean_w.clamp_min(torch.finfo(w.dtype).tiny)
        # plain attribute, set past nn.Module.__setattr__ (not a parameter, buffer or module)
        object.__setattr__(self, "last_stats", EAStats(w, hs, ht, per_item.detach(), mask))
        return reduce(per_item, weight=w, mask=mask, reduction=reduction, num_items=num_items)

    def _small_kd(self, student, teacher, reduction, num_items) -> torch.Tensor:
        """EA-KD on small float32 logits through its one-node kernel: the same values as the
        per-item path below, at a fraction of its dispatch cost."""
        s, t, _ = prepare_logits(student, teacher)
        if reduction == "sum":
            denom = 1.0
        elif num_items is None:
            denom = float(s.shape[0])
        else:  # no mask on this path: 0 is refused unless there are no rows
            denom = check_num_items(num_items, None, s.shape[0])
        ea, temperature = self.settings, self.loss.temperature
        scales = self._kd_scales
        if scales is None or scales.device != s.device or self._kd_scales_for != temperature:
            scales = self._kd_scales = temperature_scales(temperature, ea.temperature, s.device)
            self._kd_scales_for = temperature
        loss, per_item, w, hs, ht = weighted_kd_small(
            s,
            t,
            temperature,
            ea.temperature,
            ea.max_entropy_for(s.shape[-1]),
            ea.kind,
            denom or 1.0,  # no rows: the total is 0, and so is the mean
            scales,
        )
        finish(per_item, student, teacher)
        object.__setattr__(self, "last_stats", EAStats(w, hs, ht, per_item, None))
        return loss

    def extra_repr(self) -> str:
        fields = self.settings.to_dict()
        fields.pop("enabled")
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())
