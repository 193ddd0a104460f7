"""The EntropyAdaptive wrapper."""

from __future__ import annotations

import pytest
import torch

import eakd
from eakd import EntropyAdaptive, build_loss


def test_num_items_makes_gradient_accumulation_exact():
    """Two micro-batches normalised by the total item count equal one big batch."""
    s = torch.randn(2, 6, 9, requires_grad=True)
    t = torch.randn(2, 6, 9)
    mask = torch.rand(2, 6) > 0.3
    loss = EntropyAdaptive(build_loss("kd"))
    full = loss(s, t, mask=mask)
    (g_full,) = torch.autograd.grad(full, s)
    total = mask.sum()
    parts = [
        loss(s[i : i + 1], t[i : i + 1], mask=mask[i : i + 1], num_items=total) for i in (0, 1)
    ]
    (g_acc,) = torch.autograd.grad(sum(parts), s)
    torch.testing.assert_close(sum(parts), full)
    torch.testing.assert_close(g_acc, g_full)


def test_weights_are_detached_and_last_stats_recorded():
    s = torch.randn(8, 5, requires_grad=True)
    t = torch.randn(8, 5)
    ea = EntropyAdaptive(build_loss("kd"))
    out = ea(s, t)
    (g,) = torch.autograd.grad(out, s)
    w = eakd.ea_weights(s, t)
    per = build_loss("kd")(s, t, reduction="none")
    (g_ref,) = torch.autograd.grad((per * w).mean(), s)  # w as a constant
    torch.testing.assert_close(g, g_ref)
    st = ea.last_stats
    torch.testing.assert_close(st.weights, w)
    torch.testing.assert_close(st.teacher_entropy, eakd.entropy(t, 3.0))
    assert not st.per_item.requires_grad


def test_normalize_keeps_relative_weights():
    s, t = torch.randn(10, 6), torch.randn(10, 6)
    ea = EntropyAdaptive(build_loss("kd"), normalize=True)
    w = eakd.ea_weights(s, t)
    per = build_loss("kd")(s, t, reduction="none")
    torch.testing.assert_close(ea(s, t), (per * w / w.mean()).mean())


def test_sequence_granularity():
    s, t = torch.randn(3, 5, 11), torch.randn(3, 5, 11)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    kd = build_loss("kd")
    per = kd(s, t, reduction="none")
    hs, ht = eakd.entropy(s, 3.0), eakd.entropy(t, 3.0)
    h_ub = torch.log(torch.tensor(11.0))
    expected_num = 0.0
    for b in range(2):
        m = mask[b]
        w_b = 0.5 * ht[b][m].mean() * (1 + hs[b][m].mean() / h_ub)
        expected_num = expected_num + w_b * per[b][m].sum()
    ea = EntropyAdaptive(kd, granularity="sequence")
    torch.testing.assert_close(ea(s, t, mask=mask), expected_num / mask.sum())
    # weights of one reproduce the token-mean baseline exactly
    ones = EntropyAdaptive(kd, granularity="sequence", kind="none")
    torch.testing.assert_close(ones(s, t, mask=mask), kd(s, t, mask=mask))
    with pytest.raises(ValueError, match=r"needs \(B, T\) items"):
        ea(s[0], t[0])


def test_feature_loss_with_logits_for_weights():
    """A loss on features is weighted by entropies of the logits passed separately."""

    def feature_mse(fs, ft, target=None, reduction="none"):
        return (fs - ft).pow(2).flatten(1).mean(1)

    fs, ft = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    zs, zt = torch.randn(4, 10), torch.randn(4, 10)
    out = EntropyAdaptive(feature_mse)(fs, ft, logits=(zs, zt))
    expected = (feature_mse(fs, ft) * eakd.ea_weights(zs, zt)).mean()
    torch.testing.assert_close(out, expected)


def test_official_max_entropy_preset():
    s, t = torch.randn(5, 100), torch.randn(5, 100)
    ea = EntropyAdaptive(build_loss("kd"), max_entropy=100.0)
    w = eakd.ea_weights(s, t, max_entropy=100.0)
    torch.testing.assert_close(ea(s, t), (build_loss("kd")(s, t, reduction="none") * w).mean())
