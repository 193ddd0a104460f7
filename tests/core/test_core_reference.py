"""Values and gradients of the core entropy, weights and logit standardisation against
tests/reference/formulas.py."""

from __future__ import annotations

import pytest
import torch

import eakd
from reference import formulas as ref

SHAPES = [(5, 3), (3, 7, 101), (64, 10)]
TEMPS = [1.0, 2.0, 4.0]


def _pair(shape, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(*shape, generator=g) * scale).requires_grad_(True)
    t = torch.randn(*shape, generator=g) * scale
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return s, t, y


def _check(ours, reference, s, atol=1e-5, rtol=1e-4):
    """Compare values, then gradients of a random projection of the per-item outputs."""
    torch.testing.assert_close(ours.double(), reference, atol=atol, rtol=rtol)
    proj = torch.randn(ours.shape, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours.double() * proj).sum(), s)
    (g_ref,) = torch.autograd.grad((reference * proj).sum(), s)
    torch.testing.assert_close(g_ours.double(), g_ref.double(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", TEMPS)
def test_entropy(shape, t):
    s, _, _ = _pair(shape)
    _check(eakd.entropy(s, t), ref.entropy(s, t), s)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", sorted(eakd.WEIGHT_KINDS))
@pytest.mark.parametrize("h_ub", [None, 100.0])
def test_weights(shape, kind, h_ub):
    s, t, _ = _pair(shape)
    w = eakd.ea_weights(s, t, temperature=3.0, max_entropy=h_ub, kind=kind)
    torch.testing.assert_close(
        w.double(), ref.ea_weight(s, t, 3.0, h_ub, kind).detach(), atol=1e-5, rtol=1e-5
    )
    assert not w.requires_grad


def test_standardize_logits_formula():
    s, _, _ = _pair((4, 9))
    torch.testing.assert_close(eakd.standardize_logits(s).double(), ref.standardize(s))
