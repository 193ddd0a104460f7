"""The classification task: a method's objective, the frozen teacher and the diagnostics.

``task(batch) -> {"loss", "logits", named terms}``. What each method computes lives in its
objective (:mod:`eakd.objectives`); modules the optimiser must see (CTKD's temperature,
ReviewKD's ABF, FCFD's bridges) come from :meth:`trainable_parameters`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...core.entropy import entropy
from ...core.settings import EASettings
from ...objectives import build_objective
from .config import MethodConfig

__all__ = ["ClassificationTask"]


class ClassificationTask(nn.Module):
    """Student + frozen teacher + the method's objective, with per-epoch EA diagnostics.

    Args:
        student, teacher: models returning ``logits`` or ``(logits, feats)``.
        method: the method section (``MethodConfig``): its name picks the objective.
        ea: the EA settings, with the preset already resolved for this method and class count.
        num_classes: class count (checked against both models' outputs).
        entropy_bins: bins of the per-epoch loss-by-teacher-entropy histogram (0: off).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        method: MethodConfig,
        ea: EASettings,
        num_classes: int,
        entropy_bins: int = 64,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.num_classes = num_classes
        self.ea_temperature = ea.temperature
        self.objective = build_objective(method, student, teacher, num_classes=num_classes, ea=ea)
        self.entropy_bins = entropy_bins
        self.reset_diagnostics()

    @property
    def distill(self) -> nn.Module | None:
        """The objective's distillation module (``None`` for ``vanilla``): what a checkpoint's
        ``"objective"`` entry holds."""
        return self.objective.distill

    @property
    def epoch(self) -> int:
        return self.objective.epoch

    # -- state -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ClassificationTask:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BN statistics of the teacher are never updated
        return self

    def set_epoch(self, epoch: int) -> None:
        """Epochs count from 1 (warm-up factors and CTKD's curriculum depend on them)."""
        self.objective.set_epoch(epoch)

    def warmup_factor(self) -> float:
        return self.objective.warmup_factor()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters plus the objective's own (CTKD's temperature, ABF, bridges)."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        return params + self.objective.trainable_parameters()

    # -- diagnostics -------------------------------------------------------------------
    def reset_diagnostics(self) -> None:
        bins = max(self.entropy_bins, 1)
        self.diag = {
            "count": 0,
            "w_sum": 0.0,
            "w_min": math.inf,
            "w_max": -math.inf,
            "ht_sum": 0.0,
            "hs_sum": 0.0,
            "hist_count": torch.zeros(bins, dtype=torch.float64),
            "hist_loss": torch.zeros(bins, dtype=torch.float64),
            "hist_weighted": torch.zeros(bins, dtype=torch.float64),
        }

    @torch.no_grad()
    def _record(self, s_logits, t_logits, per_item, weights, hs=None, ht=None) -> None:
        if self.entropy_bins <= 0:
            return
        if ht is None:
            ht = entropy(t_logits, self.ea_temperature)
            hs = entropy(s_logits, self.ea_temperature)
        d = self.diag
        w = weights.float()
        d["count"] += w.numel()
        d["w_sum"] += float(w.sum())
        d["w_min"] = min(d["w_min"], float(w.min()))
        d["w_max"] = max(d["w_max"], float(w.max()))
        d["ht_sum"] += float(ht.sum())
        d["hs_sum"] += float(hs.sum())
        bins = self.entropy_bins
        idx = (ht.float() / math.log(self.num_classes) * bins).long().clamp_(0, bins - 1).cpu()
        per = per_item.detach().float().cpu().double()
        d["hist_count"].index_add_(0, idx, torch.ones_like(per))
        d["hist_loss"].index_add_(0, idx, per)
        d["hist_weighted"].index_add_(0, idx, per * w.cpu().double())

    def reduce_diagnostics(self, device: torch.device) -> None:
        """Combine the epoch's statistics over the DDP ranks (a collective: every rank calls
        it), so the log describes the whole training set, not rank 0's shard."""
        import torch.distributed as torch_dist

        d = self.diag
        keys = ("count", "w_sum", "ht_sum", "hs_sum")
        sums = torch.tensor([float(d[k]) for k in keys], dtype=torch.float64, device=device)
        hists = torch.stack([d["hist_count"], d["hist_loss"], d["hist_weighted"]]).to(device)
        ends = torch.tensor([-d["w_min"], d["w_max"]], dtype=torch.float64, device=device)
        torch_dist.all_reduce(sums)
        torch_dist.all_reduce(hists)
        torch_dist.all_reduce(ends, op=torch_dist.ReduceOp.MAX)
        for k, v in zip(keys, sums.tolist(), strict=True):
            d[k] = int(v) if k == "count" else v
        d["hist_count"], d["hist_loss"], d["hist_weighted"] = hists.cpu().unbind(0)
        d["w_min"], d["w_max"] = -ends[0].item(), ends[1].item()

    def diagnostics(self) -> dict[str, Any]:
        """Per-epoch EA statistics (weights are 1 without EA) and the entropy histogram."""
        d = self.diag
        n = max(d["count"], 1)
        return {
            "weight_mean": d["w_sum"] / n,
            "weight_min": d["w_min"] if d["count"] else float("nan"),
            "weight_max": d["w_max"] if d["count"] else float("nan"),
            "teacher_entropy_mean": d["ht_sum"] / n,
            "student_entropy_mean": d["hs_sum"] / n,
            "hist_count": d["hist_count"].tolist(),
            "hist_loss": d["hist_loss"].tolist(),
            "hist_weighted": d["hist_weighted"].tolist(),
        }

    # -- the objective -------------------------------------------------------------------
    def forward(self, batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        out = self.objective(batch)
        for st in self.objective.terms:
            self._record(
                st.student_logits,
                st.teacher_logits,
                st.per_item,
                st.weights,
                st.student_entropy,
                st.teacher_entropy,
            )
        return out
