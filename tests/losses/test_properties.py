"""Properties that hold for any logits (hypothesis)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import eakd
from eakd import build_loss

settings.register_profile("eakd", deadline=None, max_examples=40)
settings.load_profile("eakd")


@st.composite
def logits(draw, max_rows=6, max_classes=12):
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(2, max_classes))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale


@given(logits(), st.sampled_from([1.0, 2.0, 4.0]))
def test_identical_logits_give_zero_kl_terms(z, t):
    y = torch.zeros(z.shape[0], dtype=torch.long)
    for name, kw in [("kd", {"temperature": t}), ("dkd", {"temperature": t}), ("mld", {})]:
        per = build_loss(name, **kw)(z.clone(), z.clone(), y, reduction="none")
        torch.testing.assert_close(per, torch.zeros_like(per), atol=1e-5, rtol=0)


@given(st.integers(1, 5), st.integers(2, 50), st.floats(-5, 5), st.sampled_from([1.0, 3.0]))
def test_uniform_logits_give_the_maximum_weight(n, c, value, t):
    z = torch.full((n, c), value)
    w = eakd.ea_weights(z, z, temperature=t)
    torch.testing.assert_close(w, torch.full((n,), math.log(c)), atol=1e-5, rtol=1e-6)
    h = eakd.entropy(z, t)
    torch.testing.assert_close(h, torch.full((n,), math.log(c)), atol=1e-6, rtol=1e-6)


@given(logits(), logits(), st.sampled_from(sorted(eakd.WEIGHT_KINDS)))
def test_weights_lie_in_zero_to_max_entropy(zs, zt, kind):
    n = min(zs.shape[0], zt.shape[0])
    c = min(zs.shape[1], zt.shape[1])
    zs, zt = zs[:n, :c].requires_grad_(True), zt[:n, :c]
    w = eakd.ea_weights(zs, zt, temperature=3.0, kind=kind)
    hi = max(math.log(c), 1.0) if kind == "none" else math.log(c)
    assert (w >= 0).all() and (w <= hi + 1e-6).all()
    assert not w.requires_grad and w.grad_fn is None


@given(logits(), st.floats(0.5, 200.0))
def test_kinds_match_their_formulas(z, h_ub):
    zt = z.flip(0)
    hs, ht = eakd.entropy(z, 3.0), eakd.entropy(zt, 3.0)
    expected = {
        "ea": 0.5 * ht * (1 + hs / h_ub),
        "base": ht,
        "interact": ht * hs / h_ub,
        "student": hs,
        "inverse_teacher": (h_ub - ht).clamp_min(0),
        "inverse_student": (h_ub - hs).clamp_min(0),
        "none": torch.ones_like(hs),
    }
    for kind, value in expected.items():
        w = eakd.ea_weights(z, zt, temperature=3.0, max_entropy=h_ub, kind=kind)
        torch.testing.assert_close(w, value, atol=1e-5, rtol=1e-5)


@given(logits())
def test_kd_is_nonnegative_and_entropy_bounded(z):
    zs = z + torch.randn_like(z)
    per = build_loss("kd")(zs, z, reduction="none")
    assert (per >= 0).all()
    h = eakd.entropy(z, 2.0)
    assert (h >= 0).all() and (h <= math.log(z.shape[1]) + 1e-6).all()
