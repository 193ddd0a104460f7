"""End-to-end training runs on small MNIST-1D data: every method, resume, errors, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from eakd.config import from_dict
from eakd.engines.classification import ExperimentConfig, TrainingDiverged, train
from eakd.engines.classification import task as task_module
from eakd.models import build_model, load_checkpoint

pytest.importorskip("mnist1d")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_models:Tiny1d is built by import path


def make_cfg(tmp_path: Path, **sections) -> dict:
    cfg = {
        "name": "run",
        "output_dir": str(tmp_path / "runs"),
        "student": {"name": "tiny_models:Tiny1d", "kwargs": {"width": 8}},
        "teacher": {"name": "tiny_models:Tiny1d", "kwargs": {"width": 8}},
        "data": {
            "name": "mnist1d",
            "root": str(tmp_path.parent / "mnist1d_cache"),
            "batch_size": 25,
            "test_batch_size": 200,
            "num_workers": 0,
            "augment": "none",
            "options": {"num_samples": 500},
        },
        "method": {"name": "kd", "ce_weight": 0.5, "kd_weight": 0.5},
        "ea": {"enabled": True},
        "optim": {"lr": 0.3, "schedule": "cosine", "milestones": []},
        "train": {"epochs": 2, "progress": False, "threads": 1},
        "log": {"tensorboard": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


@pytest.mark.parametrize(
    ("method", "ea"),
    [
        ("vanilla", False),
        ("kd", False),
        ("kd", True),
        ("dkd", True),
        ("ctkd", True),
        ("ttm", True),
        ("wttm", False),
    ],
)
def test_each_method_trains_and_writes_its_files(tmp_path, method, ea):
    loss = {"dkd": {"beta": 2.0}, "ttm": {"gamma": 0.5}}.get(method, {})
    cfg = make_cfg(tmp_path, method={"name": method, "loss": loss}, ea={"enabled": ea})
    res = train(cfg, quiet=True)
    run = tmp_path / "runs" / "run"
    assert json.loads((run / "results.json").read_text())["best_top1"] == res["best_top1"]
    assert len(res["history"]) == 2 and res["best_top1"] > 10.0  # above chance (10 classes)
    rows = (run / "train_log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,lr,train_loss")
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["name"] == method
    # the checkpoint is an mdistiller-style {"model": state_dict} that loads into a bare model
    model = build_model("tiny_models:Tiny1d", num_classes=10, width=8)
    load_checkpoint(model, run / "checkpoints" / "last.pt")
    if method != "vanilla":
        diag = [json.loads(line) for line in (run / "diagnostics.jsonl").read_text().splitlines()]
        assert [d["epoch"] for d in diag] == [1, 2]
        assert sum(diag[0]["hist_count"]) == 400  # 16 batches of 25 training samples
        if ea:
            assert 0 < diag[0]["weight_min"] <= diag[0]["weight_mean"] <= diag[0]["weight_max"]
        else:
            assert diag[0]["weight_mean"] == pytest.approx(1.0)
        assert (run / "entropies" / "teacher.pt").exists()
    assert (run / "entropies" / "student_epoch0002.pt").exists()


def test_resume_continues_exactly(tmp_path, monkeypatch):
    full = make_cfg(tmp_path / "a", train={"epochs": 3})
    res_full = train(full, quiet=True)
    stopped = make_cfg(tmp_path / "b", train={"epochs": 3})
    original = task_module.ClassificationTask.set_epoch

    def crash_at_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # the run stops after epoch 2's checkpoint
        original(self, epoch)

    monkeypatch.setattr(task_module.ClassificationTask, "set_epoch", crash_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(stopped, quiet=True)
    monkeypatch.setattr(task_module.ClassificationTask, "set_epoch", original)
    res_resumed = train(stopped, resume=True, quiet=True)
    assert [h["test_top1"] for h in res_resumed["history"]] == [
        h["test_top1"] for h in res_full["history"]
    ]
    a = torch.load(tmp_path / "a/runs/run/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/runs/run/checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    log = (tmp_path / "b/runs/run/train_log.csv").read_text().strip().splitlines()
    assert len(log) == 4  # header + 3 epochs, no duplicate rows


def test_resume_refuses_a_different_config(tmp_path):
    train(make_cfg(tmp_path, train={"epochs": 1}), quiet=True)
    changed = make_cfg(tmp_path, train={"epochs": 2}, optim={"lr": 0.1})
    with pytest.raises(ValueError, match=r"config differs .* in optim\.lr"):
        train(changed, resume=True, quiet=True)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(make_cfg(tmp_path, train={"epochs": 1}), quiet=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(make_cfg(tmp_path / "other"), resume=True, quiet=True)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    train(make_cfg(tmp_path, train={"epochs": 1}), quiet=True)
    last = tmp_path / "runs/run/checkpoints/last.pt"
    before = last.read_bytes()
    original = task_module.ClassificationTask.forward

    def poisoned(self, batch):
        out = original(self, batch)
        if self.epoch == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(task_module.ClassificationTask, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1.*last\.pt \(epoch 1\)"):
        train(make_cfg(tmp_path, train={"epochs": 3}), resume=True, quiet=True)
    assert last.read_bytes() == before


def test_teacher_with_another_class_count_is_refused(tmp_path):
    wrong = build_model("tiny_models:Tiny1d", num_classes=7, width=8)
    path = tmp_path / "teacher.pt"
    torch.save({"model": wrong.state_dict()}, path)
    cfg = make_cfg(tmp_path, teacher={"checkpoint": str(path)})
    with pytest.raises(ValueError, match="7"):
        train(cfg, quiet=True)


def test_every_shipped_config_validates():
    from eakd.losses import build_loss
    from eakd.models import list_models

    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 80
    models = set(list_models())
    for path in files:
        text = path.read_text()
        assert text.startswith("# "), f"{path} must start with the command that runs it"
        data = yaml.safe_load(text)
        if "method" not in data or "student" not in data:
            continue  # another engine's config (detection, LLM) is validated by its own tests
        cfg = from_dict(ExperimentConfig, data, where=str(path.relative_to(root)))
        assert cfg.student.name in models, path
        assert cfg.teacher.name in models, path
        if cfg.method.name not in ("vanilla", "mld", "reviewkd", "fcfd"):  # built with models
            build_loss(cfg.method.name, **cfg.method.loss)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (gloo) reaches the weights of one process with the same
    global batch (no BatchNorm, so per-rank statistics cannot differ)."""
    common = {
        "student": {"kwargs": {"width": 8, "bn": False}},
        "teacher": {"kwargs": {"width": 8, "bn": False}},
    }
    single = make_cfg(tmp_path / "single", **common, data={"batch_size": 50})
    train(single, quiet=True)
    multi = make_cfg(tmp_path / "multi", **common, data={"batch_size": 25})
    cfg_path = tmp_path / "multi.yaml"
    cfg_path.write_text(yaml.safe_dump(multi))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[2] / "src"), str(Path(__file__).parent)]
        ),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "eakd.cli",
        "train",
        str(cfg_path),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    a = torch.load(tmp_path / "single/runs/run/checkpoints/last.pt", weights_only=False)
    b = torch.load(tmp_path / "multi/runs/run/checkpoints/last.pt", weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5)
    assert abs(a["history"][-1]["test_top1"] - b["history"][-1]["test_top1"]) < 1.0
