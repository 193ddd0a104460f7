"""On-policy (GKD) mixing in the engine's loop: student samples replace a micro-batch's responses
with probability lmbda, deterministically given the seed, and a resumed run continues exactly."""

from __future__ import annotations

import copy
import csv

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("rouge_score")

from eakd.config import ConfigError
from eakd.engines.llm import (
    LLMRunDir,
    encode_example,
    load_causal_lm,
    load_instructions,
    sample_responses,
    train,
)
from eakd.engines.llm.config import bind_config
from eakd.engines.llm.on_policy import draw_on_policy, prompt_length, step_seed


def _encoded(tok, dolly_file, n=4):
    return [encode_example(e, tok, 160, 128) for e in load_instructions(dolly_file)[:n]]


def test_samples_keep_prompts_mask_them_and_stop_at_eos(loaded, dolly_file):
    tok, student = loaded["tokenizer"], copy.deepcopy(loaded["student"]).train()
    examples = _encoded(tok, dolly_file)
    rng = torch.get_rng_state()
    out = sample_responses(student, tok, examples, seed=7, max_new_tokens=12, max_length=160)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG (dropout) is untouched
    assert student.training  # sampled in eval mode, then put back
    for before, after in zip(examples, out, strict=True):
        n = prompt_length(before)
        assert after.input_ids[:n] == before.input_ids[:n]
        assert after.labels[:n] == [-100] * n
        response = after.input_ids[n:]
        assert after.labels[n:] == response and 1 <= len(response) <= 12
        eos = [i for i, t in enumerate(response) if t == tok.eos_token_id]
        assert not eos or eos[0] == len(response) - 1  # cut after the first EOS
    again = sample_responses(student, tok, examples, seed=7, max_new_tokens=12, max_length=160)
    assert again == out
    other = sample_responses(student, tok, examples, seed=8, max_new_tokens=12, max_length=160)
    assert other != out
    short = sample_responses(student, tok, examples, seed=7, max_new_tokens=12, max_length=50)
    assert all(len(e.input_ids) <= 50 for e in short)


def test_samples_never_draw_padding_rows(padded_models, loaded, dolly_file):
    tok = loaded["tokenizer"]
    v = len(tok)
    student = load_causal_lm(padded_models["student"])
    with torch.no_grad():  # make the 8 padding rows the likeliest tokens
        student.lm_head.weight[v:] = 10.0 * student.lm_head.weight[:v].abs().max()
        student.model.norm.weight.fill_(1.0)
    examples = _encoded(tok, dolly_file, 2)

    def new_tokens(vocab_size):
        out = sample_responses(
            student, tok, examples, seed=3, max_new_tokens=8, max_length=160, vocab_size=vocab_size
        )
        return [
            t for e, o in zip(examples, out, strict=True) for t in o.input_ids[prompt_length(e) :]
        ]

    assert max(new_tokens(None)) >= v  # the padding rows would be sampled
    assert max(new_tokens(v)) < v


def test_the_draw_has_rate_lmbda_and_depends_on_the_seed_only():
    draws = [draw_on_policy(0.3, step_seed("draw", 10, step, 0, 0)) for step in range(4000)]
    assert abs(sum(draws) / len(draws) - 0.3) < 0.03
    assert draws == [draw_on_policy(0.3, step_seed("draw", 10, s, 0, 0)) for s in range(4000)]
    assert not any(draw_on_policy(0.0, step_seed(s)) for s in range(200))
    assert all(draw_on_policy(1.0, step_seed(s)) for s in range(200))
    assert step_seed("sample", 10, 3, 0, 1) != step_seed("sample", 10, 3, 1, 0)


def _log(run):
    return list(csv.DictReader(run.train_log.open()))


