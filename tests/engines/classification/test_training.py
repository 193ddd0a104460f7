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

from eakd.config import ConfigError, from_dict
from eakd.engines.classification import ExperimentConfig, resolve_ea, train
from eakd.engines.classification import task as task_module
from eakd.engines.run import CheckpointError, NonFiniteLoss, RunDir
from eakd.models import build_model, load_checkpoint

pytest.importorskip("mnist1d")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_models:Tiny1d is built by import path

from tiny_models import tiny_config


def make_cfg(tmp_path: Path, **sections) -> dict:
    """The tiny MNIST-1D run with EA on, the dataset cached next to ``tmp_path``."""
    sections.setdefault("ea", {"enabled": True})
    return tiny_config(tmp_path, tmp_path.parent / "mnist1d_cache", **sections)


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
    assert ("ea_weight_mean" in rows[0]) == (method != "vanilla")
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


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_bf16_autocast_on_cpu_trains_with_ea(tmp_path, method):
    """train.precision=bf16 on CPU: bf16 logits take the per-item EA path and training still
    learns; fp16 on CPU is refused with the fix."""
    loss = {"dkd": {"beta": 2.0}}.get(method, {})
    cfg = make_cfg(tmp_path, method={"name": method, "loss": loss}, train={"precision": "bf16"})
    res = train(cfg, quiet=True)
    assert all(h["train_loss"] == h["train_loss"] for h in res["history"])  # no NaN
    assert res["best_top1"] > 10.0  # above chance (10 classes)
    bad = make_cfg(tmp_path / "fp16", train={"precision": "fp16"})
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device .* use precision=bf16"):
        train(bad, quiet=True)


def test_an_unknown_method_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"method\.name must be one of \['vanilla', 'kd'"):
        from_dict(ExperimentConfig, {"method": {"name": "kdd"}})
    with pytest.raises(
        ConfigError, match=r"method\.name=ea_kd is not a method: .* ea\.enabled=true"
    ):
        from_dict(ExperimentConfig, {"method": {"name": "ea_kd"}})


