"""Every method's objective against its terms written out, with EA on and off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eakd import EntropyAdaptive, build_loss
from eakd.core import EASettings
from eakd.models import build_model
from eakd.objectives import (
    CTKDObjective,
    LogitObjective,
    build_objective,
    list_methods,
)
from reference import formulas as ref

METHODS = ["vanilla", "kd", "dkd", "ttm", "wttm", "ctkd", "mld", "reviewkd", "fcfd"]


class Linear(nn.Module):
    def __init__(self, d=8, c=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(d, c)

    def forward(self, x):
        return self.fc(x), {"pooled_feat": x}


class Method:
    """The fields of an engine's method section."""

    def __init__(self, name, ce_weight=0.3, kd_weight=0.7, warmup_epochs=4, loss=None, **kw):
        self.name, self.ce_weight, self.kd_weight = name, ce_weight, kd_weight
        self.warmup_epochs, self.loss = warmup_epochs, dict(loss or {})
        self.mld_official = kw.get("mld_official", True)


def _ea(on: bool) -> EASettings:
    return EASettings(enabled=on)


def close(value, reference):
    """A float32 result against a float64 reference."""
    torch.testing.assert_close(value, reference.to(value.dtype))


def _w(s, t, on):
    return ref.ea_weight(s, t, 3.0) if on else torch.ones(s.shape[0], dtype=torch.float64)


@pytest.fixture(scope="module")
def cnns():
    torch.manual_seed(1)
    student = build_model("resnet8", num_classes=10)
    torch.manual_seed(2)
    teacher = build_model("resnet14", num_classes=10)
    teacher.eval()
    return student, teacher


def test_list_methods_is_the_registry():
    assert list_methods() == METHODS  # the tables' order: CE, logit methods, then the rest
    with pytest.raises(ValueError, match=r"unknown method 'kdd' \(did you mean 'kd'\?\)"):
        build_objective(Method("kdd"), Linear(), Linear(), num_classes=5)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_builds_and_gives_a_finite_loss(name, cnns):
    student, teacher = cnns
    ea = _ea(name != "vanilla")
    obj = build_objective(Method(name), student, teacher, num_classes=10, ea=ea)
    obj.set_epoch(2)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = obj((x, torch.randn_like(x), y) if name == "mld" else (x, y))
    assert torch.isfinite(out["loss"]) and out["logits"].shape == (4, 10)
    assert (obj.distill is None) == (name == "vanilla")
    expected_terms = {"vanilla": 0, "mld": 3}.get(name, 1)
    assert len(obj.terms) == expected_terms
    for st in obj.terms:
        w = ref.ea_weight(st.student_logits, st.teacher_logits, 3.0)
        torch.testing.assert_close(st.weights, w.float())


@pytest.mark.parametrize("ea", [False, True])
def test_logit_objective(ea):
    loss = build_loss("dkd", beta=8.0)
    obj = LogitObjective(
        Linear(seed=1), Linear(seed=2), loss, num_classes=5, ea=_ea(ea), warmup_epochs=4
    )
    obj.set_epoch(2)
    assert isinstance(obj.distill, EntropyAdaptive) == ea and obj.loss is loss
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    out = obj((x, y))
    s, t = obj.student(x)[0], obj.teacher(x)[0].detach()
    kd = (ref.dkd(s, t, y, beta=8.0) * _w(s, t, ea)).mean()
    close(out["kd"], kd)
    expected = F.cross_entropy(s, y).double() + 0.5 * kd  # warm-up 2/4, weights 1
    close(out["loss"], expected)


@pytest.mark.parametrize("ea", [False, True])
def test_ctkd_objective(ea):
    method = Method("ctkd", loss={"curriculum_epochs": 10})
    obj = build_objective(method, Linear(seed=1), Linear(seed=2), num_classes=5, ea=_ea(ea))
    assert isinstance(obj, CTKDObjective)
    obj.set_epoch(5)
    assert obj.loss.lambda_ == pytest.approx(-0.5)
    x, y = torch.randn(6, 8), torch.randint(0, 5, (6,))
    out = obj((x, y))
    s, t = obj.student(x)[0], obj.teacher(x)[0].detach()
    tau = float(obj.loss.temperature().detach())
    kd = (ref.kd(s, t, tau) * _w(s, t, ea)).mean()
    close(out["kd"], kd)
    ce = F.cross_entropy(s, y).double()
    close(out["loss"], 0.3 * ce + 0.7 * 1.0 * kd)
    theta = obj.loss.temperature_module.theta
    assert [p is theta for p in obj.trainable_parameters()] == [True]
    out["loss"].backward()
    assert theta.grad is not None and theta.grad != 0
    key = "loss.temperature_module.theta" if ea else "temperature_module.theta"
    assert list(obj.distill.state_dict()) == [key]  # what existing checkpoints hold
    with pytest.raises(TypeError, match="needs a CTKDLoss"):
        CTKDObjective(Linear(), Linear(), build_loss("kd"), num_classes=5)


@pytest.mark.parametrize("ea", [False, True])
def test_reviewkd_objective(ea, cnns):
    student, teacher = cnns
    method = Method("reviewkd", kd_weight=5.0, warmup_epochs=20)
    obj = build_objective(method, student, teacher, num_classes=10, ea=_ea(ea))
    obj.set_epoch(10)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = obj((x, y))
    zs, fs = student(x)
    with torch.no_grad():
        zt, ft = teacher(x)
    review = obj.distill.loss if ea else obj.distill
    per = review(fs, ft, reduction="none").double()
    kd = (per * _w(zs, zt, ea)).mean()
    close(out["kd"], kd)
    ce = F.cross_entropy(zs, y).double()
    close(out["loss"], 0.3 * ce + 5.0 * 0.5 * kd)
    assert {id(p) for p in obj.trainable_parameters()} == {id(p) for p in review.parameters()}


@pytest.mark.parametrize("ea", [False, True])
def test_fcfd_objective(ea, cnns):
    student, teacher = cnns
    loss = {"warmup_epochs": 4, "ea_targets": ["kd", "mix_kd", "l2"]}
    method = Method("fcfd", kd_weight=1.0, warmup_epochs=0, loss=loss)
    obj = build_objective(method, student, teacher, num_classes=10, ea=_ea(ea))
    obj.set_epoch(2)
    assert obj.distill.warmup_factor() == 0.5  # FCFD's own L2 warm-up follows the epoch
    assert (obj.weighting is not None) == ea
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = obj((x, y))
    plain = obj.distill(x, y, paths=obj.distill.last_paths, reduction="none")
    w = _w(plain.student_logits, plain.teacher_logits, ea)
    kd = (plain.loss.double() * w).mean()
    close(out["kd"], kd)
    ce = F.cross_entropy(plain.student_logits, y).double()
    close(out["loss"], 0.3 * ce + kd)
    assert {"fcfd_kd", "fcfd_mix_kd", "fcfd_l2"} <= set(out)
    (st,) = obj.terms
    torch.testing.assert_close(st.per_item, plain.loss.detach())
