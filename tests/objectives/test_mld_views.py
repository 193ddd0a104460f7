"""MLD's two student forwards (weak, then strong) against a plain two-forward reference, on a
student whose BatchNorm layers are in train mode, and the batched single-forward option."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eakd.core import EASettings
from eakd.engines.classification import MethodConfig
from eakd.objectives import MLDObjective, build_objective
from reference import formulas as ref

C, B = 5, 8
TEMPS = (4.0, 3.0, 5.0, 2.0, 6.0)
CE_WEIGHT, KD_WEIGHT = 0.1, 0.9


class Net(nn.Module):
    """conv -> BatchNorm2d -> pool -> linear -> BatchNorm1d -> linear, returning
    ``(logits, feats)`` as the library's models do."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4, 6)
        self.bn1d = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, C)

    def forward(self, x):
        h = F.relu(self.bn2d(self.conv(x))).mean((2, 3))
        h = F.relu(self.bn1d(self.fc1(h)))
        return self.fc2(h), {"pooled_feat": h}


def _bns(net):
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.fixture
def teacher():
    """A teacher in eval mode whose BatchNorm running statistics are not the identity."""
    net = Net(seed=2)
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, 6, 6) * 2 + 0.5)
    return net.eval()


def _views():
    torch.manual_seed(3)
    weak = torch.randn(B, 3, 6, 6)
    strong = 1.5 * torch.randn(B, 3, 6, 6) + 0.7  # other statistics than the weak view's
    return weak, strong, torch.randint(0, C, (B,))


def _objective(student, teacher, ea, official=True, batched=None):
    """``batched=None``: the objective's default."""
    option = {} if batched is None else {"batched_views": batched}
    return MLDObjective(
        student,
        teacher,
        official=official,
        num_classes=C,
        ea=EASettings(enabled=ea),
        ce_weight=CE_WEIGHT,
        kd_weight=KD_WEIGHT,
        **option,
    )


def _gram(zs, zt, level, row_mask):
    """MLD's class/batch term with the mask applied per row (the paper's form)."""
    out = 0.0
    for t in TEMPS:
        ps, pt = ref.softmax(zs, t), ref.softmax(zt, t)
        if level == "class":
            diff, norm = (pt.T @ pt - ps.T @ ps) ** 2, zs.shape[1]
        else:
            diff, norm = (pt @ pt.T - ps @ ps.T) ** 2, zs.shape[0]
        out = out + (diff * row_mask.unsqueeze(1)).sum() / norm
    return out


def reference_step(student, teacher, weak, strong, y, ea, official):
    """The released code's step: ``student(weak)`` then ``student(strong)``, the teacher on
    each view under no-grad, the loss of the released code (``official``) or the paper's."""
    s_w = student(weak)[0]
    s_s = student(strong)[0]
    with torch.no_grad():
        t_w, t_s = teacher(weak)[0], teacher(strong)[0]
    w_w = ref.ea_weight(s_w, t_w, 3.0).detach() if ea else 1.0
    w_s = ref.ea_weight(s_s, t_s, 3.0).detach() if ea else 1.0
    m, k = ref.mld_masks(t_w)
    ce = F.cross_entropy(s_w.double(), y) + F.cross_entropy(s_s.double(), y)
    if official:
        kd = (
            m.mean() * (w_w * ref.mld_instance(s_w, t_w, TEMPS)).mean()
            + (w_s * ref.mld_instance(s_s, t_s, TEMPS[:3])).mean()
            + (w_w * ref.mld_instance(s_w, t_w, TEMPS[3:])).mean()
        )
        cons = k.mean() * ref.mld_class(s_w, t_w, TEMPS) + m.mean() * ref.mld_batch(s_w, t_w, TEMPS)
    else:
        kd = (m * w_w * ref.mld_instance(s_w, t_w, TEMPS)).mean() + (
            w_s * ref.mld_instance(s_s, t_s, TEMPS)
        ).mean()
        cons = _gram(s_w, t_w, "class", k) + _gram(s_w, t_w, "batch", m)
        m_s, k_s = ref.mld_masks(t_s)
        cons = cons + _gram(s_s, t_s, "class", k_s) + _gram(s_s, t_s, "batch", m_s)
    loss = CE_WEIGHT * ce + KD_WEIGHT * (kd + cons)
    return {"logits": s_w, "strong": s_s, "ce": ce, "kd": kd, "consistency": cons, "loss": loss}


