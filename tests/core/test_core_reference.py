"""Values and gradients of the core entropy, weights and logit standardisation against
tests/reference/formulas.py."""

from __future__ import annotations

import pytest
import torch

import eakd
from reference import checks
from reference import formulas as ref

SHAPES, TEMPS = checks.SHAPES, checks.TEMPS
_pair, _check = checks.pair, checks.check


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
