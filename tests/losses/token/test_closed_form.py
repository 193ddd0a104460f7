"""The closed-form divergence gradients equal autograd through the plain formulas (float64)."""

from __future__ import annotations

import zlib

import pytest
import torch

from eakd.losses.token import DIVERGENCES, Divergence
from eakd.losses.token.closed_form import divergence_and_grad
from reference import token_formulas as ref

CASES = [
    ("forward_kl", {}),
    ("forward_kl", {"form": "cross_entropy"}),
    ("reverse_kl", {}),
    ("jsd", {}),
    ("jsd", {"beta": 0.2}),
    ("jsd", {"beta": 0.7, "weighting": "gkd"}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0, "weighting": "gkd"}),
    ("skew_kl", {}),
    ("skew_kl", {"alpha": 0.4, "form": "cross_entropy"}),
    ("skew_kl", {"alpha": 0.0}),
    ("skew_reverse_kl", {"alpha": 0.3}),
    ("skew_reverse_kl", {"alpha": 0.0}),
    ("tvd", {}),
]


def test_every_registered_divergence_is_covered():
    assert {name for name, _ in CASES} == set(DIVERGENCES)


def _closed_form(spec, zs, zt):
    t = spec.temperature
    lq = torch.log_softmax(zs / t, -1)
    lp = torch.log_softmax(zt / t, -1)
    loss, grad_s, p_lp, q_lq = divergence_and_grad(spec, lq, lq.exp(), lp, lp.exp())
    return loss, grad_s / t, p_lp, q_lq


def _reference(name, prm, zs, zt, t):
    """Plain-formula value and ``d sum_i c_i l_i / dz_s`` by autograd, endpoints included
    (the reference's jsd at beta = 0 / 1 is 0; the definition there is forward / reverse KL)."""
    zs = zs.clone().requires_grad_(True)
    if name == "jsd" and prm.get("beta") in (0.0, 1.0):
        name, prm = ("forward_kl", {}) if prm["beta"] == 0.0 else ("reverse_kl", {})
    return zs, ref.divergence(name, zs, zt, t, **prm)


@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.7])
@pytest.mark.parametrize(("name", "prm"), CASES)
def test_value_and_gradient_match_autograd_float64(name, prm, temperature):
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}{prm}{temperature}".encode()))
    n, v = 9, 13
    zs = torch.randn(n, v, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(n, v, generator=g, dtype=torch.float64) * 3
    zs[0] = zt[0]  # identical rows: the divergence is 0 (the clamp's edge)
    coef = torch.rand(n, generator=g, dtype=torch.float64)
    spec = Divergence.build(name, temperature, **prm)
    loss, grad, p_lp, q_lq = _closed_form(spec, zs, zt)
    leaf, expected = _reference(name, prm, zs, zt, temperature)
    torch.testing.assert_close(loss, expected.detach().clamp_min(0.0), rtol=1e-10, atol=1e-12)
    (expected_grad,) = torch.autograd.grad((coef * expected).sum(), leaf)
    torch.testing.assert_close(grad * coef[:, None], expected_grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(-p_lp, ref.entropy(zt, temperature), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(-q_lq, ref.entropy(zs, temperature), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "prm"), CASES)
def test_closed_form_equals_autograd_of_the_library_divergence(name, prm):
    """The float32 library definition (``Divergence.rows``, autograd) and the closed form."""
    g = torch.Generator().manual_seed(5)
    zs = torch.randn(6, 50, generator=g) * 2
    zt = torch.randn(6, 50, generator=g) * 2
    spec = Divergence.build(name, 1.5, **prm)
    leaf = zs.clone().requires_grad_(True)
    per, _, _ = spec.rows(leaf, zt)
    (auto,) = torch.autograd.grad(per.sum(), leaf)
    loss, grad, _, _ = _closed_form(spec, zs, zt)
    torch.testing.assert_close(loss, per.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, auto, rtol=1e-4, atol=1e-6)


def test_clamped_rows_get_no_gradient():
    """A KL that rounds below 0 is clamped to 0, and so is its gradient (autograd's rule)."""
    spec = Divergence.build("reverse_kl")
    lq = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0]]), -1)
    lp = lq + torch.tensor([[1e-3, 1e-3, 1e-3]])  # not normalised: sum q (lq - lp) < 0
    loss, grad, _, _ = divergence_and_grad(spec, lq, lq.exp(), lp, lp.exp())
    assert float(loss) == 0.0
    assert bool((grad == 0).all())
