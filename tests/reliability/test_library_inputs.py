"""Library calls with bad or unusual inputs: a bad ``reduction``, ``num_items`` or mask shape is a
clear error on every path; ``-inf`` teacher logits (masked classes) are accepted where the math is
defined, with values checked against plain float64 formulas over the unmasked classes."""

from __future__ import annotations

import math
import re

import pytest
import torch

import eakd
from eakd import EntropyAdaptive, build_loss, functional
from eakd.losses.logit._fused import STACK_BELOW

NEG_INF = float("-inf")


def _logits(*shape, scale=3.0, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g) * scale
    return z.requires_grad_(grad)


def _masked_teacher(*shape, seed=1, frac=0.3):
    """Teacher logits with about ``frac`` of the classes of each row at -inf (never all)."""
    t = _logits(*shape, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    masked = torch.rand(*shape, generator=g) < frac
    masked[..., 0] = False  # one finite class per row at least
    return t.masked_fill(masked, NEG_INF), masked


# -- float64 references over the unmasked classes (no -inf ever enters them) ---------------------
def _log_softmax_on(z, keep, t):
    """log softmax(z / t) over the classes where ``keep``; -inf elsewhere (never used)."""
    z = z.double() / t
    z = torch.where(keep, z, torch.full_like(z, -1e300))
    return torch.log_softmax(z, -1)


def ref_kd(zs, zt, keep, t):
    """T^2 sum_{c kept} p_c (log p_c - log q_c), p over the kept classes, q over all."""
    log_p = _log_softmax_on(zt, keep, t)
    log_q = torch.log_softmax(zs.double() / t, -1)
    terms = torch.where(keep, log_p.exp() * (log_p - log_q), torch.zeros_like(log_q))
    return t * t * terms.sum(-1)


def ref_entropy(z, keep, t):
    log_p = _log_softmax_on(z, keep, t)
    return -torch.where(keep, log_p.exp() * log_p, torch.zeros_like(log_p)).sum(-1)


def ref_ea_weight(zs, zt, keep, t_prime):
    h_ub = math.log(zs.shape[-1])
    hs = ref_entropy(zs, torch.ones_like(keep), t_prime)
    ht = ref_entropy(zt, keep, t_prime)
    return 0.5 * ht * (1 + hs / h_ub)


# -- reduction ------------------------------------------------------------------------------------
def _ea_paths():
    """(name, call) pairs reaching every branch of EntropyAdaptive.forward."""
    small_s, small_t = _logits(6, 10), _logits(6, 10, seed=1)
    big_s, big_t = _logits(64, STACK_BELOW // 64 + 1), _logits(64, STACK_BELOW // 64 + 1, seed=1)
    tok_s, tok_t = _logits(2, 3, 7), _logits(2, 3, 7, seed=1)
    y = torch.zeros(6, dtype=torch.long)
    labels = torch.zeros(2, 3, dtype=torch.long)
    kd = EntropyAdaptive(build_loss("kd"))
    return [
        ("small kd (one node)", lambda **kw: kd(small_s, small_t, **kw)),
        ("large kd (row kernel)", lambda **kw: kd(big_s, big_t, **kw)),
        ("dkd", lambda **kw: EntropyAdaptive(build_loss("dkd"))(small_s, small_t, y, **kw)),
        ("token", lambda **kw: EntropyAdaptive(build_loss("jsd"))(tok_s, tok_t, labels, **kw)),
        (
            "callable",
            lambda **kw: EntropyAdaptive(lambda s, t, y, reduction: (s - t).pow(2).sum(-1))(
                small_s, small_t, **kw
            ),
        ),
    ]


@pytest.mark.parametrize(("name", "call"), _ea_paths(), ids=[n for n, _ in _ea_paths()])
def test_entropy_adaptive_refuses_unknown_reduction(name, call):
    with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', 'sum'\), "):
        call(reduction="bogus")
    call(reduction="mean")  # the same call with a valid reduction works


def test_reduce_and_losses_refuse_unknown_reduction():
    s, t = _logits(4, 5), _logits(4, 5, seed=1)
    for call in (
        lambda: eakd.reduce(torch.ones(3), reduction="avg"),
        lambda: functional.kd_loss(s, t, reduction="avg"),
        lambda: build_loss("forward_kl")(s, t, reduction="avg"),
    ):
        with pytest.raises(ValueError, match="reduction must be one of"):
            call()


# -- num_items ------------------------------------------------------------------------------------
BAD_NUM_ITEMS = [0, -3, -0.5, 0.0, float("nan"), float("inf"), torch.tensor(0), torch.tensor(-2.0)]


@pytest.mark.parametrize("num_items", BAD_NUM_ITEMS, ids=repr)
def test_reduce_refuses_non_positive_num_items(num_items):
    with pytest.raises(ValueError, match=r"num_items must be > 0 .*got "):
        eakd.reduce(torch.tensor([1.0, 2.0, 3.0]), num_items=num_items)


@pytest.mark.parametrize("num_items", [0, -3, torch.tensor(0)], ids=repr)
@pytest.mark.parametrize(("name", "call"), _ea_paths(), ids=[n for n, _ in _ea_paths()])
def test_entropy_adaptive_refuses_non_positive_num_items(name, call, num_items):
    with pytest.raises(ValueError, match="num_items must be > 0"):
        call(num_items=num_items)


@pytest.mark.parametrize("name", ["kd", "dkd", "mld", "ttm", "forward_kl", "tvd"])
def test_losses_refuse_non_positive_num_items(name):
    s, t = _logits(2, 3, 6), _logits(2, 3, 6, seed=1)
    target = torch.zeros(2, 3, dtype=torch.long)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_items must be > 0"):
            build_loss(name)(s, t, target, num_items=bad)


def test_num_items_shape_and_type():
    per = torch.ones(3)
    with pytest.raises(ValueError, match=r"one-element tensor, got a tensor of shape \(2,\)"):
        eakd.reduce(per, num_items=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="num_items must be a number or a tensor, got str"):
        eakd.reduce(per, num_items="3")


def test_num_items_zero_is_allowed_when_every_item_is_masked_out():
    """A micro-batch of padding only under gradient accumulation: 0, with zero gradients."""
    s = _logits(2, 4, 7, grad=True)
    t = _logits(2, 4, 7, seed=1)
    none = torch.zeros(2, 4, dtype=torch.bool)
    for n in (0, torch.tensor(0)):
        out = eakd.reduce(torch.randn(2, 4), mask=none, num_items=n)
        assert out.item() == 0.0
        for loss in (build_loss("kd"), EntropyAdaptive(build_loss("kd"))):
            out = loss(s, t, mask=none, num_items=n)
            (g,) = torch.autograd.grad(out, s)
            assert out.item() == 0.0 and torch.equal(g, torch.zeros_like(g))
    labels = torch.full((2, 4), -100)  # token losses: every label ignored
    out = EntropyAdaptive(build_loss("forward_kl"))(s, t, labels, num_items=0)
    assert out.item() == 0.0
    assert eakd.reduce(torch.zeros(0), num_items=0).item() == 0.0  # no items at all
    # one valid item is enough to need a count
    some = none.clone()
    some[1, 2] = True
    with pytest.raises(ValueError, match="0 is allowed only when every item is masked out"):
        build_loss("kd")(s, t, mask=some, num_items=0)


def test_positive_num_items_is_the_denominator_as_given():
    per = torch.tensor([1.0, 2.0, 3.0])
    assert eakd.reduce(per, num_items=0.5).item() == pytest.approx(12.0)
    assert eakd.reduce(per, num_items=torch.tensor(4)).item() == pytest.approx(1.5)
    # the one-node small-KD path and the per-item path agree on it
    s, t = _logits(6, 10, grad=True), _logits(6, 10, seed=1)
    ea = EntropyAdaptive(build_loss("kd"))
    small = ea(s, t, num_items=0.5)
    per_item = ea(s, t, mask=torch.ones(6, dtype=torch.bool), num_items=0.5)
    torch.testing.assert_close(small, per_item)
    torch.testing.assert_close(small, ea(s, t, reduction="sum") / 0.5)


# -- mask shape -----------------------------------------------------------------------------------
def _mask_calls(mask):
    s, t = _logits(2, 3, 7), _logits(2, 3, 7, seed=1)
    labels = torch.zeros(2, 3, dtype=torch.long)
    return [
        lambda: eakd.reduce(torch.ones(2, 3), mask=mask),
        lambda: functional.kd_loss(s, t, mask=mask),
        lambda: build_loss("forward_kl")(s, t, labels, mask=mask),
        lambda: EntropyAdaptive(build_loss("kd"))(s, t, mask=mask),
        lambda: EntropyAdaptive(build_loss("kd"), granularity="sequence")(s, t, mask=mask),
        lambda: EntropyAdaptive(build_loss("kd"), normalize=True)(s, t, mask=mask),
        lambda: EntropyAdaptive(build_loss("forward_kl"))(s, t, labels, mask=mask),
    ]


@pytest.mark.parametrize("shape", [(4,), (2, 4), (3, 2), (2, 3, 1), (6,)])
@pytest.mark.parametrize("index", range(7))
def test_wrongly_shaped_mask_names_both_shapes(shape, index):
    call = _mask_calls(torch.ones(shape, dtype=torch.bool))[index]
    expected = rf"mask has shape {re.escape(str(shape))}, which does not broadcast to the "
    with pytest.raises(ValueError, match=expected + r"per-item loss of shape \(2, 3\)"):
        call()


@pytest.mark.parametrize("index", range(7))
def test_broadcasting_mask_is_accepted(index):
    """A (B, 1) mask drops whole sequences: the same as its expansion to (B, T)."""
    short = torch.tensor([[True], [False]])
    got = _mask_calls(short)[index]()
    want = _mask_calls(short.expand(2, 3).contiguous())[index]()
    torch.testing.assert_close(got, want)


def test_mask_of_another_dtype():
    with pytest.raises(TypeError, match="mask must be a boolean tensor, got dtype torch.int64"):
        EntropyAdaptive(build_loss("kd"))(_logits(4, 5), _logits(4, 5), mask=torch.ones(4).long())


# -- -inf teacher logits --------------------------------------------------------------------------
KD_SHAPES = [(7, 10), (4, 3, 11), (64, STACK_BELOW // 64 + 7)]  # small path, 3-D, row kernel


@pytest.mark.parametrize("shape", KD_SHAPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_with_masked_teacher_classes(shape, temperature):
    s = _logits(*shape, grad=True)
    t, masked = _masked_teacher(*shape)
    out = functional.kd_loss(s, t, temperature=temperature, reduction="none")
    want = ref_kd(s, t, ~masked, temperature)
    torch.testing.assert_close(out.double(), want.detach(), atol=2e-5, rtol=1e-4)
    (g,) = torch.autograd.grad(out.sum(), s)
    (g_ref,) = torch.autograd.grad(want.sum(), s)
    torch.testing.assert_close(g.double(), g_ref.double(), atol=2e-5, rtol=1e-4)
    # the mean through the module form
    mean = build_loss("kd", temperature=temperature)(s, t)
    torch.testing.assert_close(mean.double(), want.mean().detach(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", KD_SHAPES, ids=str)
@pytest.mark.parametrize("t_prime", [3.0, 4.0])  # T' != T, and T' == T (shared softmaxes)
def test_ea_kd_with_masked_teacher_classes(shape, t_prime):
    s = _logits(*shape, grad=True)
    t, masked = _masked_teacher(*shape)
    ea = EntropyAdaptive(build_loss("kd", temperature=4.0), temperature=t_prime)
    out = ea(s, t)
    w = ref_ea_weight(s, t, ~masked, t_prime).detach()
    want = (ref_kd(s, t, ~masked, 4.0) * w).mean()
    torch.testing.assert_close(out.double(), want.detach(), atol=2e-5, rtol=1e-4)
    (g,) = torch.autograd.grad(out, s)
    (g_ref,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(g.double(), g_ref.double(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(ea.last_stats.weights.double(), w, atol=2e-5, rtol=1e-4)
    ht = ref_entropy(t, ~masked, t_prime)
    torch.testing.assert_close(ea.last_stats.teacher_entropy.double(), ht, atol=2e-5, rtol=0)


def test_forward_kl_with_masked_teacher_vocabulary():
    """Token forward KL, masked vocabulary entries in the teacher and ignored labels."""
    s = _logits(2, 5, 13, grad=True)
    t, masked = _masked_teacher(2, 5, 13)
    labels = torch.tensor([[1, 2, -100, 3, 4], [-100, -100, 5, 6, 7]])
    valid = labels != -100
    out = build_loss("forward_kl")(s, t, labels, reduction="none")
    want = torch.where(valid, ref_kd(s, t, ~masked, 1.0), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(out.double(), want.detach(), atol=2e-6, rtol=1e-5)
    mean = build_loss("forward_kl")(s, t, labels)
    want_mean = want.sum() / valid.sum()
    torch.testing.assert_close(mean.double(), want_mean.detach(), atol=2e-6, rtol=1e-5)
    (g,) = torch.autograd.grad(mean, s)
    (g_ref,) = torch.autograd.grad(want_mean, s)
    torch.testing.assert_close(g.double(), g_ref.double(), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", ["kd", "dkd", "mld", "ttm", "wttm", "ctkd"])
def test_masked_teacher_is_the_limit_of_very_negative_logits(name):
    """Every logit loss: -inf in the teacher gives the value that ever more negative finite
    logits tend to (a class of probability exactly 0), and a finite gradient."""
    s = _logits(9, 8, grad=True)
    t, masked = _masked_teacher(9, 8)
    y = torch.randint(0, 8, (9,), generator=torch.Generator().manual_seed(3))
    y = torch.where(masked.gather(1, y[:, None])[:, 0], torch.zeros_like(y), y)  # finite target
    far = torch.where(masked, t.masked_fill(masked, 0).amin(-1, keepdim=True) - 400.0, t)
    loss = build_loss(name)
    out = loss(s, t, y)
    (g,) = torch.autograd.grad(out, s)
    assert torch.isfinite(out) and torch.isfinite(g).all()
    torch.testing.assert_close(out, loss(s, far, y), atol=1e-6, rtol=1e-5)


def test_masked_teacher_in_bfloat16():
    s = _logits(6, 10, grad=True).bfloat16()
    t, masked = _masked_teacher(6, 10)
    out = functional.kd_loss(s, t.bfloat16(), reduction="none")
    assert out.dtype == torch.bfloat16
    want = ref_kd(s.float(), t.bfloat16().float(), ~masked, 4.0)
    torch.testing.assert_close(out.double(), want.detach(), atol=2e-2, rtol=2e-2)


def test_teacher_row_of_only_minus_inf_is_refused():
    t = _logits(4, 5)
    t[1] = NEG_INF
    for call in (
        lambda: functional.kd_loss(_logits(4, 5), t),
        lambda: EntropyAdaptive(build_loss("kd"))(_logits(4, 5), t),
        lambda: EntropyAdaptive(build_loss("dkd"))(_logits(4, 5), t, torch.zeros(4).long()),
    ):
        with pytest.raises(
            ValueError, match=r"teacher.logits is -inf in every class of rows \[1\]"
        ):
            call()


def test_masked_teacher_cannot_be_standardised():
    t, _ = _masked_teacher(4, 6)
    with pytest.raises(ValueError, match="-inf entries .* standardisation"):
        functional.kd_loss(_logits(4, 6), t, standardize=True)
    with pytest.raises(ValueError, match="-inf entries .* standardisation"):
        EntropyAdaptive(build_loss("kd"), weight_logits="standardized")(_logits(4, 6), t)


def test_nan_in_a_masked_teacher_is_still_an_error():
    t, _ = _masked_teacher(4, 6)
    t[3, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"teacher_logits has NaN or inf values \(first rows: \[3\]"
    ):
        functional.kd_loss(_logits(4, 6), t)


def test_student_nan_with_a_masked_teacher_names_the_student_only():
    t, _ = _masked_teacher(4, 6)
    s = _logits(4, 6)
    s[2, 4] = float("nan")
    with pytest.raises(ValueError, match="non-finite distillation loss") as err:
        functional.kd_loss(s, t)
    assert "student_logits has NaN or inf values (first rows: [2])" in str(err.value)
    assert "teacher_logits" not in str(err.value).split(". Logits")[0]