def test_the_old_amp_key_names_train_precision(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.train\.amp was renamed: use train\.precision"):
        from_dict(ExperimentConfig, make_cfg(tmp_path, train={"amp": "bf16"}))
    with pytest.raises(ConfigError, match=r"train\.precision must be one of \['fp32'"):
        from_dict(ExperimentConfig, make_cfg(tmp_path, train={"precision": "none"}))


def test_the_run_records_the_resolved_ea_settings(tmp_path):
    """ea.preset=official for KD on 10 classes resolves H_ub to the released code's 100;
    results.json and the resumable state hold the resolved settings."""
    cfg = make_cfg(tmp_path, ea={"enabled": True, "preset": "official"}, train={"epochs": 1})
    assert resolve_ea(from_dict(ExperimentConfig, cfg), 10).max_entropy == 100.0
    res = train(cfg, quiet=True)
    run = RunDir(tmp_path / "runs" / "run")
    recorded = run.read_results()["ea"]
    assert recorded == res["ea"]
    assert recorded["enabled"] is True and recorded["max_entropy"] == 100.0
    assert recorded["temperature"] == 3.0 and recorded["weight_logits"] == "raw"
    assert torch.load(run.last, weights_only=True)["ea"] == recorded


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
    with pytest.raises(ConfigError, match=r"config differs .* in optim\.lr"):
        train(changed, resume=True, quiet=True)
    bf16 = make_cfg(tmp_path, train={"epochs": 1, "precision": "bf16"})
    with pytest.raises(ConfigError, match=r"config differs .* in train\.precision;"):
        train(bf16, resume=True, quiet=True)
    with pytest.raises(FileExistsError, match="already holds a finished run .* --overwrite"):
        train(make_cfg(tmp_path, train={"epochs": 1}), quiet=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(make_cfg(tmp_path / "other"), resume=True, quiet=True)
    # a resumable key may change: the finished run resumes with nothing left to train, and
    # none of its files is rewritten
    run = RunDir(tmp_path / "runs" / "run")
    files = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    done = train(make_cfg(tmp_path, train={"epochs": 1, "progress": True}), resume=True, quiet=True)
    assert [h["epoch"] for h in done["history"]] == [1]
    assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == files


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
    with pytest.raises(
        NonFiniteLoss, match=r"epoch 2, step 1; .* checkpoint is .*last\.pt \(epoch 1\)"
    ):
        train(make_cfg(tmp_path, train={"epochs": 3}), resume=True, quiet=True, extend=True)
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["epoch"] == 1


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

    root = Path(__file__).resolve().parents[3] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 80
    models = set(list_models())

    def known(name: str) -> bool:  # a zoo model, or an external timm:/torchvision: name
        return name in models or name.split(":", 1)[0] in ("timm", "torchvision")

    for path in files:
        text = path.read_text()
        assert text.startswith("# "), f"{path} must start with the command that runs it"
        data = yaml.safe_load(text)
        if "method" not in data or "student" not in data:
            continue  # another engine's config (detection, LLM) is validated by its own tests
        cfg = from_dict(ExperimentConfig, data, where=str(path.relative_to(root)))
        assert known(cfg.student.name), path
        assert cfg.teacher is not None or cfg.method.name == "vanilla", path
        if cfg.teacher is not None:
            assert known(cfg.teacher.name), path
        if cfg.method.name not in ("vanilla", "mld", "reviewkd", "fcfd"):  # built with models
            build_loss(cfg.method.name, **cfg.method.loss)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (gloo) reaches the weights of one process with the same
    data.batch_size, the global batch (no BatchNorm, so per-rank statistics cannot differ)."""
    common = {
        "student": {"kwargs": {"width": 8, "bn": False}},
        "teacher": {"kwargs": {"width": 8, "bn": False}},
    }
    single = make_cfg(tmp_path / "single", **common, data={"batch_size": 50})
    train(single, quiet=True)
    multi = make_cfg(tmp_path / "multi", **common, data={"batch_size": 50})  # global batch
    cfg_path = tmp_path / "multi.yaml"
    cfg_path.write_text(yaml.safe_dump(multi))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[3] / "src"), str(Path(__file__).parent)]
        ),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
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
    # the per-epoch EA diagnostics cover the whole training set, not rank 0's half
    diag = {}
    for name in ("single", "multi"):
        lines = (tmp_path / name / "runs/run/diagnostics.jsonl").read_text().splitlines()
        diag[name] = [json.loads(line) for line in lines]
    for one, two in zip(diag["single"], diag["multi"], strict=True):
        assert sum(two["hist_count"]) == sum(one["hist_count"]) == 400
        assert two["weight_mean"] == pytest.approx(one["weight_mean"], rel=1e-4)
        assert two["weight_max"] == pytest.approx(one["weight_max"], rel=1e-4)
        assert two["weight_min"] == pytest.approx(one["weight_min"], rel=1e-4)


def test_global_batch_must_divide_over_the_processes(tmp_path):
    from eakd.engines.classification.train import _build_data
    from eakd.engines.utils import DistContext

    cfg = from_dict(ExperimentConfig, make_cfg(tmp_path, data={"batch_size": 25}))
    with pytest.raises(ValueError, match=r"batch_size=25 is the global batch .* 2 processes"):
        _build_data(cfg, DistContext(rank=0, world_size=2))
    cfg = from_dict(ExperimentConfig, make_cfg(tmp_path, data={"batch_size": 24}))
    loaders = [_build_data(cfg, DistContext(rank=r, world_size=2))[:2] for r in (0, 1)]
    first = [next(iter(train))[1] for train, _ in loaders]
    assert [len(y) for y in first] == [12, 12]  # 24 split over 2 ranks
    # evaluation shards cover the test split exactly once, without padding
    counts = [sum(len(y) for _, y in test) for _, test in loaders]
    assert sum(counts) == len(loaders[0][1].dataset)


def test_sequence_granularity_is_refused_for_classification():
    with pytest.raises(ConfigError, match="ea.granularity must be 'item' in classification"):
        from_dict(
            ExperimentConfig,
            {"teacher": {"name": "resnet8x4"}, "ea": {"enabled": True, "granularity": "sequence"}},
        )
