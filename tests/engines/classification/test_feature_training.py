"""ReviewKD and FCFD through the classification engine on tiny random CIFAR-10 files: a 2-step
run of each, exact resume of FCFD's bridges and path statistics, and two DDP processes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eakd.engines.classification import train

ROOT = Path(__file__).resolve().parents[3]
# one OpenMP thread, like the feature-loss tests (tests/losses/feature/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory) -> Path:
    """20 training images (5 batches of 4) and 10 test images of random pixels."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def dump(name, n, start):
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [(start + i) % 10 for i in range(n)]
        with (folder / name).open("wb") as fh:
            pickle.dump({"data": rows, "labels": labels}, fh)

    for i in range(1, 6):
        dump(f"data_batch_{i}", 4, i)
    dump("test_batch", 10, 0)
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return root


def make_cfg(tmp_path: Path, data_root: Path, method: str, ea: bool, **sections) -> dict:
    loss = {"fcfd": {"temperature": 4.0, "l2_weight": 5.0, "warmup_epochs": 2}}.get(method, {})
    cfg = {
        "name": "run",
        "output_dir": str(tmp_path / "runs"),
        "student": {"name": "resnet8"},
        "teacher": {"name": "resnet14"},
        "data": {
            "name": "cifar10",
            "root": str(data_root),
            "batch_size": 10,
            "test_batch_size": 10,
            "num_workers": 0,
            "augment": "none",
        },
        "method": {
            "name": method,
            "ce_weight": 1.0,
            "kd_weight": 5.0 if method == "reviewkd" else 1.0,
            "warmup_epochs": 2 if method == "reviewkd" else 0,
            "loss": loss,
        },
        "ea": {"enabled": ea},
        "optim": {"lr": 0.05, "nesterov": True, "schedule": "constant", "milestones": []},
        "train": {"epochs": 1, "progress": False, "threads": 1},
        "log": {"tensorboard": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value}
    return cfg


@pytest.mark.parametrize("method", ["reviewkd", "fcfd"])
@pytest.mark.parametrize("ea", [False, True])
def test_two_training_steps(tmp_path, cifar10, method, ea):
    res = train(make_cfg(tmp_path, cifar10, method, ea), quiet=True)
    run = tmp_path / "runs" / "run"
    (row,) = res["history"]
    assert np.isfinite(row["train_loss"]) and row["train_kd"] > 0
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    keys = state["objective"].keys()
    if method == "reviewkd":  # the ABF modules (inside the EA wrapper when on)
        assert any(k.startswith(("abfs.", "loss.abfs.")) for k in keys)
    else:  # bridges and per-path statistics
        assert any(k.startswith("to_teacher.") for k in keys)
        assert any(k.startswith("path_stats.") for k in keys)
    (diag,) = [json.loads(line) for line in (run / "diagnostics.jsonl").read_text().splitlines()]
    assert sum(diag["hist_count"]) == 20  # two steps of 10 samples
    if ea:
        assert diag["weight_min"] > 0 and diag["weight_mean"] != pytest.approx(1.0)
    else:
        assert diag["weight_mean"] == pytest.approx(1.0)


def test_fcfd_resume_is_exact(tmp_path, cifar10):
    full = train(make_cfg(tmp_path / "a", cifar10, "fcfd", True, train={"epochs": 3}), quiet=True)
    part = make_cfg(tmp_path / "b", cifar10, "fcfd", True, train={"epochs": 2})
    train(part, quiet=True)
    part["train"]["epochs"] = 3  # a finished run continued: multistep extends exactly
    resumed = train(part, resume=True, quiet=True, extend=True)
    assert resumed["history"][-1]["train_loss"] == pytest.approx(
        full["history"][-1]["train_loss"], rel=1e-5
    )
    a = torch.load(tmp_path / "a/runs/run/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/runs/run/checkpoints/last.pt", weights_only=True)
    for part_name in ("model", "objective"):
        for k, v in a[part_name].items():
            torch.testing.assert_close(b[part_name][k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
@pytest.mark.parametrize("method", ["reviewkd", "fcfd"])
def test_two_ddp_processes(tmp_path, cifar10, method):
    """Each rank draws the same FCFD paths (same seed), and the teacher->student bridges no path
    used still take part in every step, so DDP finds no unused parameters."""
    cfg = make_cfg(tmp_path, cifar10, method, True, data={"batch_size": 6})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--standalone", "-m", "eakd.cli", "train", str(path), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads((tmp_path / "runs" / "run" / "results.json").read_text())
    assert len(res["history"]) == 1 and np.isfinite(res["history"][0]["train_loss"])
