"""The transformers engine on tiny random Llama models: data, objective, training, Rouge-L."""

from __future__ import annotations

import copy
import csv
import json
import math
import stat
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("rouge_score")

from eakd._atomic import new_file_mode
from eakd.config import ConfigError
from eakd.core import EASettings
from eakd.engines.llm import (
    DistillationObjective,
    Example,
    LLMRunDir,
    LossConfig,
    build_prompt,
    collate_train,
    encode_example,
    evaluate,
    evaluate_rouge,
    layer_subset_student,
    load_causal_lm,
    load_instructions,
    rouge_l,
    train,
)
from eakd.engines.llm.evaluate import GenerationConfig
from eakd.engines.run import CheckpointError, RunExists


def test_prompt_and_prompt_masking(loaded):
    tok = loaded["tokenizer"]
    ex = Example("Say hello.", "", ("Hello there!",))
    assert build_prompt("Say hello.").endswith("### Instruction:\nSay hello.\n\n### Response:\n")
    assert "### Input:\nctx" in build_prompt("Do it.", "ctx")
    enc = encode_example(ex, tok, max_length=512, max_prompt_length=256)
    n_prompt = len(tok(build_prompt("Say hello."))["input_ids"])
    assert enc.labels[:n_prompt] == [-100] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert enc.input_ids[-1] == tok.eos_token_id  # EOS appended to the response
    assert tok.decode(enc.input_ids[n_prompt:-1]) == "Hello there!"
    short = encode_example(ex, tok, max_length=7, max_prompt_length=5)
    assert len(short.input_ids) == 7 and short.labels[:5] == [-100] * 5
    batch = collate_train([enc, short], tok)
    assert batch["input_ids"].shape == (2, len(enc.input_ids))
    assert bool((batch["labels"][1, 7:] == -100).all())
    assert batch["attention_mask"][1].sum() == 7


def test_dolly_loading_and_errors(tmp_path, dolly_file):
    examples = load_instructions(dolly_file)
    assert len(examples) == 6 and examples[2].context == "The sky is blue."
    with pytest.raises(FileNotFoundError, match="instruction.*context.*response"):
        load_instructions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match="missing key 'instruction'"):
        load_instructions(bad)
    multi = tmp_path / "multi.jsonl"
    multi.write_text(json.dumps({"instruction": "i", "input": "", "output": ["a", "b"]}) + "\n")
    assert load_instructions(multi)[0].references == ("a", "b")


def _batch(tok, examples):
    return collate_train([encode_example(e, tok) for e in examples], tok)


@pytest.mark.parametrize("granularity", ["item", "sequence"])
def test_objective_full_and_chunked_paths_agree(loaded, dolly_file, granularity):
    tok, teacher = loaded["tokenizer"], loaded["teacher"]
    student = copy.deepcopy(loaded["student"])
    batch = _batch(tok, load_instructions(dolly_file)[:3])
    out = {}
    for chunk in (None, 7):
        cfg = LossConfig(divergence="jsd", params={"beta": 0.2}, kd_ratio=0.7, chunk_size=chunk)
        ea = EASettings(enabled=True, granularity=granularity, temperature=2.0)
        obj = DistillationObjective(student, teacher, cfg, ea)
        student.zero_grad()
        terms = obj(batch)
        terms["loss"].backward()
        grads = [p.grad.clone() for p in student.parameters()]
        out[chunk] = (terms, grads)
    (a, ga), (b, gb) = out[None], out[7]
    for key in ("loss", "distill", "ce"):
        torch.testing.assert_close(a[key].detach(), b[key].detach(), rtol=1e-5, atol=1e-6)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in teacher.parameters())


def test_objective_num_items_under_accumulation(loaded, dolly_file):
    tok, teacher = loaded["tokenizer"], loaded["teacher"]
    student = copy.deepcopy(loaded["student"])
    examples = load_instructions(dolly_file)[:4]
    ea = EASettings(enabled=True, granularity="sequence", temperature=1.0)
    obj = DistillationObjective(student, teacher, LossConfig(), ea)
    full = _batch(tok, examples)
    student.zero_grad()
    obj(full)["loss"].backward()
    g_full = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    n = int((full["labels"][:, 1:] != -100).sum())
    for part in (examples[:1], examples[1:]):  # uneven micro-batches
        obj(_batch(tok, part), num_items=n)["loss"].backward()
    for x, p in zip(g_full, student.parameters(), strict=True):
        torch.testing.assert_close(p.grad, x, rtol=1e-4, atol=1e-7)


