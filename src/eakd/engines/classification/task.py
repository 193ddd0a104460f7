"""The classification task: the objective of every method, with and without EA.

``task(batch) -> {"loss", "logits", named terms}``. The teacher is frozen and kept in eval mode;
modules the optimiser must see (CTKD's temperature, ReviewKD's ABF, FCFD's bridges) come from
:meth:`trainable_parameters`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...adaptive import EntropyAdaptive
from ...core.entropy import entropy
from ...losses.feature import FCFDLoss
from ...losses.registry import build_loss
from .config import EAConfig, MethodConfig

__all__ = ["FEATURE_METHODS", "ClassificationTask", "ea_settings", "logits_of"]

#: Methods whose loss is built from the two models (features, stages) rather than logits.
FEATURE_METHODS = ("reviewkd", "fcfd")


def logits_of(output: Any) -> torch.Tensor:
    """Models return ``logits`` or ``(logits, feats)``."""
    return output[0] if isinstance(output, (tuple, list)) else output


def ea_settings(method: MethodConfig, ea: EAConfig, num_classes: int) -> dict[str, Any]:
    """EntropyAdaptive keyword arguments, with the released code's deviations under
    ``preset: official`` (METHODS.md 1.3, items 1-5)."""
    kw: dict[str, Any] = {
        "temperature": ea.temperature,
        "max_entropy": ea.max_entropy,
        "kind": ea.kind,
        "weight_logits": ea.weight_logits,
        "normalize": ea.normalize,
    }
    if ea.preset == "official":
        if method.name in ("kd", "dkd"):
            kw["max_entropy"] = math.log(1000.0) if num_classes >= 1000 else 100.0
        if method.name in ("mld", "reviewkd"):
            kw["max_entropy"] = math.log(100.0)
        if method.name in ("dkd", "mld"):
            kw["temperature"] = 3.0
        standardized = bool(method.loss.get("standardize", False))
        kw["weight_logits"] = "standardized" if method.name == "dkd" and standardized else "raw"
    return kw


class ClassificationTask(nn.Module):
    """Student + frozen teacher + objective.

    Args:
        student, teacher: models returning ``logits`` or ``(logits, feats)``.
        method: the objective (``MethodConfig``).
        ea: EA settings (``EAConfig``).
        num_classes: class count (checked against both models' outputs on the first batch).
        entropy_bins: bins of the per-epoch loss-by-teacher-entropy histogram (0: off).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        method: MethodConfig,
        ea: EAConfig,
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
        self.method = method
        self.num_classes = num_classes
        self.epoch = 1
        self.distill: nn.Module | None = None
        self.weighting: nn.Module | None = None  # FCFD: EA over its ea_targets terms
        self.class_term = self.batch_term = None
        self.ea_enabled = ea.enabled
        self.ea_temperature = ea_settings(method, ea, num_classes)["temperature"]
        if method.name == "vanilla":
            return
        loss_kw = dict(method.loss)
        if method.name == "mld":
            loss_kw.setdefault("temperatures", _mld_temperatures(loss_kw.pop("temperature", 4.0)))
            mode = "official" if method.mld_official else "per_sample"
            self.distill = build_loss("mld", confidence_mask=mode, **loss_kw)
            self.distill_strong = build_loss("mld", **loss_kw)
            self.distill_strong_extra = None
            if method.mld_official:  # the released code takes T = 2, 6 of the strong term weak
                temps = self.distill.temperatures
                same = {k: v for k, v in loss_kw.items() if k != "temperatures"}  # e.g. LS
                self.distill_strong = build_loss("mld", temperatures=temps[:3], **same)
                self.distill_strong_extra = build_loss("mld", temperatures=temps[3:], **same)
            batch_kw = {"temperatures": loss_kw["temperatures"], "confidence_mask": mode}
            self.class_term = build_loss("mld_class", **batch_kw)
            self.batch_term = build_loss("mld_batch", **batch_kw)
        elif method.name in FEATURE_METHODS:
            self.distill = build_loss(method.name, student=student, teacher=teacher, **loss_kw)
        else:
            self.distill = build_loss(method.name, **loss_kw)
        if ea.enabled:
            kw = ea_settings(method, ea, num_classes)
            if method.name == "fcfd":  # FCFD weights the terms named in its ea_targets itself
                self.weighting = FCFDLoss.entropy_adaptive(**kw)
            else:
                self.distill = EntropyAdaptive(self.distill, **kw)
            if method.name == "mld":
                self.distill_strong = EntropyAdaptive(self.distill_strong, **kw)
                if self.distill_strong_extra is not None:
                    self.distill_strong_extra = EntropyAdaptive(self.distill_strong_extra, **kw)
        self.entropy_bins = entropy_bins
        self.reset_diagnostics()

    # -- state -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ClassificationTask:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BN statistics of the teacher are never updated
        return self

    def set_epoch(self, epoch: int) -> None:
        """Epochs count from 1 (warm-up factors and CTKD's curriculum depend on them)."""
        self.epoch = epoch
        base = self.distill.loss if isinstance(self.distill, EntropyAdaptive) else self.distill
        if hasattr(base, "set_epoch"):
            base.set_epoch(epoch)

    def warmup_factor(self) -> float:
        w = self.method.warmup_epochs
        return 1.0 if w <= 0 else min(self.epoch / w, 1.0)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters plus the objective's own (CTKD's temperature)."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        if self.distill is not None:
            params += [p for p in self.distill.parameters() if p.requires_grad]
        return params

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
        if self.entropy_bins <= 0 or self.distill is None:
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
    def _distill(self, loss, s, t, y, logits=None):
        """One (possibly EA-weighted) distillation term; records its per-item statistics.
        ``logits``: the (student, teacher) logits when ``s``, ``t`` are features."""
        zs, zt = logits if logits is not None else (s, t)
        if isinstance(loss, EntropyAdaptive):
            value = loss(s, t, y) if logits is None else loss(s, t, y, logits=logits)
            st = loss.last_stats
            # the histogram bins by raw-logit H_T, so EA and non-EA runs bin alike even when
            # the weights come from standardised logits
            raw = loss.weight_logits == "raw"
            hs, ht = (st.student_entropy, st.teacher_entropy) if raw else (None, None)
            self._record(zs, zt, st.per_item, st.weights, hs, ht)
            return value
        if loss.per_item:
            per = loss(s, t, y, reduction="none")
            self._record(zs, zt, per, torch.ones_like(per, dtype=torch.float32))
            return per.mean()
        return loss(s, t, y)

    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return logits_of(self.teacher(x)).detach()

    def _check_classes(self, logits: torch.Tensor, who: str) -> None:
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"the {who} outputs {logits.shape[-1]} classes but the dataset has "
                f"{self.num_classes}; build the {who} with num_classes={self.num_classes} "
                "(and a checkpoint trained on this dataset)"
            )

    def forward(self, batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        if self.method.name == "mld":
            return self._forward_mld(*batch)
        if self.method.name == "fcfd":
            return self._forward_fcfd(*batch)
        x, y = batch
        s_out = self.student(x)
        s = logits_of(s_out)
        self._check_classes(s, "student")
        ce = F.cross_entropy(s, y)
        out = {"logits": s, "ce": ce}
        if self.distill is None:
            out["loss"] = ce
            return out
        if self.method.name == "reviewkd":
            with torch.no_grad():
                t, t_feats = self.teacher(x)
            t = t.detach()
            self._check_classes(t, "teacher")
            kd = self._distill(self.distill, s_out[1], t_feats, y, logits=(s, t))
        else:
            t = self._teacher_logits(x)
            self._check_classes(t, "teacher")
            kd = self._distill(self.distill, s, t, y)
        scale = self.method.kd_weight * self.warmup_factor()
        out["kd"] = kd
        out["loss"] = self.method.ce_weight * ce + scale * kd
        return out

    def _forward_fcfd(self, x, y):
        """FCFD (ICLR 2023): the loss runs the student, teacher and mixed paths itself."""
        res = self.distill(x, y, weighting=self.weighting)
        s, t = res.student_logits, res.teacher_logits
        self._check_classes(s, "student")
        self._check_classes(t, "teacher")
        if self.weighting is not None:
            st = self.weighting.last_stats
            self._record(s, t, st.per_item, st.weights, st.student_entropy, st.teacher_entropy)
        else:
            self._record(s, t, res.per_item, torch.ones_like(res.per_item, dtype=torch.float32))
        ce = F.cross_entropy(s, y)
        scale = self.method.kd_weight * self.warmup_factor()
        loss = self.method.ce_weight * ce + scale * res.loss
        terms = {f"fcfd_{k}": v for k, v in res.terms.items()}
        return {"logits": s, "ce": ce, "kd": res.loss, **terms, "loss": loss}

    def _forward_mld(self, weak, strong, y):
        """MLD (CVPR 2023) over a weak and a strong view; see ``MethodConfig.mld_official``."""
        n = weak.shape[0]
        s_all = logits_of(self.student(torch.cat([weak, strong])))
        self._check_classes(s_all, "student")
        s_w, s_s = s_all[:n], s_all[n:]
        t_all = self._teacher_logits(torch.cat([weak, strong]))
        self._check_classes(t_all, "teacher")
        t_w, t_s = t_all[:n], t_all[n:]
        ce = F.cross_entropy(s_w, y) + F.cross_entropy(s_s, y)
        inst = self._distill(self.distill, s_w, t_w, y)
        inst = inst + self._distill(self.distill_strong, s_s, t_s, y)
        if self.distill_strong_extra is not None:
            inst = inst + self._distill(self.distill_strong_extra, s_w, t_w, y)
        consistency = self.class_term(s_w, t_w) + self.batch_term(s_w, t_w)
        if not self.method.mld_official:
            consistency = consistency + self.class_term(s_s, t_s) + self.batch_term(s_s, t_s)
        scale = self.method.kd_weight * self.warmup_factor()
        loss = self.method.ce_weight * ce + scale * (inst + consistency)
        return {"logits": s_w, "ce": ce, "kd": inst, "consistency": consistency, "loss": loss}


def _mld_temperatures(t0: float) -> tuple[float, ...]:
    """MLD's temperature set {T0, 3, 5, 2, 6} (with T0 = 2, T = 2 appears twice, as upstream)."""
    return (float(t0), 3.0, 5.0, 2.0, 6.0)
