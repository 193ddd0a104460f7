"""LoRA / QLoRA students in the LLM engine: only the adapter trains, checkpoints hold it in
PEFT's layout, resume restores it exactly, evaluation loads base + adapter; bad LoRA options
fail before any weights load."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("rouge_score")
pytest.importorskip("peft")

from eakd.config import ConfigError
from eakd.engines.llm import (
    LLMRunDir,
    LoraConfig,
    apply_lora,
    evaluate,
    load_adapter,
    load_causal_lm,
    train,
)
from eakd.engines.llm.config import bind_config
from eakd.engines.llm.models import check_lora_targets, lora_layer_names

LORA = {"r": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}


def _lora_config(run_config, out, lora=None, **train_kw):
    cfg = run_config(out, **train_kw)
    cfg["model"]["lora"] = dict(LORA if lora is None else lora)
    return cfg


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_apply_lora_trains_only_the_adapter(loaded):
    student = apply_lora(copy.deepcopy(loaded["student"]), LoraConfig(**LORA))
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # 2 layers x 3 targets x (A, B)
    assert len(trainable) == 2 * 3 * 2
    # B = 0 at first: the student starts as its base model
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(
        student(input_ids=ids).logits, loaded["student"](input_ids=ids).logits, rtol=0, atol=0
    )


@pytest.mark.parametrize("chunk_size", [16, None], ids=["chunked", "full-logits"])
def test_lora_run_saves_adapters_and_keeps_the_base(run_config, tiny_models, tmp_path, chunk_size):
    out = tmp_path / "lora"
    cfg = _lora_config(run_config, out)
    cfg["loss"]["chunk_size"] = chunk_size
    result = train(cfg, quiet=True)
    assert result["steps"] == 2
    run = LLMRunDir(out)
    for folder in (run.final, run.last / "model"):
        assert (folder / "adapter_config.json").is_file()
        assert (folder / "adapter_model.safetensors").is_file()
        assert not (folder / "model.safetensors").exists()  # the adapter only
    # Accelerate's state holds the optimiser etc. but no copy of the base weights
    assert not list((run.last / "state").glob("model*.safetensors"))
    config = json.loads((run.final / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    assert set(config["target_modules"]) == {"q_proj", "v_proj", "up_proj"}
    weights = _adapter(run.final)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # trained away from B = 0
    # base + adapter: the base weights are the student's own, unchanged
    base = load_causal_lm(tiny_models["student"])
    model = load_adapter(load_causal_lm(tiny_models["student"]), run.final)
    for name, p in model.get_base_model().named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            torch.testing.assert_close(p, base.state_dict()[key], rtol=0, atol=0)


def test_lora_resume_restores_the_adapter_exactly(run_config, tmp_path):
    straight = train(_lora_config(run_config, tmp_path / "straight"), quiet=True)
    assert straight["steps"] == 2
    train(_lora_config(run_config, tmp_path / "split", max_steps=1), quiet=True)
    resumed = train(  # the finished 1-step run, continued (a constant schedule extends exactly)
        _lora_config(run_config, tmp_path / "split"), resume=True, quiet=True, extend=True
    )
    assert resumed["steps"] == 2
    a = _adapter(LLMRunDir(tmp_path / "straight").final)
    b = _adapter(LLMRunDir(tmp_path / "split").final)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    # and the second step did move the adapter (the comparison is not between two copies of
    # step 1)
    one = train(_lora_config(run_config, tmp_path / "one", max_steps=1), quiet=True)
    assert one["steps"] == 1
    c = _adapter(LLMRunDir(tmp_path / "one").final)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_eval_loads_base_and_adapter_and_the_merged_model_matches(
    run_config, tiny_models, loaded, tmp_path
):
    out = tmp_path / "merge"
    lora = {**LORA, "save_merged": True}
    result = train(_lora_config(run_config, out, lora=lora, max_steps=1), quiet=True)
    run = LLMRunDir(out)
    assert result["merged"] == str(run.merged)
    assert (run.merged / "config.json").is_file() and not (
        run.merged / "adapter_config.json"
    ).exists()
    merged = load_causal_lm(run.merged)
    adapted = load_adapter(load_causal_lm(tiny_models["student"]), run.final)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    torch.testing.assert_close(
        merged(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=1e-5, atol=1e-5
    )
    base_logits = loaded["student"](input_ids=ids).logits
    assert not torch.allclose(merged(input_ids=ids).logits, base_logits, atol=1e-4)
    scores = evaluate(_lora_config(run_config, out, lora=lora, max_steps=1), quiet=True)
    assert scores["checkpoint"] == str(run.final)
    assert 0.0 <= scores["average"] <= 100.0
    via_merged = evaluate(
        _lora_config(run_config, out, lora=lora, max_steps=1),
        checkpoint=str(run.merged),
        quiet=True,
    )
    assert via_merged["samples"] == scores["samples"]


def test_unknown_target_modules_fail_before_weights_load(run_config, tmp_path, monkeypatch):
    engine = sys.modules["eakd.engines.llm.train"]  # the package's train is the function

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the config was checked")

    monkeypatch.setattr(engine, "load_causal_lm", no_loading)
    cfg = _lora_config(run_config, tmp_path / "bad", lora={**LORA, "target_modules": ["q_prj"]})
    with pytest.raises(ConfigError, match=r"\['q_prj'\].*layers are .*q_proj.*v_proj"):
        train(cfg, quiet=True)
    cfg = _lora_config(run_config, tmp_path / "bad2", lora={**LORA, "target_modules": "c_.*"})
    with pytest.raises(ConfigError, match=r"'c_\.\*' \(a regular expression.*matches no layer"):
        train(cfg, quiet=True)
    # EA options the chunked divergence cannot use also fail first
    cfg = _lora_config(run_config, tmp_path / "bad3")
    cfg["ea"]["normalize"] = True
    with pytest.raises(ValueError, match="normalize=false"):
        train(cfg, quiet=True)


def test_lora_target_matching_follows_peft(loaded):
    names = lora_layer_names(loaded["student"])
    assert "model.layers.0.self_attn.q_proj" in names and "lm_head" in names
    check_lora_targets(["q_proj", "self_attn.k_proj"], names)  # last components match
    check_lora_targets(r"model\.layers\.\d+\.mlp\.up_proj", names)  # a full-name regex
    check_lora_targets("all-linear", [])
    with pytest.raises(ConfigError, match=r"\['proj'\]"):
        check_lora_targets(["proj"], names)  # a partial component is not a match


def test_qlora_needs_cuda_and_bitsandbytes(run_config, tmp_path, monkeypatch):
    import importlib.util

    cfg = _lora_config(run_config, tmp_path / "q", lora={**LORA, "quantize": "4bit"})
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU.*train.device is cpu"):
        train(cfg, quiet=True)
    cfg["train"]["device"] = "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        train(cfg, quiet=True)


@pytest.mark.parametrize(
    ("lora", "match"),
    [
        ({"r": 0}, "r >= 1"),
        ({"dropout": 1.0}, r"dropout in \[0, 1\)"),
        ({"target_modules": []}, "target_modules is empty"),
        ({"quantize": "4bit", "save_merged": True}, "round the adapter"),
        ({"bias": "some"}, r"model.lora.bias must be one of"),
    ],
)
def test_bad_lora_options_are_refused(lora, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        bind_config({"model": {"student": "s", "lora": lora}})


def test_qlora_cannot_quantise_a_cut_student():
    with pytest.raises(ValueError, match="student_layers"):
        bind_config({"model": {"student_layers": [0], "lora": {"quantize": "4bit"}}})


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
def test_lora_under_two_ddp_processes_matches_one_process(run_config, tmp_path, torchrun_train):
    """DDP over a PEFT student (frozen base, trainable adapter) through Accelerate: 2 CPU
    processes reach the adapter of one process with the same global batch."""
    single = _lora_config(run_config, tmp_path / "one", batch_size=2, save_every_steps=0)
    multi = _lora_config(run_config, tmp_path / "two", batch_size=1, save_every_steps=0)
    train(single, quiet=True)
    torchrun_train(multi)
    one, two = _adapter(tmp_path / "one" / "final"), _adapter(tmp_path / "two" / "final")
    assert one.keys() == two.keys() and any(
        v.abs().sum() > 0 for k, v in one.items() if "lora_B" in k
    )
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
