"""Padded vocabularies (``model.vocab: trim``) and low-precision frozen teachers."""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("rouge_score")

from eakd.core import EASettings
from eakd.engines.llm import (
    DistillationObjective,
    LLMRunDir,
    LossConfig,
    build_models,
    check_same_vocabulary,
    collate_train,
    encode_example,
    freeze_teacher,
    load_causal_lm,
    load_instructions,
    train,
)
from eakd.engines.llm.config import bind_config


@pytest.fixture(scope="module")
def padded(padded_models, loaded):
    return {
        "tokenizer": loaded["tokenizer"],
        "teacher": load_causal_lm(padded_models["teacher"]),
        "student": load_causal_lm(padded_models["student"]),
        "short": load_causal_lm(padded_models["short"]),
    }


def _batch(tok, dolly_file, n=3):
    examples = load_instructions(dolly_file)[:n]
    return collate_train([encode_example(e, tok) for e in examples], tok)


def _cut_head(model, rows):
    """A copy whose lm_head keeps its first ``rows`` rows: the reference for trimming."""
    model = copy.deepcopy(model)
    old = model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, rows, bias=False)
    head.weight = torch.nn.Parameter(old.weight.detach()[:rows].clone())
    model.lm_head = head
    model.config.vocab_size = rows
    return model


def test_strict_and_trim_vocabulary_checks(padded):
    tok, s, t, short = padded["tokenizer"], padded["student"], padded["teacher"], padded["short"]
    v = len(tok)
    with pytest.raises(
        ValueError,
        match=rf"has {v + 8} entries but the teacher's has {v + 16}.*"
        r"model\.vocab: trim",
    ):
        check_same_vocabulary(s, t, tokenizer_size=v)
    assert check_same_vocabulary(s, t, vocab="trim", tokenizer_size=v) == v
    with pytest.raises(
        ValueError,
        match=rf"tokenizer has {v} tokens but the student's lm_head "
        rf"has {v - 4} rows and the teacher's {v + 16}.*really differ",
    ):
        check_same_vocabulary(short, t, vocab="trim", tokenizer_size=v)
    # a strict mismatch where the tokenizer exceeds a head does not suggest trimming
    with pytest.raises(ValueError, match="same tokenizer and vocabulary") as err:
        check_same_vocabulary(short, t, tokenizer_size=v)
    assert "both heads cover" not in str(err.value)


def test_trimmed_full_logits_match_the_formula(padded, dolly_file):
    """Forward KL with token-level EA over the first V logits: w = 0.5 H_T (1 + H_S / log V)
    at T', the token mean over response tokens, written out from the formulas."""
    tok, student, teacher = padded["tokenizer"], padded["student"], padded["teacher"]
    v = len(tok)
    batch = _batch(tok, dolly_file)
    ea = EASettings(enabled=True, granularity="item", temperature=2.0)
    obj = DistillationObjective(student, teacher, LossConfig(), ea, vocab_size=v)
    got = obj(batch)["loss"]
    with torch.no_grad():
        zs = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        zt = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    zs, zt = zs[:, :-1, :v].double(), zt[:, :-1, :v].double()
    mask = batch["labels"][:, 1:] != -100
    pt = F.softmax(zt, -1)
    kl = (pt * (F.log_softmax(zt, -1) - F.log_softmax(zs, -1))).sum(-1)

    def entropy(z):
        p = F.softmax(z / 2.0, -1)
        return -(p * F.log_softmax(z / 2.0, -1)).sum(-1)

    w = 0.5 * entropy(zt) * (1 + entropy(zs) / math.log(v))
    expected = (w * kl)[mask].sum() / mask.sum()
    # float32 KL of two near-uniform distributions: about 1e-6 of cancellation; H_ub = log of
    # the head's 328 rows instead would move the loss by ~2e-3 (relative)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 5], ids=["full-logits", "chunked"])
