"""Token divergences against float64 references written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from eakd import EntropyAdaptive, build_loss
from eakd.core import entropy, reduce
from eakd.losses.token import DIVERGENCES, forward_kl_loss, jsd_loss, token_divergence
from reference import token_formulas as ref

NAMES = sorted(DIVERGENCES)
CASES = [
    ("forward_kl", {}),
    ("forward_kl", {"form": "cross_entropy"}),
    ("reverse_kl", {}),
    ("jsd", {}),
    ("jsd", {"beta": 0.1, "weighting": "gkd"}),
    ("jsd", {"beta": 0.9}),
    ("skew_kl", {}),
    ("skew_kl", {"alpha": 0.3, "form": "cross_entropy"}),
    ("skew_reverse_kl", {"alpha": 0.2}),
    ("tvd", {}),
]


def _logits(*shape, scale=3.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


@pytest.mark.parametrize(("name", "prm"), CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_values_and_gradients_match_reference(name, prm, temperature):
    zs = _logits(2, 5, 13, seed=1).requires_grad_(True)
    zt = _logits(2, 5, 13, seed=2)
    per, _, _ = token_divergence(zs, zt, divergence=name, temperature=temperature, **prm)
    zs64 = zs.detach().double().requires_grad_(True)
    expected = ref.divergence(name, zs64, zt.double(), temperature, **prm)
    torch.testing.assert_close(per.double(), expected, rtol=1e-5, atol=1e-6)
    coef = torch.rand(2, 5, generator=torch.Generator().manual_seed(3))
    (g,) = torch.autograd.grad((per * coef).sum(), zs)
    (g64,) = torch.autograd.grad((expected * coef.double()).sum(), zs64)
    torch.testing.assert_close(g.double(), g64, rtol=1e-4, atol=1e-6)


def test_jsd_edges_are_exact_forward_and_reverse_kl():
    zs, zt = _logits(4, 29, scale=1.0, seed=4), _logits(4, 29, scale=1.0, seed=5)
    fkl = build_loss("forward_kl").per_item_loss(zs, zt)
    rkl = build_loss("reverse_kl").per_item_loss(zs, zt)
    for weighting in ("interpolate", "gkd"):
        torch.testing.assert_close(
            build_loss("jsd", beta=0.0, weighting=weighting).per_item_loss(zs, zt), fkl
        )
        torch.testing.assert_close(
            build_loss("jsd", beta=1.0, weighting=weighting).per_item_loss(zs, zt), rkl
        )
    # the default weighting is continuous at both ends (the gap shrinks ~linearly in beta)
    gaps = []
    for beta in (1e-2, 1e-4, 1e-6):
        near0 = build_loss("jsd", beta=beta).per_item_loss(zs, zt)
        near1 = build_loss("jsd", beta=1 - beta).per_item_loss(zs, zt)
        gaps.append(max(float((near0 - fkl).abs().max()), float((near1 - rkl).abs().max())))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3, gaps
    # GKD's weighting vanishes near the ends (which is why the ends are defined separately)
    assert build_loss("jsd", beta=1e-4, weighting="gkd").per_item_loss(zs, zt).max() < 1e-2


def test_jsd_symmetric_at_half_and_weightings_agree():
    zs, zt = _logits(6, 17, seed=6), _logits(6, 17, seed=7)
    a = jsd_loss(zs, zt, reduction="none", beta=0.5)
    b = jsd_loss(zt, zs, reduction="none", beta=0.5)
    c = jsd_loss(zs, zt, reduction="none", beta=0.5, weighting="gkd")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, c)
    assert bool((a <= math.log(2) + 1e-6).all())  # JSD is bounded by log 2


def test_distillm_jsd_preset_matches_its_formula():
    # DistiLLM js_distance, lambda = 0.9: m = 0.1 p + 0.9 q; 0.9 KL(q||m) + 0.1 KL(p||m)
    zs, zt = _logits(3, 11, seed=8), _logits(3, 11, seed=9)
    q, p = ref.probs(zs), ref.probs(zt)
    m = 0.1 * p + 0.9 * q
    expected = 0.9 * ref.kl(q, m) + 0.1 * ref.kl(p, m)
    got = build_loss("jsd", beta=0.1, weighting="gkd").per_item_loss(zs, zt)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def test_skew_edges_and_cross_entropy_form():
    zs, zt = _logits(5, 19, seed=10), _logits(5, 19, seed=11)
    fkl = build_loss("forward_kl").per_item_loss(zs, zt)
    rkl = build_loss("reverse_kl").per_item_loss(zs, zt)
    torch.testing.assert_close(build_loss("skew_kl", alpha=0.0).per_item_loss(zs, zt), fkl)
    torch.testing.assert_close(build_loss("skew_reverse_kl", alpha=0.0).per_item_loss(zs, zt), rkl)
    # cross-entropy form = KL + H(p), with the same gradient
    zs = zs.requires_grad_(True)
    ce = build_loss("forward_kl", form="cross_entropy").per_item_loss(zs, zt)
    kl = build_loss("forward_kl").per_item_loss(zs, zt)
    torch.testing.assert_close(ce, kl + entropy(zt), rtol=1e-5, atol=1e-5)
    g_ce = torch.autograd.grad(ce.sum(), zs)[0]
    g_kl = torch.autograd.grad(kl.sum(), zs)[0]
    torch.testing.assert_close(g_ce, g_kl, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_non_negative_and_zero_at_equality_in_bfloat16(name):
    zs = _logits(64, 97, scale=8.0, seed=12, dtype=torch.bfloat16)
    zt = (zs.float() + 0.01 * _logits(64, 97, seed=13)).to(torch.bfloat16)
    loss = build_loss(name)
    for s, t in ((zs, zt), (zs, zs), (zs * 50, zt * 50)):
        per = loss.per_item_loss(s, t)
        assert per.dtype == torch.bfloat16
        assert bool((per >= 0).all()), per.min()
    assert float(loss.per_item_loss(zs, zs).float().abs().max()) < 1e-6


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contract_shapes_extremes_and_teacher_without_gradient(name, dtype):
    loss = build_loss(name)
    zs = (_logits(7, 10, seed=14).sign() * 1e4).to(dtype).requires_grad_(True)
    zt = (-_logits(7, 10, seed=15).sign() * 1e4).to(dtype).requires_grad_(True)
    per = loss.per_item_loss(zs, zt)
    assert per.shape == (7,) and per.dtype == dtype
    assert bool(torch.isfinite(per).all())
    loss(zs, zt).backward()
    assert zt.grad is None
    assert bool(torch.isfinite(zs.grad).all())


@pytest.mark.parametrize("name", NAMES)
def test_masking_all_masked_is_zero_and_padding_does_not_change_the_loss(name):
    loss = build_loss(name)
    zs = _logits(2, 6, 23, seed=16).requires_grad_(True)
    zt = _logits(2, 6, 23, seed=17)
    labels = torch.randint(0, 23, (2, 6), generator=torch.Generator().manual_seed(0))
    labels[0, :2] = -100  # prompt
    labels[1, 4:] = -100  # padding
    assert float(loss(zs, zt, torch.full_like(labels, -100)).detach()) == 0.0
    base = loss(zs, zt, labels)
    # extra padded positions with wild logits and label -100 change nothing
    pad_s = torch.cat([zs, 1e3 * _logits(2, 3, 23, seed=18)], 1)
    pad_t = torch.cat([zt, -1e3 * _logits(2, 3, 23, seed=19)], 1)
    pad_l = torch.cat([labels, torch.full((2, 3), -100)], 1)
    torch.testing.assert_close(loss(pad_s, pad_t, pad_l), base)
    # the mask from labels equals an explicit mask, and ignored positions are 0 per item
    per = loss.per_item_loss(zs, zt, labels)
    assert bool((per[labels == -100] == 0).all())
    torch.testing.assert_close(base, reduce(per, mask=labels != -100))
    # a -inf padded vocabulary (same positions on both sides) changes nothing, gradients finite
    inf = torch.full((2, 6, 5), float("-inf"))
    zs_v = torch.cat([zs, inf], -1)
    out = loss(zs_v, torch.cat([zt, inf], -1), labels)
    torch.testing.assert_close(out, base)
    (g,) = torch.autograd.grad(out, zs)
    assert bool(torch.isfinite(g).all())


def test_num_items_in_batch_makes_gradient_accumulation_exact():
    zs = _logits(4, 8, 31, seed=20).requires_grad_(True)
    zt = _logits(4, 8, 31, seed=21)
    labels = torch.randint(0, 31, (4, 8), generator=torch.Generator().manual_seed(1))
    labels[0, :6] = -100
    labels[2, :3] = -100
    labels[3, 7:] = -100
    full = forward_kl_loss(zs, zt, labels)
    (g_full,) = torch.autograd.grad(full, zs)
    n = int((labels != -100).sum())
    micro = sum(
        forward_kl_loss(zs[i : i + 2], zt[i : i + 2], labels[i : i + 2], num_items=n)
        for i in (0, 2)
    )
    (g_micro,) = torch.autograd.grad(micro, zs)
    torch.testing.assert_close(micro, full)
    torch.testing.assert_close(g_micro, g_full)
    # a per-micro-batch mean would weigh the short micro-batch's tokens more: not equal
    naive = sum(forward_kl_loss(zs[i : i + 2], zt[i : i + 2], labels[i : i + 2]) for i in (0, 2))
    assert abs(float(naive.detach()) / 2 - float(full.detach())) > 1e-3


def test_entropies_fused_with_the_divergence_match_core_entropy():
    zs, zt = _logits(3, 4, 21, seed=22), _logits(3, 4, 21, seed=23)
    for t_prime in (1.0, 2.0):
        _, hs, ht = build_loss("reverse_kl").per_item_with_entropies(zs, zt, None, t_prime)
        torch.testing.assert_close(hs, entropy(zs, t_prime))
        torch.testing.assert_close(ht, entropy(zt, t_prime))


def test_entropy_adaptive_token_weights_match_reference():
    zs, zt = _logits(2, 5, 17, seed=24), _logits(2, 5, 17, seed=25)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    ea = EntropyAdaptive(build_loss("forward_kl"), temperature=2.0)
    got = ea(zs, zt, mask=mask)
    w = ref.ea_weight(ref.entropy(zs, 2.0), ref.entropy(zt, 2.0), math.log(17))
    per = ref.divergence("forward_kl", zs, zt)
    expected = (w * per)[mask].sum() / mask.sum()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="beta must be"):
        build_loss("jsd", beta=1.5)
    with pytest.raises(ValueError, match="alpha must be"):
        build_loss("skew_kl", alpha=1.0)
    with pytest.raises(ValueError, match="form must be"):
        build_loss("forward_kl", form="ce")
    with pytest.raises(TypeError, match="unknown keyword"):
        build_loss("tvd", beta=0.5)
    with pytest.raises(ValueError, match="aligned"):
        build_loss("forward_kl")(_logits(2, 4, 7), _logits(2, 4, 7), torch.zeros(2, 5).long())
    with pytest.raises(TypeError, match="integer token ids"):
        build_loss("forward_kl")(_logits(2, 4, 7), _logits(2, 4, 7), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="non-finite"):
        build_loss("forward_kl")(torch.full((2, 7), float("nan")), _logits(2, 7))
