"""Objectives of the logit methods: none (``vanilla``), any per-item logit loss (KD, DKD, TTM,
WTTM), and CTKD with its learnable temperature."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from ..losses.logit.ctkd import CTKDLoss
from ..losses.registry import build_loss
from .base import Objective, logits_of, register_objective

__all__ = ["CTKDObjective", "LogitObjective", "VanillaObjective"]


@register_objective("vanilla")
class VanillaObjective(Objective):
    """Cross-entropy only (``L = CE``; no teacher, no weights): teachers and baselines."""

    @classmethod
    def from_config(cls, method, student, teacher, *, num_classes, ea=None) -> Objective:
        return cls(student, teacher, num_classes=num_classes, ea=ea)

    def compute(self, batch):
        x, y = batch
        s = logits_of(self.student(x))
        self.check_classes(s, "student")
        ce = F.cross_entropy(s, y)
        return {"logits": s, "ce": ce, "loss": ce}


class LogitObjective(Objective):
    r"""``L = ce_weight * CE(z^s, y) + warm(e) * kd_weight * mean_n w_n l_n(z^s, z^t, y)`` for
    a per-item logit loss ``l`` (``w_n``: the EA weights, or 1).

    Args:
        student, teacher: see :class:`Objective`.
        loss: the distillation loss, e.g. ``build_loss("dkd", beta=8.0)``; it is wrapped in
            :class:`eakd.EntropyAdaptive` when ``ea.enabled``.
        **options: ``num_classes``, ``ea``, ``ce_weight``, ``kd_weight``, ``warmup_epochs``.
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, loss: nn.Module, **options: Any
    ) -> None:
        super().__init__(student, teacher, **options)
        self.distill = self.weighted(loss)

    @classmethod
    def from_config(cls, method, student, teacher, *, num_classes, ea=None) -> Objective:
        loss = build_loss(method.name, **method.loss)
        return cls(student, teacher, loss, **cls._options(method, num_classes, ea))

    @property
    def loss(self) -> nn.Module:
        """The distillation loss (inside the EA wrapper when there is one)."""
        return self.distill.loss if self.ea.enabled else self.distill

    def compute(self, batch):
        x, y = batch
        s = logits_of(self.student(x))
        self.check_classes(s, "student")
        ce = F.cross_entropy(s, y)
        t = self.teacher_logits(x)
        kd = self.term(self.distill, s, t, y)
        return {"logits": s, "ce": ce, "kd": kd, "loss": self.total(ce, kd)}


for _name in ("kd", "dkd", "ttm", "wttm"):
    register_objective(_name)(LogitObjective)


@register_objective("ctkd")
class CTKDObjective(LogitObjective):
    """CTKD (AAAI 2023): KD or DKD at a learnable global temperature whose gradient-reversal
    strength follows a cosine curriculum over epochs (:class:`eakd.losses.logit.ctkd.CTKDLoss`).
    The temperature's parameter is among :meth:`trainable_parameters`."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module, loss: CTKDLoss, **options: Any
    ) -> None:
        if not isinstance(loss, CTKDLoss):
            raise TypeError(f"CTKDObjective needs a CTKDLoss, got {type(loss).__name__}")
        super().__init__(student, teacher, loss, **options)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.loss.set_epoch(epoch)
