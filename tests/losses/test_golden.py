"""Hand-computed values on tiny tensors (derivations in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

import eakd
from eakd import EntropyAdaptive, build_loss

LOG3 = math.log(3.0)


def test_entropy_golden():
    # p = [1/2, 1/2] -> log 2;  p = [1/4, 3/4] -> -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351
    h = eakd.entropy(torch.tensor([[0.0, 0.0], [0.0, LOG3]]))
    torch.testing.assert_close(h, torch.tensor([math.log(2.0), 0.5623351]))


def test_kd_golden():
    # teacher p = [1/4, 3/4], student q = [1/2, 1/2], T = 1:
    # KL = 1/4 ln(1/2) + 3/4 ln(3/2) = -0.1732868 + 0.3040988 = 0.1308120
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, LOG3]])
    assert build_loss("kd", temperature=1.0)(s, t).item() == pytest.approx(0.1308120, abs=1e-6)
    # at T = 2 the logits halve: p = softmax([0, ln 3 / 2]) = [1/(1+sqrt 3), sqrt 3/(1+sqrt 3)]
    a = 1 / (1 + math.sqrt(3.0))
    kl2 = a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5)
    assert build_loss("kd", temperature=2.0)(s, t).item() == pytest.approx(4 * kl2, abs=1e-6)


def test_ea_weight_golden():
    # T' = 1, H_T = 0.5623351, H_S = ln 2 = H_ub (C = 2): w = 0.5 H_T (1 + 1) = H_T
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, LOG3]])
    w = eakd.ea_weights(s, t, temperature=1.0)
    assert w.item() == pytest.approx(0.5623351, abs=1e-6)
    ea = EntropyAdaptive(build_loss("kd", temperature=1.0), temperature=1.0)
    assert ea(s, t).item() == pytest.approx(0.5623351 * 0.1308120, abs=1e-6)
    # the released code's H_ub = 100: w = 0.5 * 0.5623351 * (1 + 0.6931472 / 100)
    w100 = eakd.ea_weights(s, t, temperature=1.0, max_entropy=100.0)
    assert w100.item() == pytest.approx(0.5 * 0.5623351 * (1 + 0.6931472 / 100), abs=1e-6)


def test_dkd_golden():
    # teacher p = [1/2, 1/4, 1/4], student q = [1/3, 1/3, 1/3], target 0, T = 1:
    # TCKD = 1/2 ln(3/2) + 1/2 ln(3/4) = 0.2027326 - 0.1438410 = 0.0588915
    # NCKD: both non-target distributions are [1/2, 1/2] -> 0
    s = torch.zeros(1, 3)
    t = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    y = torch.tensor([0])
    dkd = build_loss("dkd", alpha=1.0, beta=8.0, temperature=1.0)
    assert dkd(s, t, y).item() == pytest.approx(0.0588915, abs=1e-6)
    # target 1: b_t = [1/4, 3/4], b_s = [1/3, 2/3]: TCKD = 1/4 ln(3/4) + 3/4 ln(9/8) = 0.0164168
    # non-target p_hat = [2/3, 1/3], q_hat = [1/2, 1/2]:
    # NCKD = 2/3 ln(4/3) + 1/3 ln(2/3) = 0.0566331
    y1 = torch.tensor([1])
    assert dkd(s, t, y1).item() == pytest.approx(0.0164168 + 8 * 0.0566331, abs=1e-6)


def test_ttm_golden():
    # gamma = 1/2: teacher p = [1/4, 3/4] -> p^0.5 = [1/2, sqrt 3/2], U = (1 + sqrt 3)/2
    # p~ = [1/(1+sqrt 3), sqrt 3/(1+sqrt 3)] vs student [1/2, 1/2]
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, LOG3]])
    a = 1 / (1 + math.sqrt(3.0))
    kl = a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))
    assert build_loss("ttm", gamma=0.5)(s, t).item() == pytest.approx(kl, abs=1e-6)
    u = (1 + math.sqrt(3.0)) / 2
    assert build_loss("wttm", gamma=0.5)(s, t).item() == pytest.approx(u * kl, abs=1e-6)
