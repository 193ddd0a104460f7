"""The objective of one training method: student + frozen teacher + losses -> a scalar.

An :class:`Objective` owns everything a method computes from a batch (which views run, which
terms are EA-weighted, its schedule, its trainable modules); the engines call it and never look
at the method's name. The registry below holds one objective per method name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adaptive import EntropyAdaptive
from ..core.settings import EASettings
from ..registry import Registry

__all__ = [
    "OBJECTIVES",
    "Objective",
    "TermStats",
    "build_objective",
    "list_methods",
    "logits_of",
    "register_objective",
]

#: Objective classes by training-method name (``method.name`` in a classification config).
OBJECTIVES: Registry = Registry("method")
register_objective = OBJECTIVES.register


def list_methods() -> list[str]:
    """Every training method's name: the one list that configs, sweeps and the analysis use.

    In registration order, which is the order of the paper's tables and of the analysis's
    figures: CE only, the logit methods, then those with more than a loss (CTKD, MLD,
    ReviewKD, FCFD)."""
    return OBJECTIVES.names(sort=False)


def logits_of(output: Any) -> torch.Tensor:
    """Models return ``logits`` or ``(logits, feats)``."""
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass(frozen=True)
class TermStats:
    """One distillation term of the last forward, per item and detached: what the engines'
    diagnostics bin by teacher entropy. ``weights`` are the EA weights (ones without EA); the
    entropies are those of the raw logits at ``T'`` when the term computed them, else
    ``None``."""

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    per_item: torch.Tensor
    weights: torch.Tensor
    student_entropy: torch.Tensor | None = None
    teacher_entropy: torch.Tensor | None = None


class Objective(nn.Module):
    r"""``L = ce_weight * CE + warm(e) * kd_weight * L_distill`` for one method.

    ``warm(e) = min(e / warmup_epochs, 1)`` with epochs from 1 (:meth:`set_epoch`).
    ``objective(batch)`` returns ``{"loss", "logits" (the student's), "ce", "kd" (the
    distillation term), named terms}``; subclasses implement it as :meth:`compute` and put the
    module a checkpoint saves in :attr:`distill` (``None`` without distillation). After each
    call :attr:`terms` holds the per-item values of every distillation term it computed.

    The models are used, not owned: they are not submodules, so ``parameters()`` and
    ``distill.state_dict()`` hold only the objective's own modules (CTKD's temperature,
    ReviewKD's ABF, FCFD's bridges). The teacher is called without gradients; keeping it
    frozen and in eval mode is the caller's.

    Args:
        student, teacher: models returning ``logits`` or ``(logits, feats)``.
        num_classes: the class count, checked against both models' outputs.
        ea: the EA settings with the preset already resolved (:meth:`EASettings.resolve`);
            the distillation terms are EA-weighted when ``ea.enabled``.
        ce_weight, kd_weight, warmup_epochs: the weights and warm-up above.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        *,
        num_classes: int,
        ea: EASettings | None = None,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__()
        self._nets = (student, teacher)  # a tuple keeps them out of parameters()/state_dict()
        self.num_classes = int(num_classes)
        self.ea = ea if ea is not None else EASettings()
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)
        self.warmup_epochs = int(warmup_epochs)
        self.epoch = 1
        self.distill: nn.Module | None = None
        self.terms: list[TermStats] = []

    @classmethod
    def from_config(
        cls,
        method: Any,
        student: nn.Module,
        teacher: nn.Module | None,
        *,
        num_classes: int,
        ea: EASettings | None = None,
    ) -> Objective:
        """From an engine's method section (``name``, ``loss``: the loss's keywords,
        ``ce_weight``, ``kd_weight``, ``warmup_epochs``)."""
        return cls(student, teacher, loss=method.loss, **cls._options(method, num_classes, ea))

    @staticmethod
    def _options(method: Any, num_classes: int, ea: EASettings | None) -> dict[str, Any]:
        return {
            "num_classes": num_classes,
            "ea": ea,
            "ce_weight": method.ce_weight,
            "kd_weight": method.kd_weight,
            "warmup_epochs": method.warmup_epochs,
        }

    @property
    def student(self) -> nn.Module:
        return self._nets[0]

    @property
    def teacher(self) -> nn.Module | None:
        return self._nets[1]

    # -- schedule and parameters ---------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Epochs count from 1 (the warm-up and the methods' own schedules depend on them)."""
        self.epoch = epoch

    def warmup_factor(self) -> float:
        w = self.warmup_epochs
        return 1.0 if w <= 0 else min(self.epoch / w, 1.0)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The objective's own trainable parameters, for the student's optimiser."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- pieces of forward ---------------------------------------------------------------
    def weighted(self, loss: Any) -> Any:
        """``loss`` wrapped in :class:`eakd.EntropyAdaptive` when EA is enabled."""
        return EntropyAdaptive(loss, self.ea) if self.ea.enabled else loss

    def check_classes(self, logits: torch.Tensor, who: str) -> None:
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"the {who} outputs {logits.shape[-1]} classes but the dataset has "
                f"{self.num_classes}; the engines build every model with "
                f"num_classes={self.num_classes} (the dataset's), so this model does not use "
                "that argument: give its classifier that many outputs (a model of your own "
                "should take num_classes), and load a checkpoint trained on this dataset"
            )

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = logits_of(self.teacher(x)).detach()
        self.check_classes(t, "teacher")
        return t

    def term(self, loss: Any, s: Any, t: Any, y: torch.Tensor, logits=None) -> torch.Tensor:
        """One (possibly EA-weighted) distillation term, reduced to its mean; its per-item
        values are kept in :attr:`terms`. ``logits``: the (student, teacher) logits when
        ``s``, ``t`` are features."""
        zs, zt = logits if logits is not None else (s, t)
        if isinstance(loss, EntropyAdaptive):
            value = loss(s, t, y) if logits is None else loss(s, t, y, logits=logits)
            st = loss.last_stats
            # the diagnostics bin by raw-logit H_T, so EA and non-EA runs bin alike even when
            # the weights come from standardised logits
            raw = loss.weight_logits == "raw"
            hs, ht = (st.student_entropy, st.teacher_entropy) if raw else (None, None)
            self._note(zs, zt, st.per_item, st.weights, hs, ht)
            return value
        if loss.per_item:
            per = loss(s, t, y, reduction="none")
            self._note(zs, zt, per, torch.ones_like(per, dtype=torch.float32))
            return per.mean()
        return loss(s, t, y)

    def _note(self, zs, zt, per_item, weights, hs=None, ht=None) -> None:
        d = [None if v is None else v.detach() for v in (zs, zt, per_item, weights, hs, ht)]
        self.terms.append(TermStats(*d))

    def total(self, ce: torch.Tensor, kd: torch.Tensor) -> torch.Tensor:
        return self.ce_weight * ce + (self.kd_weight * self.warmup_factor()) * kd

    def forward(self, batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        self.terms = []
        return self.compute(batch)

    def compute(self, batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def build_objective(
    method: Any,
    student: nn.Module,
    teacher: nn.Module | None,
    *,
    num_classes: int,
    ea: EASettings | None = None,
) -> Objective:
    """The objective registered under ``method.name``, from an engine's method section (see
    :meth:`Objective.from_config`); an unknown name raises with the valid ones."""
    cls = OBJECTIVES.get(method.name)
    return cls.from_config(method, student, teacher, num_classes=num_classes, ea=ea)
