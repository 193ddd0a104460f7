"""Values and gradients of every loss and of the EntropyAdaptive wrapper against
tests/reference/formulas.py (the entropy and weights: tests/core/test_core_reference.py)."""

from __future__ import annotations

import pytest
import torch

import eakd
from eakd import EntropyAdaptive, build_loss, functional
from eakd.losses.logit import _fused
from reference import checks
from reference import formulas as ref

SHAPES, TEMPS = checks.SHAPES, checks.TEMPS
_pair, _check = checks.pair, checks.check


KD_PATHS = {
    "small": {"small": True},
    "rows": {"small": False},
    "blocks": {"small": False, "block_elems": 200},
}


@pytest.fixture(params=list(KD_PATHS))
def kd_path(request):
    """Keyword arguments of ``kd_rows`` for every implementation: the small-input path, the
    row kernel in one block, and the row kernel over several blocks (uneven last block)."""
    return KD_PATHS[request.param]


@pytest.fixture(params=[{}, {"block_elems": 200}], ids=["one block", "blocks"])
def dkd_path(request):
    """DKD in one block of rows, and over several (uneven last block)."""
    return request.param


#: Shapes that take each KD implementation through the public API: small, rows, two blocks.
NATURAL_KD_SHAPES = [(40, 10), (400, 100), (1400, 100)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", TEMPS)
def test_kd(shape, t, kd_path):
    s, z, _ = _pair(shape)
    _check(functional.kd_loss(s, z, temperature=t, reduction="none"), ref.kd(s, z, t), s)
    c = shape[-1]
    per, _, _ = _fused.kd_rows(s.reshape(-1, c), z.reshape(-1, c), t, **kd_path)
    _check(per.view(shape[:-1]), ref.kd(s, z, t), s)


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("t_prime", [2.0, 3.0, 4.0])
def test_fused_kd_entropies(t, t_prime, kd_path):
    """KD's fused pass returns the same entropies as the reference (T' equal to T or not)."""
    s, z, _ = _pair((37, 19))
    per, hs, ht = _fused.kd_rows(s, z, t, t_prime, **kd_path)
    torch.testing.assert_close(hs.double(), ref.entropy(s, t_prime).detach(), atol=2e-5, rtol=0)
    torch.testing.assert_close(ht.double(), ref.entropy(z, t_prime).detach(), atol=2e-5, rtol=0)
    _check(per, ref.kd(s, z, t), s)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 8.0), (2.0, 0.5)])
def test_dkd(shape, t, alpha, beta, dkd_path):
    s, z, y = _pair(shape)
    ours = functional.dkd_loss(s, z, y, alpha=alpha, beta=beta, temperature=t, reduction="none")
    c = shape[-1]
    reference = ref.dkd(s.reshape(-1, c), z.reshape(-1, c), y.reshape(-1), alpha, beta, t)
    _check(ours, reference.view(shape[:-1]), s)
    s2, z2, y2 = s.reshape(-1, c), z.reshape(-1, c), y.reshape(-1)
    per, _, _ = _fused.dkd_rows(s2, z2, y2, t, alpha, beta, **dkd_path)
    _check(per.view(shape[:-1]), ref.dkd(s2, z2, y2, alpha, beta, t).view(shape[:-1]), s)


def test_dkd_fused_entropies(dkd_path):
    s, z, y = _pair((33, 17))
    per, hs, ht = _fused.dkd_rows(s, z, y, 4.0, 1.0, 8.0, 3.0, **dkd_path)
    torch.testing.assert_close(hs.double(), ref.entropy(s, 3.0).detach(), atol=2e-5, rtol=0)
    torch.testing.assert_close(ht.double(), ref.entropy(z, 3.0).detach(), atol=2e-5, rtol=0)
    _check(per, ref.dkd(s, z, y, 1.0, 8.0, 4.0), s)