def test_vocabulary_mismatch_is_a_clear_error(tiny_models, loaded):
    teacher = loaded["teacher"]
    other = load_causal_lm(tiny_models["other_vocab"])
    with pytest.raises(ValueError, match="same tokenizer and vocabulary"):
        DistillationObjective(other, teacher, LossConfig())


def test_layer_subset_student_keeps_chosen_layers(loaded):
    teacher = loaded["teacher"]
    student = layer_subset_student(teacher, [0, 2])
    assert len(student.model.layers) == 2 and student.config.num_hidden_layers == 2
    torch.testing.assert_close(
        student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight
    )
    assert len(teacher.model.layers) == 3  # the teacher is untouched
    ids = torch.tensor([[1, 2, 3]])
    out = student.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 6)
    with pytest.raises(ValueError, match="distinct indices"):
        layer_subset_student(teacher, [0, 5])


def _config(tiny_models, dolly_file, out, **train):
    """A config whose run directory is ``out``."""
    return {
        "name": out.name,
        "output_dir": str(out.parent),
        "model": {"teacher": str(tiny_models["teacher"]), "student": str(tiny_models["student"])},
        "data": {"train": str(dolly_file), "valid_size": 2, "max_length": 160},
        "loss": {"divergence": "forward_kl", "chunk_size": 16},
        "ea": {"enabled": True, "granularity": "sequence", "temperature": 1.0},
        "train": {
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "max_steps": 2,
            "lr": 1e-3,
            "device": "cpu",
            "log_every_steps": 1,
            "save_every_steps": 1,
            "select_best": False,
            **train,
        },
        "eval": {
            "datasets": {"tiny": str(dolly_file)},
            "seeds": [1, 2],
            "max_new_tokens": 6,
            "max_examples": 3,
            "batch_size": 3,
        },
    }


