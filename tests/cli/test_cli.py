"""The ``eakd`` command: help, list, the core demo, and user-facing errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eakd.cli import main


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "train", "eval", "sweep", "list"):
        assert cmd in out


def test_list_losses_and_models(capsys):
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    assert "dkd" in out and "mld_class" in out
    assert main(["list", "models"]) == 0
    assert "resnet32x4" in capsys.readouterr().out
    assert main(["list", "configs"]) == 0
    assert "configs/cifar100/ea_dkd/resnet32x4_resnet8x4.yaml" in capsys.readouterr().out


def test_core_demo_prints_the_quartile_table(capsys):
    assert main(["demo", "--task", "core"]) == 0
    out = capsys.readouterr().out
    assert "| Q4 |" in out and "EA-KD loss share" in out


def test_config_errors_are_reported_without_traceback(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("# eakd train bad.yaml\nmethod:\n  name: vanilla\noptim:\n  lrr: 0.1\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'lrr' in config.optim (did you mean 'lr'?)" in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_missing_dataset_names_the_layout(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "method: {name: vanilla}\nstudent: {name: resnet8}\n"
        f"data: {{name: cifar100, root: {tmp_path / 'nowhere'}}}\n"
        f"output_dir: {tmp_path / 'runs'}\n"
    )
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cifar-100-python" in err and "never downloads" in err


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "eakd.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("eakd ")


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[2] / "configs").glob("*/*/*.yaml"))[:1]
)
def test_config_overrides_are_validated(path, capsys):
    assert main(["train", str(path), "optim.momentum=fast"]) == 2
    assert "config.optim.momentum must be a number" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["list", "losses"], ["train", "/nonexistent/cfg.yaml"]])
def test_a_command_leaves_the_process_group_it_joined(tmp_path, argv, capsys):
    """Under torchrun a command joins a process group; ``main`` destroys it before returning,
    after success and after a reported error alike (a rank exiting with gloo's threads alive
    can abort)."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    assert dist.is_initialized()
    main(argv)
    assert not dist.is_initialized()


def test_eval_and_sweep_commands_on_a_tiny_run(tmp_path, capsys):
    """``eakd sweep`` writes its tables; ``eakd eval`` on a run's checkpoint defaults to the
    run's dataset, options and model kwargs and reproduces the run's recorded top-1."""
    pytest.importorskip("mnist1d")
    import yaml

    from eakd.engines.run import RunDir

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines" / "classification"))
    from tiny_models import tiny_config

    cfg = tiny_config(tmp_path, tmp_path / "cache", "cli", student={"kwargs": {"width": 6}})
    path = tmp_path / "cfg.yaml"
    path.write_text("# eakd sweep cfg.yaml\n" + yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--seeds", "1", "--grid", "method=kd,ea_kd"]) == 0
    out = capsys.readouterr().out
    assert "EA-KD" in out or "ea_kd" in out
    sweep_dir = tmp_path / "runs" / "cli"
    assert (sweep_dir / "sweep.md").is_file() and (sweep_dir / "sweep.csv").is_file()
    run = RunDir(sweep_dir / "ea_kd" / "seed0")
    results = run.read_results()
    assert results["ea"]["enabled"] is True
    assert RunDir(sweep_dir / "kd" / "seed0").read_results()["ea"]["enabled"] is False
    assert main(["eval", str(run.best)]) == 0
    line = capsys.readouterr().out
    assert f"top-1 {results['best_top1']:.2f}%" in line and "(100 samples)" in line
    assert main(["sweep", str(path), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