@pytest.mark.parametrize("base", ["kd", "dkd"])
def test_ctkd_value_and_temperature_gradient(base):
    s, z, y = _pair((9, 13))
    loss = build_loss("ctkd", base=base)
    loss.set_epoch(5)
    tau = loss.temperature().detach().double().requires_grad_(True)

    def reference():
        return ref.kd(s, z, tau) if base == "kd" else ref.dkd(s, z, y, 1.0, 2.0, tau)

    _check(loss(s, z, y, reduction="none"), reference(), s)
    # theta gets the reversed, lambda-scaled gradient of d loss / d tau * d tau / d theta
    theta = loss.temperature_module.theta
    (g_theta,) = torch.autograd.grad(loss(s, z, y), theta)
    (g_tau,) = torch.autograd.grad(reference().mean(), tau)
    sig = torch.sigmoid(theta.detach().double())
    expected = g_tau * 20.0 * sig * (1 - sig) * loss.lambda_
    torch.testing.assert_close(g_theta.double(), expected, atol=1e-5, rtol=1e-4)


def test_ctkd_cosine_schedule():
    lam = [eakd.losses.cosine_lambda(e) for e in (1, 5, 10, 20)]
    assert lam[0] == pytest.approx(-0.0245, abs=1e-3)
    assert lam[1] == pytest.approx(-0.5)
    assert lam[2] == pytest.approx(-1.0) and lam[3] == pytest.approx(-1.0)
    assert eakd.losses.GlobalTemperature()(0.0).item() == pytest.approx(
        1 + 20 / (1 + 2.7182818**-1)
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_mld_instance(shape):
    s, z, _ = _pair(shape)
    _check(functional.mld_loss(s, z, reduction="none"), ref.mld_instance(s, z), s)


@pytest.mark.parametrize("mode", ["official", "per_sample"])
def test_mld_instance_masks(mode):
    s, z, _ = _pair((16, 10))
    m, _k = ref.mld_masks(z)
    factor = m.mean() if mode == "official" else m
    ours = functional.mld_loss(s, z, confidence_mask=mode, reduction="none")
    _check(ours, ref.mld_instance(s, z) * factor, s)
    assert m.sum() == 8  # the median splits a batch of distinct values in half


@pytest.mark.parametrize("level", ["class", "batch"])
@pytest.mark.parametrize("mode", [None, "official", "per_sample"])
def test_mld_consistency_terms(level, mode):
    s, z, _ = _pair((12, 9))
    fn = functional.mld_class_loss if level == "class" else functional.mld_batch_loss
    m, k = ref.mld_masks(z)
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    total = 0.0
    for t in temps:
        ps, pt = ref.softmax(s, t), ref.softmax(z, t)
        if level == "class":
            diff, rows, norm = (pt.T @ pt - ps.T @ ps) ** 2, k, 9
        else:
            diff, rows, norm = (pt @ pt.T - ps @ ps.T) ** 2, m, 12
        if mode == "per_sample":
            diff = diff * rows.unsqueeze(1)
        term = diff.sum() / norm
        total = total + (term * rows.mean() if mode == "official" else term)
    ours = fn(s, z, confidence_mask=mode)
    torch.testing.assert_close(ours.double(), total, atol=1e-6, rtol=1e-4)
    (g1,) = torch.autograd.grad(ours, s)
    (g2,) = torch.autograd.grad(total, s)
    torch.testing.assert_close(g1.double(), g2.double(), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0])
def test_ttm(weighted, gamma):
    s, z, _ = _pair((11, 23), scale=2.0)
    fn = functional.wttm_loss if weighted else functional.ttm_loss
    _check(fn(s, z, gamma=gamma, reduction="none"), ref.ttm(s, z, gamma, weighted), s)


