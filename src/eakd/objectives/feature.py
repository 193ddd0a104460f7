"""Objectives of the feature methods: ReviewKD (fused student features against the teacher's)
and FCFD (bridges and mixed paths run by the loss itself). EA weights come from the final
logits in both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.feature.fcfd import PerItemValues
from ..losses.registry import build_loss
from .base import Objective, logits_of, register_objective

__all__ = ["FCFDObjective", "ReviewKDObjective"]


@register_objective("reviewkd")
class ReviewKDObjective(Objective):
    r"""ReviewKD (CVPR 2021): ``L = ce_weight * CE + warm(e) * kd_weight * mean_n w_n l_n`` with
    ``l_n`` the hierarchical context loss of the ABF-fused student levels against the teacher's
    (:class:`eakd.losses.feature.ReviewKDLoss`), and ``w_n`` the EA weights of the final logits
    (or 1). ``kd_weight`` is ``lambda_R`` and ``warmup_epochs`` its warm-up (CIFAR: 5 and 20).

    Args:
        student, teacher: models returning ``(logits, feats)`` (the eakd.models contract).
        loss: keywords of :class:`~eakd.losses.feature.ReviewKDLoss` (``student_preact``, ...).
        **options: ``num_classes``, ``ea``, ``ce_weight``, ``kd_weight``, ``warmup_epochs``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        loss: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teacher, **options)
        review = build_loss("reviewkd", student=student, teacher=teacher, **(loss or {}))
        self.distill = self.weighted(review)

    def compute(self, batch):
        x, y = batch
        s_out = self.student(x)
        s = logits_of(s_out)
        self.check_classes(s, "student")
        ce = F.cross_entropy(s, y)
        with torch.no_grad():
            t, t_feats = self.teacher(x)
        t = t.detach()
        self.check_classes(t, "teacher")
        kd = self.term(self.distill, s_out[1], t_feats, y, logits=(s, t))
        return {"logits": s, "ce": ce, "kd": kd, "loss": self.total(ce, kd)}


@register_objective("fcfd")
class FCFDObjective(Objective):
    r"""FCFD (ICLR 2023): ``L = ce_weight * CE + warm(e) * kd_weight * L_FCFD``, where the loss
    (:class:`eakd.losses.feature.FCFDLoss`) runs the student, the teacher and the sampled
    mixed paths itself, and EA multiplies the per-sample terms named in its ``ea_targets``
    by the weights of the final logits. FCFD's own L2 warm-up lives in ``loss``
    (``warmup_epochs``); keep ``kd_weight`` 1 and the objective's ``warmup_epochs`` 0.

    Args:
        student, teacher: models with the stage interface (``num_stages``, ``forward_stage``,
            ``forward_head``).
        loss: keywords of :class:`~eakd.losses.feature.FCFDLoss`.
        **options: ``num_classes``, ``ea``, ``ce_weight``, ``kd_weight``, ``warmup_epochs``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        loss: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teacher, **options)
        self.distill = build_loss("fcfd", student=student, teacher=teacher, **(loss or {}))
        self.weighting = self.weighted(PerItemValues()) if self.ea.enabled else None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.distill.set_epoch(epoch)

    def compute(self, batch):
        x, y = batch
        res = self.distill(x, y, weighting=self.weighting)
        s, t = res.student_logits, res.teacher_logits
        self.check_classes(s, "student")
        self.check_classes(t, "teacher")
        if self.weighting is not None:
            st = self.weighting.last_stats
            self._note(s, t, st.per_item, st.weights, st.student_entropy, st.teacher_entropy)
        else:
            self._note(s, t, res.per_item, torch.ones_like(res.per_item, dtype=torch.float32))
        ce = F.cross_entropy(s, y)
        terms = {f"fcfd_{k}": v for k, v in res.terms.items()}
        return {"logits": s, "ce": ce, "kd": res.loss, **terms, "loss": self.total(ce, res.loss)}