def test_on_policy_training_logs_its_rate_and_changes_the_update(run_config, tmp_path):
    cfg = run_config(tmp_path / "gkd", max_steps=2)
    cfg["train"]["on_policy"] = {"lmbda": 1.0, "max_new_tokens": 8}
    train(cfg, quiet=True)
    rows = _log(LLMRunDir(tmp_path / "gkd"))
    assert [float(r["on_policy"]) for r in rows] == [1.0, 1.0]
    off = run_config(tmp_path / "off", max_steps=2)
    train(off, quiet=True)
    assert "on_policy" not in _log(LLMRunDir(tmp_path / "off"))[0]  # lmbda 0: the old loop
    a = load_causal_lm(tmp_path / "gkd" / "final").state_dict()
    b = load_causal_lm(tmp_path / "off" / "final").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_on_policy_resume_continues_exactly(run_config, tmp_path):
    """Two steps in one go, or one step, a stop, and a resumed second step: the same draws,
    the same samples, the same weights (the teacher scores the same sequences)."""
    mix = {"lmbda": 0.5, "max_new_tokens": 8, "temperature": 1.2, "top_k": 50, "top_p": 0.95}

    def config(name, steps):
        cfg = run_config(tmp_path / name, max_steps=steps)
        cfg["train"]["on_policy"] = dict(mix)
        return cfg

    train(config("straight", 3), quiet=True)
    train(config("split", 2), quiet=True)
    train(config("split", 3), resume=True, quiet=True, extend=True)  # a finished run, continued
    straight, split = LLMRunDir(tmp_path / "straight"), LLMRunDir(tmp_path / "split")
    rates = [float(r["on_policy"]) for r in _log(straight)]
    assert 0 < sum(rates) < len(rates)  # some micro-batches were sampled, some were not
    assert [r["on_policy"] for r in _log(split)] == [r["on_policy"] for r in _log(straight)]
    a = load_causal_lm(straight.final).state_dict()
    b = load_causal_lm(split.final).state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("on_policy", "match"),
    [
        ({"lmbda": 1.5}, r"lmbda must be in \[0, 1\]"),
        ({"lmbda": 0.5, "max_new_tokens": 0}, "max_new_tokens >= 1"),
        ({"lmbda": 0.5, "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"lmbda": 0.5, "temperature": 0}, "temperature > 0"),
    ],
)
def test_bad_on_policy_options_are_refused(on_policy, match):
    with pytest.raises(ConfigError, match=match):
        bind_config({"train": {"on_policy": on_policy}})


def test_on_policy_needs_a_teacher():
    with pytest.raises(ValueError, match=r"needs a teacher.*loss.kd_ratio > 0"):
        bind_config({"loss": {"kd_ratio": 0.0}, "train": {"on_policy": {"lmbda": 0.5}}})


def test_defaults_leave_existing_configs_off_policy():
    cfg = bind_config({})
    assert cfg.train.on_policy.lmbda == 0.0 and cfg.model.vocab == "strict"
    assert cfg.model.lora is None


def test_shipped_on_policy_and_lora_configs():
    from pathlib import Path

    from eakd.config import load_config, to_dict
    from eakd.engines.run import config_diff

    root = Path(__file__).resolve().parents[3] / "configs" / "llm" / "dolly"
    off = bind_config(load_config(root / "ea_kd" / "gpt2-xl_gpt2.yaml"))
    on = bind_config(load_config(root / "on_policy_ea_kd" / "gpt2-xl_gpt2.yaml"))
    # the one config compares the paper's recipe with on-policy EA-KD: nothing else differs
    assert set(config_diff(to_dict(off), to_dict(on))) == {
        "name",
        "train.on_policy.lmbda",
        "train.on_policy.max_new_tokens",
    }
    assert on.train.on_policy.lmbda == 0.5 and on.ea.enabled
    lora = bind_config(load_config(root / "ea_kd_lora" / "qwen2.5-7b_qwen2.5-1.5b.yaml"))
    assert lora.model.vocab == "trim" and lora.model.teacher_dtype == "bfloat16"
    assert lora.model.lora.r == 16 and lora.model.lora.target_modules == "all-linear"
