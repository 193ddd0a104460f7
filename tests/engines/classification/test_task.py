"""The classification objective for every method, on tiny linear models (no data needed)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import eakd
from eakd import EntropyAdaptive, build_loss
from eakd.core import EASettings
from eakd.engines.classification import (
    ClassificationTask,
    ExperimentConfig,
    MethodConfig,
    OptimConfig,
    learning_rate,
)
from eakd.losses.logit.mld import confidence_masks


class Linear(nn.Module):
    def __init__(self, d=8, c=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(d, c)
        self.bn = nn.BatchNorm1d(d)

    def forward(self, x):
        return self.fc(self.bn(x)), {"pooled_feat": x}


def _task(name, ea=False, **method_kw):
    method = MethodConfig(name=name, **method_kw)
    return ClassificationTask(Linear(seed=1), Linear(seed=2), method, EASettings(enabled=ea), 5)


def test_kd_objective_and_frozen_teacher():
    task = _task("kd", ce_weight=0.1, kd_weight=0.9, loss={"temperature": 4.0})
    task.train()
    assert not task.teacher.training and all(not p.requires_grad for p in task.teacher.parameters())
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    out = task((x, y))
    s = task.student(x)[0]
    with torch.no_grad():
        t = task.teacher(x)[0]
    expected = 0.1 * nn.functional.cross_entropy(s, y) + 0.9 * build_loss("kd")(s, t)
    torch.testing.assert_close(out["loss"], expected)
    running = task.teacher.bn.running_mean.clone()
    task((x, y))
    torch.testing.assert_close(task.teacher.bn.running_mean, running)


def test_ea_dkd_with_warmup():
    task = _task("dkd", ea=True, warmup_epochs=20, loss={"beta": 8.0})
    task.set_epoch(5)
    assert task.warmup_factor() == pytest.approx(0.25)
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    out = task((x, y))
    s = task.student(x)[0]
    t = task.teacher(x)[0].detach()
    w = eakd.ea_weights(s, t, 3.0)
    kd = (build_loss("dkd", beta=8.0)(s, t, y, reduction="none") * w).mean()
    torch.testing.assert_close(out["loss"], nn.functional.cross_entropy(s, y) + 0.25 * kd)
    diag = task.diagnostics()
    assert diag["weight_mean"] == pytest.approx(float(w.mean()), rel=1e-5)
    assert sum(diag["hist_count"]) == 6
    assert sum(diag["hist_weighted"]) == pytest.approx(
        float((build_loss("dkd", beta=8.0)(s, t, y, reduction="none") * w).sum().detach()), rel=1e-5
    )


def test_ctkd_temperature_is_trainable_and_scheduled():
    task = _task("ctkd")
    params = task.trainable_parameters()
    theta = task.distill.temperature_module.theta
    assert any(p is theta for p in params)
    task.set_epoch(5)
    assert task.distill.lambda_ == pytest.approx(-0.5)
    ea_task = _task("ctkd", ea=True)
    assert any(
        p is ea_task.distill.loss.temperature_module.theta for p in ea_task.trainable_parameters()
    )


@pytest.mark.parametrize("official", [True, False])
@pytest.mark.parametrize("ea", [False, True])
@pytest.mark.parametrize("ls", [False, True], ids=["mld", "mld+ls"])
def test_mld_objective(official, ea, ls):
    """MLD (and MLD+LS: standardised logits in every KD_T term, raw ones in the class/batch
    consistency terms) against the terms written out."""
    task = _task(
        "mld", ea=ea, ce_weight=0.1, kd_weight=0.9, mld_official=official, loss={"standardize": ls}
    )
    weak, strong = torch.randn(8, 8), torch.randn(8, 8)
    y = torch.randint(0, 5, (8,))
    out = task((weak, strong, y))
    # one student forward per view, as the released code (the student's BatchNorm is in train mode)
    s_w, s_s = task.student(weak)[0], task.student(strong)[0]
    t_w, t_s = task.teacher(weak)[0].detach(), task.teacher(strong)[0].detach()
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)

    def inst(s, t, ts, factor=1.0):
        kd_t = [build_loss("kd", temperature=k, standardize=ls) for k in ts]
        per = sum(loss(s, t, reduction="none") for loss in kd_t) * factor
        w = eakd.ea_weights(s, t, 3.0) if ea else torch.ones(8)
        return (per * w).mean()

    m, _ = confidence_masks(t_w)
    if official:
        kd = inst(s_w, t_w, temps, m.mean()) + inst(s_s, t_s, temps[:3]) + inst(s_w, t_w, temps[3:])
        cons = build_loss("mld_class", confidence_mask="official")(s_w, t_w) + build_loss(
            "mld_batch", confidence_mask="official"
        )(s_w, t_w)
    else:
        kd = inst(s_w, t_w, temps, m) + inst(s_s, t_s, temps)
        cons = sum(
            build_loss(n, confidence_mask="per_sample")(a, b)
            for n in ("mld_class", "mld_batch")
            for a, b in ((s_w, t_w), (s_s, t_s))
        )
    ce = nn.functional.cross_entropy(s_w, y) + nn.functional.cross_entropy(s_s, y)
    torch.testing.assert_close(out["loss"], 0.1 * ce + 0.9 * (kd + cons), rtol=1e-5, atol=1e-6)


def test_class_count_mismatch_is_reported():
    task = ClassificationTask(Linear(c=5), Linear(c=7), MethodConfig(name="kd"), EASettings(), 5)
    with pytest.raises(ValueError, match="teacher outputs 7 classes but the dataset has 5"):
        task((torch.randn(4, 8), torch.zeros(4, dtype=torch.long)))


def test_official_preset():
    official = EASettings(enabled=True, preset="official")
    kd = official.resolve("kd", 100)
    assert kd.max_entropy == 100.0
    kd_in = EASettings(preset="official", temperature=2.0).resolve("kd", 1000)
    assert kd_in.max_entropy == pytest.approx(math.log(1000)) and kd_in.temperature == 2.0
    dkd = EASettings(preset="official", temperature=2.0).resolve("dkd", 1000, standardized=True)
    assert dkd.temperature == 3.0 and dkd.weight_logits == "standardized"
    mld = EASettings(preset="official").resolve("mld", 200)
    assert mld.max_entropy == pytest.approx(math.log(100))
    paper = EASettings().resolve("kd", 100)
    assert paper.max_entropy == pytest.approx(math.log(100))  # log C, written out


def test_learning_rate_schedules():
    step = OptimConfig(lr=0.05, milestones=[150, 180, 210])
    assert learning_rate(step, 150, 240) == pytest.approx(0.05)
    assert learning_rate(step, 151, 240) == pytest.approx(0.005)
    assert learning_rate(step, 240, 240) == pytest.approx(0.05e-3)
    cos = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=2)
    assert learning_rate(cos, 1, 10) == pytest.approx(0.5)
    assert learning_rate(cos, 6, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_experiment_config_checks():
    with pytest.raises(ValueError, match="distils from a teacher"):
        ExperimentConfig(method=MethodConfig(name="kd"))
    with pytest.raises(ValueError, match="data.augment=mld"):
        eakd.config.from_dict(
            ExperimentConfig, {"teacher": {"name": "x"}, "method": {"name": "mld"}}
        )
    with pytest.raises(
        ValueError, match=r"unknown key 'lrr' in config.optim \(did you mean 'lr'\?\)"
    ):
        eakd.config.from_dict(
            ExperimentConfig, {"optim": {"lrr": 0.1}, "method": {"name": "vanilla"}}
        )
    with pytest.raises(ValueError, match="config.train.epochs must be an integer"):
        eakd.config.from_dict(
            ExperimentConfig, {"train": {"epochs": "many"}, "method": {"name": "vanilla"}}
        )


def test_entropy_adaptive_is_used_when_enabled():
    assert isinstance(_task("kd", ea=True).distill, EntropyAdaptive)
    assert not isinstance(_task("kd").distill, EntropyAdaptive)


def test_diagnostics_bin_by_raw_teacher_entropy_even_with_standardized_weights():
    """EA and non-EA runs must bin alike for the loss-share figure: by H_T of the raw logits
    at T', whatever logits the EA weights are computed from."""
    method = MethodConfig(name="dkd", loss={"standardize": True})
    ea = EASettings(enabled=True, weight_logits="standardized")
    task = ClassificationTask(Linear(seed=1), Linear(seed=2), method, ea, 5, entropy_bins=16)
    task.train()
    x, y = torch.randn(12, 8), torch.randint(0, 5, (12,))
    task((x, y))
    with torch.no_grad():
        ht = eakd.entropy(task.teacher(x)[0], task.ea_temperature)
    idx = (ht / math.log(5) * 16).long().clamp(0, 15)
    expected = torch.bincount(idx, minlength=16).double()
    torch.testing.assert_close(task.diag["hist_count"], expected)
    assert task.diag["ht_sum"] == pytest.approx(float(ht.sum()), rel=1e-5)
