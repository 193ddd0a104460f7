"""Every expected failure of an ``eakd`` command is one line on stderr, ``eakd: error: ...``,
with a non-zero exit status (2: could not run as asked, 1: the run failed, 130: interrupted)
and no traceback; ``--debug`` or ``EAKD_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from eakd.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines" / "classification"))
from tiny_models import tiny_config


def run(argv, capsys) -> tuple[int, str]:
    """``eakd ARGV`` in-process: (exit status, the one error message)."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert err.startswith("eakd: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return status, err.removeprefix("eakd: error: ").strip()


def write(path: Path, cfg: dict) -> Path:
    path.write_text(f"# eakd train {path.name}\n" + yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny(tmp_path):
    """A one-epoch MNIST-1D baseline (no teacher) of the engine tests' Tiny1d."""
    pytest.importorskip("mnist1d")
    cfg = tiny_config(tmp_path, tmp_path / "cache", "tiny", method={"name": "vanilla"})
    cfg.pop("teacher")
    cfg["train"]["epochs"] = 1
    return cfg


#: Every command that reads a config file.
CONFIG_COMMANDS = [
    ["train"],
    ["sweep"],
    ["ablate"],
    ["detect", "train"],
    ["detect", "eval"],
    ["llm", "train"],
    ["llm", "eval"],
]


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_unknown_config_key(tmp_path, capsys, command):
    cfg = write(tmp_path / "bad.yaml", {"nonsense": 1})
    status, err = run([*command, cfg], capsys)
    assert status == 2 and err.startswith("unknown key 'nonsense' in config; valid keys: ")


def test_unknown_config_key_suggests_the_near_one(tmp_path, capsys):
    cfg = write(tmp_path / "bad.yaml", {"method": {"name": "vanilla"}, "optim": {"lrr": 0.1}})
    status, err = run(["train", cfg], capsys)
    assert status == 2 and "unknown key 'lrr' in config.optim (did you mean 'lr'?)" in err


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_missing_config_file(tmp_path, capsys, command):
    status, err = run([*command, tmp_path / "missing.yaml"], capsys)
    assert status == 2 and err == f"config file not found: {tmp_path / 'missing.yaml'}"


def test_missing_dataset_names_the_layout(tmp_path, capsys):
    cfg = {
        "method": {"name": "vanilla"},
        "student": {"name": "resnet8"},
        "data": {"name": "cifar100", "root": str(tmp_path / "nowhere")},
        "output_dir": str(tmp_path / "runs"),
    }
    status, err = run(["train", write(tmp_path / "c.yaml", cfg), "--quiet"], capsys)
    assert status == 2 and "cifar-100-python" in err and "never downloads" in err


def test_missing_or_corrupt_checkpoint_for_eval(tmp_path, capsys):
    status, err = run(["eval", tmp_path / "none.pt"], capsys)
    assert status == 2 and "not found" in err and "none.pt" in err
    bad = tmp_path / "bad.pt"
    torch.save({"arch": "resnet8", "model": {"w": torch.zeros(1000)}}, bad)
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated write
    status, err = run(["eval", bad], capsys)
    assert status == 2 and str(bad) in err and "truncated or not a torch checkpoint" in err


def test_resume_without_a_checkpoint(tmp_path, capsys, tiny):
    status, err = run(["train", write(tmp_path / "c.yaml", tiny), "--resume", "--quiet"], capsys)
    assert status == 2 and "cannot resume" in err and "last.pt" in err


def test_a_diverging_run_names_the_step(tmp_path, capsys, tiny):
    tiny["optim"] = {**tiny["optim"], "lr": 1e30}
    status, err = run(["train", write(tmp_path / "c.yaml", tiny), "--quiet"], capsys)
    assert status == 1 and err.startswith("non-finite loss") and "epoch 1, step" in err


@pytest.mark.parametrize(
    "exc, status, message",
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (
            ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"),
            2,
            "No module named 'matplotlib'; install the analysis extra: "
            "pip install 'eakd[analysis]'",
        ),
        (
            ImportError("reading configs needs PyYAML: pip install 'eakd[vision]'"),
            2,
            "reading configs needs PyYAML: pip install 'eakd[vision]'",
        ),
    ],
)
def test_interrupts_and_missing_extras(monkeypatch, capsys, exc, status, message):
    def fail():
        raise exc

    monkeypatch.setattr("eakd.losses.list_losses", fail)
    assert run(["list", "losses"], capsys) == (status, message)


def test_an_import_error_that_is_not_a_missing_extra_keeps_its_traceback(monkeypatch):
    def fail():
        raise ImportError("cannot import name 'x' from 'eakd.core'", name="eakd.core")

    monkeypatch.setattr("eakd.losses.list_losses", fail)
    with pytest.raises(ImportError, match="cannot import name"):
        main(["list", "losses"])


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_reraises(tmp_path, monkeypatch, where):
    missing = str(tmp_path / "missing.yaml")
    argv = {
        "before": ["--debug", "train", missing],
        "after": ["train", missing, "--debug"],
        "env": ["train", missing],
    }[where]
    if where == "env":
        monkeypatch.setenv("EAKD_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        main(argv)


def test_the_console_command_prints_the_traceback_with_debug(tmp_path):
    argv = [sys.executable, "-m", "eakd.cli", "train", str(tmp_path / "missing.yaml"), "--debug"]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        "Traceback" in result.stderr and "FileNotFoundError: config file not found" in result.stderr
    )