@pytest.mark.parametrize("granularity", ["item", "sequence"])
def test_trimming_equals_heads_cut_to_the_tokenizer(padded, dolly_file, chunk_size, granularity):
    """Trimming inside the objective gives the loss and gradients of models whose heads were
    cut to the tokenizer's V rows beforehand (CE term and H_ub = log V included)."""
    tok, teacher = padded["tokenizer"], padded["teacher"]
    v = len(tok)
    batch = _batch(tok, dolly_file)
    cfg = LossConfig(divergence="jsd", params={"beta": 0.3}, kd_ratio=0.6, chunk_size=chunk_size)
    ea = EASettings(enabled=True, granularity=granularity, temperature=1.5)
    results = []
    for s, t, size in (
        (copy.deepcopy(padded["student"]), teacher, v),
        (_cut_head(padded["student"], v), _cut_head(teacher, v), None),
    ):
        terms = DistillationObjective(s, t, cfg, ea, vocab_size=size)(batch)
        terms["loss"].backward()
        results.append((terms, {n: p.grad for n, p in s.named_parameters()}))
    (a, ga), (b, gb) = results
    for key in ("loss", "distill", "ce"):
        torch.testing.assert_close(a[key].detach(), b[key].detach(), rtol=1e-5, atol=1e-6)
    for name in gb:
        torch.testing.assert_close(ga[name][: gb[name].shape[0]], gb[name], rtol=1e-4, atol=1e-6)
    # the padding rows get no gradient: they are outside the distilled vocabulary
    assert ga["lm_head.weight"].shape[0] == v + 8
    assert not ga["lm_head.weight"][v:].any()
    assert all(p.grad is None for p in teacher.parameters())


def test_padded_heads_need_the_trim_option_and_train_with_it(
    run_config, padded_models, tmp_path, monkeypatch
):
    models = {"teacher": str(padded_models["teacher"]), "student": str(padded_models["student"])}
    engine = sys.modules["eakd.engines.llm.train"]
    with monkeypatch.context() as patch:  # the head sizes come from the configs: no weights
        patch.setattr(engine, "load_causal_lm", _no_loading)
        cfg = run_config(tmp_path / "strict", max_steps=1)
        cfg["model"] = dict(models)
        with pytest.raises(ValueError, match=r"328 entries but the teacher's has 336.*vocab: trim"):
            train(cfg, quiet=True)
        cfg = run_config(tmp_path / "short", max_steps=1)
        cfg["model"] = {**models, "student": str(padded_models["short"]), "vocab": "trim"}
        with pytest.raises(ValueError, match=r"tokenizer has 320 tokens.*316 rows.*really differ"):
            train(cfg, quiet=True)
    cfg = run_config(tmp_path / "trim", max_steps=1)
    cfg["model"] = {**models, "vocab": "trim"}
    result = train(cfg, quiet=True)
    assert result["steps"] == 1 and math.isfinite(result["history"][0]["loss"])
    assert result["ea"]["max_entropy"] == pytest.approx(math.log(320))  # log len(tokenizer)
    assert LLMRunDir(tmp_path / "trim").read_results()["ea"]["max_entropy"] == pytest.approx(
        math.log(320)
    )


def _no_loading(*args, **kwargs):
    raise AssertionError("weights were loaded before the config was checked")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_teacher_is_frozen_and_distils(
    run_config, tmp_path, loaded, dolly_file, dtype
):
    raw = run_config(tmp_path / dtype)
    raw["model"]["teacher_dtype"] = dtype
    cfg = bind_config(raw)
    tok, student, teacher = build_models(cfg)
    assert not teacher.training
    assert all(p.dtype == getattr(torch, dtype) for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())  # the student is untouched
    batch = _batch(tok, dolly_file)
    ea = EASettings(enabled=True, granularity="sequence", temperature=1.0)
    for chunk in (None, 7):
        obj = DistillationObjective(student, teacher, LossConfig(chunk_size=chunk), ea)
        low = obj(batch)
        low["loss"].backward()
        ref = DistillationObjective(copy.deepcopy(student), loaded["teacher"], obj.config, ea)
        # the teacher's precision only rounds its distribution: the fp32 teacher's loss, close
        torch.testing.assert_close(low["loss"], ref(batch)["loss"], rtol=3e-2, atol=1e-3)
        assert all(p.grad is None for p in teacher.parameters())
        assert all(p.grad is not None for p in student.parameters())
        student.zero_grad()


def test_float16_teacher_on_cpu_warns(loaded):
    teacher = copy.deepcopy(loaded["teacher"]).to(torch.float16)
    with pytest.warns(RuntimeWarning, match="float16 on a CPU.*bfloat16 or float32"):
        freeze_teacher(teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    bf16 = copy.deepcopy(loaded["teacher"]).to(torch.bfloat16)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze_teacher(bf16)  # bfloat16 runs on CPUs without a warning


def test_bf16_teacher_trains_end_to_end(run_config, tmp_path):
    cfg = run_config(tmp_path / "bf16", max_steps=1)
    cfg["model"]["teacher_dtype"] = "bfloat16"
    result = train(cfg, quiet=True)
    assert result["steps"] == 1 and math.isfinite(result["history"][0]["loss"])
