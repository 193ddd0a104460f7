"""The chunked, memory-flat path equals the full-logit path in value and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from eakd.core import EASettings, reduce, sequence_means, weights_from_entropies
from eakd.losses.token import ChunkedTokenDistillation, token_divergence
from reference import token_formulas as ref

B, T, HS, HT, V = 3, 7, 6, 10, 23  # B*T = 21 rows


def _inputs(seed=0, bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, T, HS, generator=g).to(dtype).requires_grad_(True)
    ws = torch.randn(V, HS, generator=g).to(dtype).requires_grad_(True)
    bs = torch.randn(V, generator=g).to(dtype).requires_grad_(True) if bias else None
    ht = torch.randn(B, T, HT, generator=g).to(dtype)
    wt = torch.randn(V, HT, generator=g).to(dtype)
    bt = torch.randn(V, generator=g).to(dtype) if bias else None
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = -100  # prompt
    labels[1, 5:] = -100  # padding
    labels[2, :1] = -100
    return hs, ws, bs, ht, wt, bt, labels


def _full_reference(hs, ws, bs, ht, wt, bt, labels, name, prm, ea, granularity, t_prime, nitems):
    """Full logits, then the registered divergence, weights from the formula, one reduce."""
    zs = hs @ ws.t() + (bs if bs is not None else 0)
    zt = ht @ wt.t() + (bt if bt is not None else 0)
    per, _, _ = token_divergence(zs, zt, labels, divergence=name, **prm)
    mask = labels != -100
    w = None
    if ea:
        hs_tok = ref.entropy(zs.detach(), t_prime).float()
        ht_tok = ref.entropy(zt.detach(), t_prime).float()
        if granularity == "sequence":
            m = mask.float()
            hs_tok = ((hs_tok * m).sum(1) / m.sum(1)).unsqueeze(1).expand(B, T)
            ht_tok = ((ht_tok * m).sum(1) / m.sum(1)).unsqueeze(1).expand(B, T)
        w = ref.ea_weight(hs_tok, ht_tok, math.log(V)).float()
    return reduce(per, weight=w, mask=mask, num_items=nitems)


def _grads(loss, params):
    return torch.autograd.grad(loss, [p for p in params if p is not None])


@pytest.mark.parametrize("chunk_size", [1, 4, 8, 64])  # 4 and 8 do not divide the 15 valid rows
@pytest.mark.parametrize("granularity", ["item", "sequence"])
@pytest.mark.parametrize("ea", [True, False])
def test_chunked_equals_full_forward_kl(chunk_size, granularity, ea):
    hs, ws, bs, ht, wt, bt, labels = _inputs()
    assert int((labels != -100).sum()) == 15
    loss = ChunkedTokenDistillation(
        "forward_kl",
        ea=ea,
        granularity=granularity,
        entropy_temperature=2.0,
        chunk_size=chunk_size,
    )
    got = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    expected = _full_reference(
        hs, ws, bs, ht, wt, bt, labels, "forward_kl", {}, ea, granularity, 2.0, None
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "prm"),
    [
        ("reverse_kl", {}),
        ("jsd", {"beta": 0.1, "weighting": "gkd"}),
        ("skew_kl", {}),
        ("skew_reverse_kl", {"alpha": 0.3}),
        ("tvd", {}),
    ],
)
def test_chunked_equals_full_other_divergences(name, prm):
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=1, bias=False)
    ea = EASettings(enabled=True, temperature=1.0, granularity="sequence")
    loss = ChunkedTokenDistillation(name, ea=ea, chunk_size=5, **prm)
    got = loss(hs, ws, ht, wt, labels, num_items=40)
    expected = _full_reference(
        hs, ws, None, ht, wt, None, labels, name, prm, True, "sequence", 1.0, 40
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(got, (hs, ws)), _grads(expected, (hs, ws)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_sequence_weights_of_ones_reproduce_the_token_mean_baseline():
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=2)
    base = ChunkedTokenDistillation("forward_kl", ea=False, chunk_size=3)
    ones = ChunkedTokenDistillation("forward_kl", granularity="sequence", kind="none", chunk_size=3)
    a = base(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    b = ones(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    torch.testing.assert_close(a, b)
    # and the weights are constant over each sequence's valid tokens
    ea = ChunkedTokenDistillation("forward_kl", granularity="sequence", chunk_size=3)
    ea(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    st = ea.last_stats
    for row in range(B):
        w = st.weights[row][st.mask[row]]
        assert float(w.max() - w.min()) == 0.0
    h_s = sequence_means(st.student_entropy, st.mask)
    h_t = sequence_means(st.teacher_entropy, st.mask)
    expected = weights_from_entropies(h_s, h_t, math.log(V))
    torch.testing.assert_close(st.weights[st.mask], expected[st.mask])


def test_teacher_gets_no_gradient_and_frozen_head_is_supported():
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=3)
    ht.requires_grad_(True)
    wt.requires_grad_(True)
    frozen = ws.detach()
    loss = ChunkedTokenDistillation("jsd", chunk_size=4)(hs, frozen, ht, wt, labels)
    loss.backward()
    assert ht.grad is None and wt.grad is None
    assert hs.grad is not None and bool(torch.isfinite(hs.grad).all())


def test_gradient_accumulation_with_num_items_matches_one_batch():
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=4)
    loss = ChunkedTokenDistillation("forward_kl", granularity="sequence", chunk_size=4)
    full = loss(hs, ws, ht, wt, labels)
    g_full = _grads(full, (hs, ws))
    n = int((labels != -100).sum())
    micro = loss(hs[:1], ws, ht[:1], wt, labels[:1], num_items=n) + loss(
        hs[1:], ws, ht[1:], wt, labels[1:], num_items=n
    )
    torch.testing.assert_close(micro, full)
    for a, b in zip(_grads(micro, (hs, ws)), g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_hidden_states_give_float32_loss_and_input_dtype_gradients():
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=5, dtype=torch.bfloat16)
    loss = ChunkedTokenDistillation("forward_kl", chunk_size=4)
    out = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    assert out.dtype == torch.float32 and math.isfinite(float(out.detach()))
    out.backward()
    assert hs.grad.dtype == torch.bfloat16 and ws.grad.dtype == torch.bfloat16


def test_errors_name_the_problem():
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=6)
    loss = ChunkedTokenDistillation("forward_kl")
    with pytest.raises(ValueError, match="shared tokenizer"):
        loss(hs, ws, ht, wt[:-1], labels)
    with pytest.raises(ValueError, match="hidden size"):
        loss(hs, ws, ht, wt.t().contiguous(), labels)
    with pytest.raises(ValueError, match="aligned"):
        loss(hs, ws, ht, wt, labels[:, 1:])
    with pytest.raises(ValueError, match="reduction"):
        loss(hs, ws, ht, wt, labels, reduction="none")
    with pytest.raises(ValueError, match="granularity"):
        ChunkedTokenDistillation("forward_kl", granularity="batch")
    with pytest.raises(ValueError, match=r"\(B, T, H\)"):
        ChunkedTokenDistillation("forward_kl", granularity="sequence")(
            hs.reshape(-1, HS), ws, ht.reshape(-1, HT), wt
        )
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedTokenDistillation("forward_kl", chunk_size=0)


@pytest.mark.parametrize("granularity", ["item", "sequence"])
def test_chunked_agrees_with_entropy_adaptive_on_full_logits(granularity):
    from eakd import EntropyAdaptive, build_loss

    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=7)
    zs = hs @ ws.t() + bs
    zt = ht @ wt.t() + bt
    wrapper = EntropyAdaptive(build_loss("jsd", beta=0.3), temperature=1.5, granularity=granularity)
    full = wrapper(zs, zt, labels)  # the mask comes from the labels (item_mask)
    chunked = ChunkedTokenDistillation(
        "jsd", beta=0.3, entropy_temperature=1.5, granularity=granularity, chunk_size=6
    )(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(chunked, (hs, ws, bs)), _grads(full, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_hard_label_cross_entropy_term_matches_full_logits():
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=8)
    loss = ChunkedTokenDistillation(
        "forward_kl",
        ea=EASettings(enabled=True, temperature=1.0, granularity="sequence"),
        chunk_size=4,
        kd_weight=0.5,
        ce_weight=0.5,
    )
    got = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    zs = hs @ ws.t() + bs
    ce = torch.nn.functional.cross_entropy(zs.reshape(-1, V), labels.reshape(-1))
    distill = _full_reference(
        hs, ws, bs, ht, wt, bt, labels, "forward_kl", {}, True, "sequence", 1.0, None
    )
    expected = 0.5 * distill + 0.5 * ce
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert loss.last_terms["ce"] == pytest.approx(float(ce.detach()), rel=1e-5)
    for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["ea", "base", "none"])
def test_one_settings_object_configures_both_paths(kind):
    """The wrapper and the chunked loss read the same EASettings and give the same loss."""
    from eakd import EntropyAdaptive, build_loss

    settings = EASettings(enabled=True, temperature=2.0, max_entropy=5.0, kind=kind)
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=9)
    full = EntropyAdaptive(build_loss("reverse_kl"), settings)(
        hs @ ws.t() + bs, ht @ wt.t() + bt, labels
    )
    chunked = ChunkedTokenDistillation("reverse_kl", ea=settings, chunk_size=5)(
        hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt
    )
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    off = ChunkedTokenDistillation("reverse_kl", ea=settings.replace(enabled=False))
    plain = build_loss("reverse_kl")(hs @ ws.t() + bs, ht @ wt.t() + bt, labels)
    torch.testing.assert_close(
        off(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt), plain, rtol=1e-5, atol=1e-6
    )


def test_settings_the_chunked_loss_cannot_honour_are_refused():
    with pytest.raises(ValueError, match="normalize=false"):
        ChunkedTokenDistillation("forward_kl", ea=EASettings(enabled=True, normalize=True))
    with pytest.raises(ValueError, match="weight_logits=raw"):
        ChunkedTokenDistillation(
            "forward_kl", ea=EASettings(enabled=True, weight_logits="standardized")
        )
    with pytest.raises(ValueError, match="'token' is now 'item'"):
        ChunkedTokenDistillation("forward_kl", granularity="token")


def test_num_items_must_be_a_positive_count():
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=10)
    loss = ChunkedTokenDistillation("forward_kl", chunk_size=4)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_items must be > 0"):
            loss(hs, ws, ht, wt, labels, num_items=bad)
    masked = torch.full_like(labels, -100)  # nothing to count: 0 is a valid count
    out = loss(hs, ws, ht, wt, masked, num_items=0)
    assert float(out.detach()) == 0.0
    torch.testing.assert_close(
        loss(hs, ws, ht, wt, labels, num_items=torch.tensor(30)),
        loss(hs, ws, ht, wt, labels, num_items=30),
    )


DIVERGENCE_CASES = [
    ("forward_kl", {}),
    ("forward_kl", {"form": "cross_entropy"}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.3}),
    ("jsd", {"beta": 0.7, "weighting": "gkd"}),
    ("jsd", {"beta": 1.0}),
    ("skew_kl", {"alpha": 0.2}),
    ("skew_kl", {"form": "cross_entropy"}),
    ("skew_reverse_kl", {"alpha": 0.3}),
    ("tvd", {}),
]


@pytest.mark.parametrize("granularity", ["item", "sequence"])
@pytest.mark.parametrize(("name", "prm"), DIVERGENCE_CASES)
def test_every_divergence_at_temperature_two_with_ce_and_masked_rows(name, prm, granularity):
    """Closed-form chunk gradients at T = 2 (T' = 1.5, CE on, masked rows, chunks that do not
    divide the rows) against autograd through the full logits."""
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=11)
    labels[1] = -100  # a fully masked sequence
    settings = EASettings(enabled=True, temperature=1.5, granularity=granularity)
    loss = ChunkedTokenDistillation(
        name, ea=settings, temperature=2.0, chunk_size=4, kd_weight=0.7, ce_weight=0.3, **prm
    )
    got = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    zs = hs @ ws.t() + bs
    zt = ht @ wt.t() + bt
    per, _, _ = token_divergence(zs, zt, labels, divergence=name, temperature=2.0, **prm)
    mask = labels != -100
    h_s, h_t = ref.entropy(zs.detach(), 1.5).float(), ref.entropy(zt, 1.5).float()
    if granularity == "sequence":
        m = mask.float()
        h_s = ((h_s * m).sum(1) / m.sum(1).clamp_min(1)).unsqueeze(1).expand(B, T)
        h_t = ((h_t * m).sum(1) / m.sum(1).clamp_min(1)).unsqueeze(1).expand(B, T)
    w = ref.ea_weight(h_s, h_t, math.log(V)).float()
    ce = torch.nn.functional.cross_entropy(zs.reshape(-1, V), labels.reshape(-1))
    expected = 0.7 * reduce(per, weight=w, mask=mask) + 0.3 * ce
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss.last_stats.per_item[mask], per.detach()[mask])
    torch.testing.assert_close(loss.last_stats.weights[mask], w[mask])
    assert loss.last_terms["ce"] == pytest.approx(float(ce.detach()), rel=1e-5)


def test_masked_vocabulary_entries_fall_back_to_the_support_convention():
    """-inf teacher logits (a padded vocabulary) drop those entries from both distributions,
    as the full-logit losses do: the chunk's non-finite check sends the call to that path."""
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=12)
    bt = bt.clone()
    bt[-3:] = -math.inf
    loss = ChunkedTokenDistillation("reverse_kl", granularity="sequence", chunk_size=5)
    got = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    expected = _full_reference(
        hs, ws, bs, ht, wt, bt, labels, "reverse_kl", {}, True, "sequence", 3.0, None
    )
    assert math.isfinite(float(got.detach()))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_non_finite_logits_are_named_once_at_the_end():
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=13)
    hs = hs.detach().clone()
    hs[2, 4, 0] = math.nan
    loss = ChunkedTokenDistillation("jsd", chunk_size=4)
    with pytest.raises(ValueError, match="non-finite distillation loss: student logits"):
        loss(hs, ws, ht, wt, labels)
    ht = ht.clone()
    ht[0, 5, 1] = math.inf
    with pytest.raises(ValueError, match="teacher logits has NaN or inf"):
        loss(hs.nan_to_num(), ws, ht, wt, labels)