def tight(value, expected):
    torch.testing.assert_close(value, expected.to(value.dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("official", [True, False], ids=["official", "paper"])
@pytest.mark.parametrize("ea", [False, True], ids=["mld", "ea-mld"])
def test_two_student_forwards_match_the_released_step(teacher, ea, official):
    student = Net(seed=1).train()
    twin = copy.deepcopy(student)
    weak, strong, y = _views()
    teacher_stats = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _bns(teacher)]

    out = _objective(student, teacher, ea, official)((weak, strong, y))
    expected = reference_step(twin, teacher, weak, strong, y, ea, official)

    tight(out["logits"], expected["logits"])
    for key in ("ce", "kd", "consistency", "loss"):
        tight(out[key], expected[key])
    out["loss"].backward()
    expected["loss"].backward()
    for (name, p), q in zip(student.named_parameters(), twin.parameters(), strict=True):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        tight(p.grad, q.grad)
    for bn, bn_ref in zip(_bns(student), _bns(twin), strict=True):
        assert int(bn.num_batches_tracked) == 2  # once per view
        assert int(bn_ref.num_batches_tracked) == 2
        tight(bn.running_mean, bn_ref.running_mean)
        tight(bn.running_var, bn_ref.running_var)
    for bn, (mean, var) in zip(_bns(teacher), teacher_stats, strict=True):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)


def test_running_statistics_see_weak_then_strong(teacher):
    """BatchNorm2d's running mean after the step, written out: momentum 0.1 from zeros, weak
    then strong, ``0.9 * 0.1 * mu_weak + 0.1 * mu_strong``; the variance likewise (unbiased)
    from ones."""
    student = Net(seed=1).train()
    weak, strong, y = _views()
    with torch.no_grad():
        a_w, a_s = student.conv(weak), student.conv(strong)
    _objective(student, teacher, ea=True)((weak, strong, y))
    mu_w, mu_s = a_w.mean((0, 2, 3)), a_s.mean((0, 2, 3))
    var_w, var_s = a_w.var((0, 2, 3), unbiased=True), a_s.var((0, 2, 3), unbiased=True)
    tight(student.bn2d.running_mean, 0.09 * mu_w + 0.1 * mu_s)
    tight(student.bn2d.running_var, 0.9 * (0.9 + 0.1 * var_w) + 0.1 * var_s)


@pytest.mark.parametrize("ea", [False, True], ids=["mld", "ea-mld"])
def test_batched_views_is_one_forward_over_both_views(teacher, ea):
    student = Net(seed=1).train()
    twin = copy.deepcopy(student)
    default = copy.deepcopy(student)
    weak, strong, y = _views()

    out = _objective(student, teacher, ea, batched=True)((weak, strong, y))
    s_all = twin(torch.cat([weak, strong]))[0]
    tight(out["logits"], s_all[:B])
    assert all(int(bn.num_batches_tracked) == 1 for bn in _bns(student))
    for bn, bn_ref in zip(_bns(student), _bns(twin), strict=True):
        tight(bn.running_mean, bn_ref.running_mean)
        tight(bn.running_var, bn_ref.running_var)

    # BatchNorm over 2B samples is not the released code's per-view normalisation
    two = _objective(default, teacher, ea)((weak, strong, y))
    assert (out["logits"] - two["logits"]).abs().max() > 1e-2
    assert (out["loss"] - two["loss"]).abs() > 1e-4
    assert not torch.allclose(student.bn2d.running_mean, default.bn2d.running_mean)


def test_batched_views_without_batchnorm_changes_nothing(teacher):
    """Without BatchNorm each sample's logits do not depend on the rest of the batch."""
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, C))
    weak, strong, y = _views()
    one = _objective(student, teacher, ea=True, batched=True)((weak, strong, y))
    two = _objective(student, teacher, ea=True)((weak, strong, y))
    tight(one["logits"], two["logits"])
    tight(one["loss"], two["loss"])


def test_the_option_reaches_the_objective_from_the_config(teacher):
    student = Net(seed=1)
    for batched in (False, True):
        method = MethodConfig(name="mld", mld_batched_views=batched)
        obj = build_objective(method, student, teacher, num_classes=C)
        assert isinstance(obj, MLDObjective) and obj.batched_views is batched
    # the released code's two forwards unless asked otherwise
    assert MethodConfig(name="mld").mld_batched_views is False
    section = SimpleNamespace(
        name="mld", loss={}, ce_weight=1.0, kd_weight=1.0, warmup_epochs=0, mld_official=True
    )
    assert build_objective(section, student, teacher, num_classes=C).batched_views is False
    assert _objective(student, teacher, ea=False).batched_views is False