def test_two_step_training_checkpoints_and_resume(tiny_models, dolly_file, tmp_path):
    out = tmp_path / "run"
    result = train(_config(tiny_models, dolly_file, out), quiet=True)
    assert result["steps"] == 2
    assert all(row["loss"] > 0 for row in result["history"])
    run = LLMRunDir(out)
    state = json.loads((run.last / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert (run.last / "model" / "config.json").is_file() and (run.last / "state").is_dir()
    assert [int(r["step"]) for r in csv.DictReader(run.train_log.open())] == [1, 2]
    final = load_causal_lm(out / "final")  # save_pretrained layout, loads back
    before = {k: v.clone() for k, v in load_causal_lm(tiny_models["student"]).state_dict().items()}
    assert any(not torch.equal(before[k], v) for k, v in final.state_dict().items())
    # the run finished: a longer schedule is refused where it would change the learning rate
    # of the steps taken (cosine), and needs --extend where it extends exactly (constant)
    with pytest.raises(ConfigError, match="cosine schedule over 2 steps"):
        train(_config(tiny_models, dolly_file, out, max_steps=3), resume=True, quiet=True)
    out = tmp_path / "constant"
    run = LLMRunDir(out)
    train(_config(tiny_models, dolly_file, out, scheduler="constant"), quiet=True)
    longer = _config(tiny_models, dolly_file, out, max_steps=3, scheduler="constant")
    with pytest.raises(RunExists, match=r"finished run \(2 steps\).*--extend"):
        train(longer, resume=True, quiet=True)
    resumed = train(longer, resume=True, quiet=True, extend=True)
    assert resumed["steps"] == 3 and [r["step"] for r in resumed["history"]] == [1, 2, 3]
    assert json.loads((out / "results.step0000002.json").read_text())["steps"] == 2
    previous = json.loads((run.root / "checkpoints/last.prev/trainer_state.json").read_text())
    assert previous["step"] == 2
    assert json.loads((run.last / "trainer_state.json").read_text())["step"] == 3
    assert [int(r["step"]) for r in csv.DictReader(run.train_log.open())] == [1, 2, 3]
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(_config(tiny_models, dolly_file, tmp_path / "empty"), resume=True, quiet=True)


def test_results_hold_the_resolved_ea_settings(tiny_models, dolly_file, tmp_path):
    cfg = _config(tiny_models, dolly_file, tmp_path / "run", max_steps=1)
    cfg["ea"]["preset"] = "official"  # nothing to change without a classification method
    result = train(cfg, quiet=True)
    expected = EASettings(enabled=True, granularity="sequence", temperature=1.0, preset="official")
    expected = expected.replace(max_entropy=math.log(320))  # log V of the tiny vocabulary
    assert result["ea"] == expected.to_dict()
    run = LLMRunDir(tmp_path / "run")
    assert run.read_results()["ea"] == expected.to_dict()
    # saved models get the mode a plain open() gives (safetensors itself writes 0o600)
    weights = [*run.final.glob("*.safetensors"), *run.last.glob("model/*.safetensors")]
    assert weights and {stat.S_IMODE(p.stat().st_mode) for p in weights} == {new_file_mode()}


def test_an_existing_run_needs_resume_and_the_same_config(tiny_models, dolly_file, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_models, dolly_file, out, max_steps=1), quiet=True)
    with pytest.raises(RunExists, match="already holds a finished run .*--overwrite"):
        train(_config(tiny_models, dolly_file, out, max_steps=1), quiet=True)
    with pytest.raises(ConfigError, match=r"cannot resume .*train\.lr"):
        train(_config(tiny_models, dolly_file, out, max_steps=2, lr=0.1), resume=True, quiet=True)


@pytest.mark.parametrize(
    ("section", "key", "new"),
    [
        ("loss", "ea", "ea.enabled"),
        ("loss", "granularity", "ea.granularity"),
        ("loss", "entropy_temperature", "ea.temperature"),
        ("loss", "max_entropy", "ea.max_entropy"),
        ("loss", "kind", "ea.kind"),
        ("train", "mixed_precision", "train.precision"),
        ("train", "max_grad_norm", "train.grad_clip"),
        ("train", "output_dir", "output_dir and name"),
        ("train", "cpu", "train.device"),
    ],
)
def test_old_config_keys_name_their_new_keys(section, key, new):
    from eakd.engines.llm.config import bind_config

    with pytest.raises(ConfigError, match=rf"{section}\.{key} was renamed: use .*{new}"):
        bind_config({section: {key: None}})


def test_generation_and_rouge_l_over_seeds(tiny_models, loaded, dolly_file, tmp_path):
    assert rouge_l("the cat sat", ["the cat sat"]) == pytest.approx(100.0)
    assert rouge_l("the cat", ["dog", "the cat"]) == pytest.approx(100.0)  # max over references
    assert rouge_l("running cats", ["cat runs"]) == pytest.approx(50.0)  # stemming
    cfg = _config(tiny_models, dolly_file, tmp_path)
    cfg["eval"]["checkpoint"] = str(tiny_models["student"])
    result = evaluate(cfg, quiet=True)
    tiny = result["datasets"]["tiny"]
    assert set(tiny["per_seed"]) == {1, 2}
    assert all(0.0 <= v <= 100.0 for v in tiny["per_seed"].values())
    assert result["average"] == pytest.approx(tiny["mean"])
    assert json.loads((tmp_path / "eval.json").read_text())["average"] == pytest.approx(
        result["average"]
    )
    # the same seed gives the same samples
    model, tok = loaded["student"], loaded["tokenizer"]
    data = {"tiny": load_instructions(dolly_file)[:2]}
    gen = GenerationConfig(max_new_tokens=5, batch_size=2)
    a = evaluate_rouge(model, tok, data, gen, seeds=[3])
    b = evaluate_rouge(model, tok, data, gen, seeds=[3])
    assert a["samples"] == b["samples"]


def test_cli_rejects_unknown_config_keys(tiny_models, dolly_file, tmp_path, capsys):
    import yaml

    from eakd.cli.main import main

    cfg = _config(tiny_models, dolly_file, tmp_path)
    cfg["loss"]["temprature"] = 2.0
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["llm", "train", str(path)]) == 2
    assert "temprature" in capsys.readouterr().err