def test_chunk_rows_come_from_the_budget_unless_chunk_size_is_given(monkeypatch):
    from eakd.losses.token import chunked

    seen = []
    make = chunked._make_chunks
    monkeypatch.setattr(
        chunked, "_make_chunks", lambda m, g, rows: seen.append(rows) or make(m, g, rows)
    )
    hs, ws, _bs, ht, wt, _bt, labels = _inputs(seed=14)
    by_budget = ChunkedTokenDistillation("forward_kl", chunk_budget=4 * V + 3)
    by_rows = ChunkedTokenDistillation("forward_kl", chunk_size=4, chunk_budget=1)
    a, b = by_budget(hs, ws, ht, wt, labels), by_rows(hs, ws, ht, wt, labels)
    assert seen == [4, 4]
    torch.testing.assert_close(a, b)
    ChunkedTokenDistillation("forward_kl")(hs, ws, ht, wt, labels)
    assert seen[-1] == chunked.DEFAULT_CHUNK_BUDGET // V
    with pytest.raises(ValueError, match="chunk_budget"):
        ChunkedTokenDistillation("forward_kl", chunk_budget=0)
    with pytest.raises(ValueError, match="compile must be"):
        ChunkedTokenDistillation("forward_kl", compile="yes")


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_inputs_match_the_float32_reference_of_the_rounded_inputs(native, monkeypatch):
    """Logits in the inputs' dtype (no float32 copy of the lm_heads) where products in it are
    native, else from float32 vocabulary tiles; the softmax math in float32 either way."""
    from eakd.losses.token import chunked

    monkeypatch.setattr(chunked, "_native_matmul", lambda w: native)
    monkeypatch.setattr(chunked, "TILE_ELEMENTS", 7 * HS)  # several tiles, the last one short
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=15, dtype=torch.bfloat16)
    loss = ChunkedTokenDistillation("jsd", beta=0.4, granularity="sequence", chunk_size=4)
    got = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    up = [x.detach().float().requires_grad_(True) for x in (hs, ws, bs)]
    expected = _full_reference(
        *up,
        ht.float(),
        wt.float(),
        bt.float(),
        labels,
        "jsd",
        {"beta": 0.4},
        True,
        "sequence",
        3.0,
        None,
    )
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=1e-3)
    for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, up), strict=True):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), e, rtol=5e-2, atol=5e-3)


