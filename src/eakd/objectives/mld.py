"""MLD's objective (Jin, Wang & Lin, CVPR 2023): a weak and a strong view of each image, the
instance term at several temperatures (EA-weighted when EA is on) and the class/batch
consistency terms (batch-level, never weighted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.registry import build_loss
from .base import Objective, logits_of, register_objective

__all__ = ["MLDObjective", "mld_temperatures"]


def mld_temperatures(t0: float) -> tuple[float, ...]:
    """MLD's temperature set {T0, 3, 5, 2, 6} (with T0 = 2, T = 2 appears twice, as upstream)."""
    return (float(t0), 3.0, 5.0, 2.0, 6.0)


@register_objective("mld")
class MLDObjective(Objective):
    r"""MLD over a batch ``(weak, strong, y)`` of two views of the same images:

    .. math::
        L = ce\_weight\,(CE(z^s_w, y) + CE(z^s_s, y))
            + warm(e)\,kd\_weight\,(L_{inst} + L_{class} + L_{batch})

    with ``L_inst = sum_T T^2 KL_T`` per view (mean over samples of ``w_n`` times the per-sample
    value; ``w_n`` the EA weights or 1) and the class/batch Gram terms of
    :mod:`eakd.losses.logit.mld`. ``official=True`` reproduces the released code: confidence
    masks as batch-mean factors, the strong view's ``T = 2, 6`` terms taken from the weak
    logits, consistency on the weak view only; ``official=False`` follows the paper (per-sample
    masks, every term on both views).

    The student runs two forwards, ``z^s_w = f(weak)`` then ``z^s_s = f(strong)``, as the
    released code does: in train mode its BatchNorm normalises each view over its own ``B``
    samples and updates its running statistics twice per step (weak first). ``batched_views``
    runs one forward on ``cat([weak, strong])`` (``2B`` samples) instead: faster, but BatchNorm
    then normalises over both views together and updates its running statistics once, which is
    not what the released code ran. The teacher runs one forward on ``cat([weak, strong])``
    either way: it is in eval mode (see :class:`Objective`), so BatchNorm uses its running
    statistics and each sample's logits are those of the released code's two forwards.

    Args:
        student, teacher: see :class:`Objective`.
        loss: keywords of the ``mld`` loss (``temperatures``, ``standardize``), or
            ``temperature``: ``T0`` of :func:`mld_temperatures` (default 4).
        official: see above.
        batched_views: one student forward over both views (see above); default two.
        **options: ``num_classes``, ``ea``, ``ce_weight``, ``kd_weight``, ``warmup_epochs``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        loss: Mapping[str, Any] | None = None,
        official: bool = True,
        batched_views: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(student, teacher, **options)
        self.batched_views = bool(batched_views)
        kw = dict(loss or {})
        kw.setdefault("temperatures", mld_temperatures(kw.pop("temperature", 4.0)))
        mode = "official" if official else "per_sample"
        self.official = bool(official)
        weak = build_loss("mld", confidence_mask=mode, **kw)
        self.distill = self.weighted(weak)
        self.strong_extra = None
        if official:  # the released code takes T = 2, 6 of the strong term from the weak view
            temps: Sequence[float] = weak.temperatures
            same = {k: v for k, v in kw.items() if k != "temperatures"}  # e.g. LS
            self.strong = self.weighted(build_loss("mld", temperatures=temps[:3], **same))
            self.strong_extra = self.weighted(build_loss("mld", temperatures=temps[3:], **same))
        else:
            self.strong = self.weighted(build_loss("mld", **kw))
        views = {"temperatures": kw["temperatures"], "confidence_mask": mode}
        self.class_term = build_loss("mld_class", **views)
        self.batch_term = build_loss("mld_batch", **views)

    @classmethod
    def from_config(cls, method, student, teacher, *, num_classes, ea=None) -> Objective:
        """``method.mld_official`` and ``method.mld_batched_views`` (absent: ``False``, the
        released code's two forwards) set ``official`` and ``batched_views``."""
        options = cls._options(method, num_classes, ea)
        batched = bool(getattr(method, "mld_batched_views", False))
        return cls(
            student,
            teacher,
            loss=method.loss,
            official=method.mld_official,
            batched_views=batched,
            **options,
        )

    def compute(self, batch):
        weak, strong, y = batch
        n = weak.shape[0]
        if self.batched_views:
            s_all = logits_of(self.student(torch.cat([weak, strong])))
            s_w, s_s = s_all[:n], s_all[n:]
        else:  # the order matters: BatchNorm's running statistics see weak, then strong
            s_w = logits_of(self.student(weak))
            s_s = logits_of(self.student(strong))
        self.check_classes(s_w, "student")
        t_all = self.teacher_logits(torch.cat([weak, strong]))
        t_w, t_s = t_all[:n], t_all[n:]
        ce = F.cross_entropy(s_w, y) + F.cross_entropy(s_s, y)
        inst = self.term(self.distill, s_w, t_w, y)
        inst = inst + self.term(self.strong, s_s, t_s, y)
        if self.strong_extra is not None:
            inst = inst + self.term(self.strong_extra, s_w, t_w, y)
        consistency = self.class_term(s_w, t_w) + self.batch_term(s_w, t_w)
        if not self.official:
            consistency = consistency + self.class_term(s_s, t_s) + self.batch_term(s_s, t_s)
        loss = self.total(ce, inst + consistency)
        return {"logits": s_w, "ce": ce, "kd": inst, "consistency": consistency, "loss": loss}