@pytest.mark.parametrize("name", ["kd", "dkd", "mld", "ttm"])
def test_standardize_option(name):
    """standardize=True equals the loss on z-scored logits (logit standardisation, CVPR 2024)."""
    s, z, y = _pair((10, 12))
    with_ls = build_loss(name, standardize=True)(s, z, y, reduction="none")
    zs, zt = ref.standardize(s).float(), ref.standardize(z).float()
    plain = build_loss(name)(zs, zt, y, reduction="none")
    torch.testing.assert_close(with_ls, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", NATURAL_KD_SHAPES)
@pytest.mark.parametrize("t_prime", [2.0, 3.0])
@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_entropy_adaptive_fast_path_matches_formula(name, t_prime, shape):
    """The fused EA path: mean_n w_n * l_n with w from the reference formula, values + grads,
    at sizes that take every KD implementation."""
    s, z, y = _pair(shape)
    ea = EntropyAdaptive(build_loss(name), temperature=t_prime)
    per = ref.kd(s, z, 4.0) if name == "kd" else ref.dkd(s, z, y, 1.0, 8.0, 4.0)
    expected = (per * ref.ea_weight(s, z, t_prime).detach()).mean()
    _check(ea(s, z, y), expected, s)


def test_entropy_adaptive_standardized_weights():
    s, z, y = _pair((20, 10))
    ea = EntropyAdaptive(build_loss("dkd", standardize=True), weight_logits="standardized")
    w = ref.ea_weight(ref.standardize(s), ref.standardize(z), 3.0)
    per = ref.dkd(ref.standardize(s).float(), ref.standardize(z).float(), y, 1.0, 8.0, 4.0)
    torch.testing.assert_close(
        ea(s, z, y).double(), (per * w).mean().detach(), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("kind", sorted(k for k in eakd.WEIGHT_KINDS if k != "none"))
@pytest.mark.parametrize(
    ("t", "t_prime", "h_ub", "reduction", "num_items"),
    [
        (4.0, 3.0, None, "mean", None),
        (4.0, 4.0, None, "sum", None),
        (2.0, 3.0, 100.0, "mean", 17),
        (1.0, 2.0, None, "mean", 0.5),
    ],
)
def test_small_kd_path_with_options(kind, t, t_prime, h_ub, reduction, num_items):
    """Small float32 EA-KD with every weight kind, reduction and denominator: value, gradient
    and ``last_stats`` against the formulas."""
    s, z, _ = _pair((23, 11))
    ea = EntropyAdaptive(
        build_loss("kd", temperature=t), temperature=t_prime, kind=kind, max_entropy=h_ub
    )
    out = ea(s, z, reduction=reduction, num_items=num_items)
    w = ref.ea_weight(s, z, t_prime, h_ub, kind).detach()
    total = (ref.kd(s, z, t) * w).sum()
    if reduction == "sum":
        denom = 1.0
    else:  # mean: over num_items when given (used as given, as in reduce), else the 23 rows
        denom = 23.0 if num_items is None else float(num_items)
    _check(out, total / denom, s)
    stats = ea.last_stats
    torch.testing.assert_close(stats.weights.double(), w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        stats.per_item.double(), ref.kd(s, z, t).detach(), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        stats.teacher_entropy.double(), ref.entropy(z, t_prime).detach(), atol=2e-5, rtol=0
    )
    assert stats.mask is None and not stats.weights.requires_grad


@pytest.mark.parametrize("shape", NATURAL_KD_SHAPES)
def test_backward_twice_and_equivalent_calls(shape):
    s, z, _ = _pair(shape)
    n = shape[0]
    ea = EntropyAdaptive(build_loss("kd"))
    out = ea(s, z)
    (g1,) = torch.autograd.grad(out, s, retain_graph=True)
    (g2,) = torch.autograd.grad(out, s)
    torch.testing.assert_close(g1, g2)  # a saved gradient is not consumed in place
    w = ea.last_stats.weights
    # equivalent ways of asking for the same mean give the same value
    for call in [
        {"mask": torch.ones(n, dtype=torch.bool)},
        {"num_items": torch.tensor(n)},
    ]:
        torch.testing.assert_close(ea(s, z, **call), out)
    torch.testing.assert_close(ea(s, z, reduction="none").mean(), out)
    normalized = EntropyAdaptive(build_loss("kd"), normalize=True)(s, z)
    torch.testing.assert_close(normalized, out / w.mean())
    double = EntropyAdaptive(build_loss("kd"))(s.double(), z.double())
    torch.testing.assert_close(double.float(), out)


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_fused_paths_refuse_double_backward(name):
    """The closed-form gradients of the row kernels are constants of the forward: a
    second-order gradient through them would be silently wrong, so it raises instead."""
    s, z, y = _pair((400, 100))
    loss = EntropyAdaptive(build_loss(name))(s, z, y)
    # the upstream gradient depends on s, so the first-order gradient has a graph
    (g,) = torch.autograd.grad(loss * s.sum(), s, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.square().sum().backward()