def test_without_gradients_only_the_value_is_computed():
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=16)
    loss = ChunkedTokenDistillation("skew_kl", alpha=0.2, chunk_size=3)
    with torch.no_grad():
        value = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    assert not value.requires_grad
    torch.testing.assert_close(
        value, loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt).detach()
    )


@pytest.mark.slow
def test_compiled_chunk_step_equals_the_eager_one():
    """``compile=True`` against ``compile=False``: same values and gradients, chunks of
    different row counts (the last one shorter) without a failure."""
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=17)
    kwargs = {"granularity": "sequence", "chunk_size": 4, "ce_weight": 0.2, "beta": 0.3}
    eager = ChunkedTokenDistillation("jsd", compile=False, **kwargs)
    compiled = ChunkedTokenDistillation("jsd", compile=True, **kwargs)
    expected = eager(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    try:
        got = compiled(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    except Exception as exc:  # no working compiler here (e.g. no C++ toolchain)
        if "BackendCompilerFailed" in type(exc).__name__ or "Inductor" in str(exc)[:200]:
            pytest.skip(f"torch.compile is not available: {type(exc).__name__}")
        raise
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, (hs, ws, bs)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.last_stats.weights, eager.last_stats.weights)
    # other row counts (a shorter batch, other chunk sizes) reuse the compiled step
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled(hs[1:], ws, ht[1:], wt, labels[1:], student_bias=bs, teacher_bias=bt)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_auto_compile_falls_back_to_eager_when_compilation_fails(monkeypatch):
    from eakd.losses.token import chunked

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(chunked, "AUTO_COMPILE_MIN", 1)  # compile even this tiny case
    monkeypatch.setattr(chunked, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken)
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=18)
    auto = ChunkedTokenDistillation("tvd", chunk_size=4)
    with pytest.warns(RuntimeWarning, match="torch.compile of the chunk step failed"):
        got = auto(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    expected = ChunkedTokenDistillation("tvd", chunk_size=4, compile=False)(
        hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt
    )
    torch.testing.assert_close(got, expected)
    assert auto._compile_failed  # later calls go straight to the eager step
    forced = ChunkedTokenDistillation("tvd", chunk_size=4, compile=True)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        forced(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)


def test_underflowing_mixtures_stay_on_the_closed_form_path(monkeypatch):
    """Probabilities that underflow on both sides (logits 200 apart) leave the mixture's log
    finite: no fallback to the autograd path, and the values of the log-space definition."""
    from eakd.losses.token import chunked

    def no_fallback(*args):
        raise AssertionError("the autograd fallback ran")

    monkeypatch.setattr(chunked, "_safe_pass", no_fallback)
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=19)
    bs = bs.detach().clone()
    bt = bt.clone()
    bs[:5] -= 200.0
    bt[:5] -= 200.0
    bs.requires_grad_(True)
    for name, prm in (("jsd", {"beta": 0.3}), ("skew_reverse_kl", {"alpha": 0.2})):
        loss = ChunkedTokenDistillation(name, chunk_size=4, **prm)
        got = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
        expected = _full_reference(
            hs, ws, bs, ht, wt, bt, labels, name, prm, True, "item", 3.0, None
        )
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        for g, e in zip(_grads(got, (hs, ws, bs)), _grads(expected, (hs, ws, bs)), strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_backward_scales_by_the_incoming_gradient_and_can_run_twice():
    hs, ws, bs, ht, wt, bt, labels = _inputs(seed=20)
    loss = ChunkedTokenDistillation("jsd", chunk_size=4)
    out = loss(hs, ws, ht, wt, labels, student_bias=bs, teacher_bias=bt)
    (g1,) = torch.autograd.grad(out, ws, retain_graph=True)
    (g3,) = torch.autograd.grad(3.0 * out, ws, retain_graph=True)
    (again,) = torch.autograd.grad(out, ws)
    torch.testing.assert_close(g3, 3.0 * g1)
    torch.testing.assert_close(again, g1)