def test_shipped_llm_configs_bind_strictly():

    from eakd.config import load_config
    from eakd.engines.llm.config import bind_config

    root = Path(__file__).resolve().parents[3] / "configs" / "llm"
    paths = sorted(root.rglob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        assert path.read_text().startswith(f"# eakd llm train configs/llm/{path.relative_to(root)}")
        cfg = bind_config(load_config(path))
        assert cfg.train.precision == "fp32" and cfg.eval.seeds == [10, 20, 30, 40, 50]
        # the LLM recipes' T' and granularity, set explicitly (not the library's defaults)
        assert cfg.ea.temperature == 1.0 and cfg.ea.granularity == "sequence"
    ea = bind_config(load_config(root / "dolly" / "ea_kd" / "gpt2-xl_gpt2.yaml"))
    assert ea.ea.enabled and ea.loss.kd_ratio == 1.0


def test_student_cut_from_teacher_layers_trains_with_full_logits(tiny_models, dolly_file, tmp_path):
    cfg = _config(tiny_models, dolly_file, tmp_path / "cut", max_steps=1, save_every_steps=None)
    cfg["model"] = {"teacher": str(tiny_models["teacher"]), "student_layers": [0, 2]}
    cfg["loss"].update(chunk_size=None, kd_ratio=0.5, divergence="skew_reverse_kl")
    result = train(cfg, quiet=True)
    assert result["steps"] == 1 and result["history"][0]["ce"] > 0
    model = load_causal_lm(tmp_path / "cut" / "final")
    assert model.config.num_hidden_layers == 2


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
@pytest.mark.parametrize("chunk_size", [16, None], ids=["chunked", "full-logits"])
def test_two_ddp_processes_match_one_process(
    tiny_models, dolly_file, tmp_path, chunk_size, torchrun_train
):
    """torchrun with 2 CPU processes (gloo, through Accelerate) reaches the student weights of
    one process with the same global batch: the token-mean over the whole step (all
    micro-batches, all ranks) keeps sequence-level EA-KD exact under data parallelism."""
    single = _config(tiny_models, dolly_file, tmp_path / "one", batch_size=2, save_every_steps=0)
    multi = _config(tiny_models, dolly_file, tmp_path / "two", batch_size=1, save_every_steps=0)
    for cfg in (single, multi):
        cfg["eval"]["datasets"] = {}
        cfg["loss"]["chunk_size"] = chunk_size
    train(single, quiet=True)
    torchrun_train(multi)
    one = load_causal_lm(tmp_path / "one" / "final").state_dict()
    two = load_causal_lm(tmp_path / "two" / "final").state_dict()
    start = load_causal_lm(tiny_models["student"]).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in one.items())  # training moved them
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-5)


def test_cli_eval_prints_rouge_l_per_dataset(tiny_models, dolly_file, tmp_path, capsys):
    from eakd.cli.main import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(tiny_models, dolly_file, tmp_path / "run")))
    argv = ["llm", "eval", str(path), "eval.seeds=[3]", "--checkpoint", str(tiny_models["student"])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "Rouge-L" in out
    assert main(["llm", "eval", str(path)]) == 2  # no trained model in output_dir yet
    assert "checkpoint not found" in capsys.readouterr().err


def test_per_dataset_example_caps(tiny_models, dolly_file, tmp_path):
    """eval.max_examples caps every set; eval.dataset_max_examples caps named ones (UnNI's
    first 10k in the paper's setting); a cap for a set that is not evaluated is refused."""
    cfg = _config(tiny_models, dolly_file, tmp_path)
    cfg["eval"].update(
        checkpoint=str(tiny_models["student"]),
        datasets={"a": str(dolly_file), "b": str(dolly_file)},
        dataset_max_examples={"b": 2},
        seeds=[1],
    )
    result = evaluate(cfg, quiet=True)
    assert result["datasets"]["a"]["examples"] == 3  # eval.max_examples
    assert result["datasets"]["b"]["examples"] == 2
    cfg["eval"]["dataset_max_examples"] = {"c": 5}
    with pytest.raises(ValueError, match=r"names \['c'\], which are not in eval.datasets"):
        evaluate(cfg, quiet=True)


def test_a_damaged_last_folder_falls_back_to_the_previous_one(run_config, tmp_path, capsys):
    out = tmp_path / "run"
    straight = train(run_config(tmp_path / "straight"), quiet=True)
    train(run_config(out), quiet=True)
    run = LLMRunDir(out)
    run.results.unlink()  # a run stopped after its last save
    (run.last / "trainer_state.json").write_text("{")  # cut short
    resumed = train(run_config(out), resume=True, quiet=True)
    assert "cannot be read; resuming from the previous checkpoint last.prev (step 1)" in (
        capsys.readouterr().err
    )
    assert resumed["steps"] == 2
    a = load_causal_lm(Path(straight["final"])).state_dict()
    b = load_causal_lm(run.final).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
