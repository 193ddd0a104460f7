"""The training engine: smoke runs, exact resume, schedule, config validation, DDP."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
from detection_helpers import TINY_MODEL

from eakd.config import ConfigError, from_dict
from eakd.core import EASettings
from eakd.engines.detection import (
    DetectionConfig,
    DetectionDistiller,
    OptimConfig,
    load_detection_config,
    lr_factor,
    train,
)
from eakd.engines.run import CheckpointError, NonFiniteLoss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def tiny_config(shapes, out, iters: int = 2, **sections) -> DetectionConfig:
    """A tiny run whose run directory (output_dir/name) is ``out``."""
    data = {
        "train_images": shapes["train_images"],
        "train_annotations": shapes["train_annotations"],
        "val_images": shapes["val_images"],
        "val_annotations": shapes["val_annotations"],
        "batch_size": 4,
        "eval_batch_size": 8,
        "workers": 0,
    }
    raw = {
        "name": Path(out).name,
        "output_dir": str(Path(out).parent),
        "student": dict(TINY_MODEL),
        "data": data,
        "optim": {"lr": 0.01, "max_iters": iters, "warmup_iters": 2, "milestones": [3]},
        "train": {"log_every": 1, "checkpoint_every": 2, "progress": False},
        **sections,
    }
    return from_dict(DetectionConfig, raw)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def teacher_run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return train(tiny_config(shapes, out))


def test_plain_training_smoke(teacher_run):
    out = teacher_run["run_dir"]
    assert teacher_run["iteration"] == 2
    assert set(teacher_run["metrics"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    for name in (
        "config.yaml",
        "train_log.csv",
        "eval_log.csv",
        "checkpoints/last.pt",
        "checkpoints/final.pt",
        "results.json",
    ):
        assert os.path.isfile(os.path.join(out, name)), name
    log = rows(os.path.join(out, "train_log.csv"))
    assert [r["iteration"] for r in log] == ["1", "2"] and log[0]["loss_distill"] == ""
    assert all(float(r["loss"]) > 0 for r in log)
    assert not glob.glob(os.path.join(out, "*.tmp*"))
    ckpt = torch.load(teacher_run["last"], weights_only=False)
    assert ckpt["iteration"] == 2 and ckpt["classes"]["names"] == [
        "circle",
        "square",
        "triangle",
        "cross",
    ]
    assert {"model", "optimizer", "scheduler", "rng", "config"} <= set(ckpt)


def test_ea_kd_training_smoke(shapes, teacher_run, tmp_path):
    teacher = dict(TINY_MODEL, checkpoint=teacher_run["model"])
    distill = {"loss": "kd", "loss_kwargs": {"temperature": 1.0}}
    cfg = tiny_config(shapes, tmp_path, teacher=teacher, distill=distill, ea={"enabled": True})
    result = train(cfg)
    log = rows(os.path.join(tmp_path, "train_log.csv"))
    assert len(log) == 2
    for r in log:
        assert float(r["loss_distill"]) >= 0
        assert 0 <= float(r["ea_weight_mean"]) <= torch.log(torch.tensor(5.0)).item()
        assert float(r["teacher_entropy"]) > 0
    assert result["metrics"]["AP"] >= 0
    # results.json: the final metrics and the resolved EA settings (paper preset: H_ub = log(K+1))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (
        saved["ea"] == EASettings(enabled=True, max_entropy=math.log(5)).to_dict() == result["ea"]
    )
    assert saved["metrics"]["AP"] == result["metrics"]["AP"] and saved["method"] == "kd"


def test_resume_continues_exactly(shapes, tmp_path):
    straight = train(tiny_config(shapes, tmp_path / "a", iters=4))
    train(tiny_config(shapes, tmp_path / "b", iters=2))
    # the 2-iteration run finished: continuing it is an explicit extension (its results kept)
    with pytest.raises(FileExistsError, match=r"finished run \(2 iterations\).*--extend"):
        train(tiny_config(shapes, tmp_path / "b", iters=4), resume=True)
    resumed = train(tiny_config(shapes, tmp_path / "b", iters=4), resume=True, extend=True)
    assert resumed["iteration"] == 4
    assert json.loads((tmp_path / "b" / "results.iter0000002.json").read_text())["iteration"] == 2
    a = torch.load(straight["model"], weights_only=False)["model"]
    b = torch.load(resumed["model"], weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = rows(tmp_path / "a" / "train_log.csv"), rows(tmp_path / "b" / "train_log.csv")
    assert [r["iteration"] for r in lb] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_resume_with_another_config_is_refused(shapes, teacher_run):
    cfg = tiny_config(shapes, teacher_run["run_dir"], iters=4)
    cfg.optim.lr = 0.5
    with pytest.raises(ValueError, match=r"config differs from the stopped run's in optim.lr"):
        train(cfg, resume=True)
    with pytest.raises(CheckpointError, match=r"cannot resume: no checkpoint at .*last.pt"):
        train(tiny_config(shapes, Path(teacher_run["run_dir"]).parent / "absent"), resume=True)
    with pytest.raises(FileExistsError, match=r"already holds a finished run.*--overwrite"):
        train(cfg)


def test_non_finite_loss_stops_with_the_iteration(shapes, tmp_path, monkeypatch):
    forward = DetectionDistiller.forward

    def poisoned(self, images, targets=None):
        out = forward(self, images, targets)
        if self.training:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DetectionDistiller, "forward", poisoned)
    with pytest.raises(
        NonFiniteLoss, match=r"non-finite loss \(nan\) at step 1; no checkpoint was written yet"
    ):
        train(tiny_config(shapes, tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints" / "last.pt")


def test_warmup_and_multistep_schedule():
    o = OptimConfig(lr=0.1, warmup_iters=10, warmup_factor=0.001, milestones=[20, 30], gamma=0.1)
    assert lr_factor(0, o) == pytest.approx(0.001)
    assert lr_factor(5, o) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, o) == pytest.approx(1.0)
    assert lr_factor(19, o) == pytest.approx(1.0)
    assert lr_factor(20, o) == pytest.approx(0.1)
    assert lr_factor(35, o) == pytest.approx(0.01)


# ----------------------------------------------------------------------------- configs
def test_config_errors_name_the_key(shapes, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown key 'lrr' in config.optim \(did you mean 'lr'\?\); valid keys: "
    ):
        load_detection_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ValueError, match=r"config.optim.max_iters must be an integer, got 'many'"):
        load_detection_config(None, ["optim.max_iters=many"])
    with pytest.raises(ValueError, match=r"config.student.min_size\[0\] must be an integer"):
        load_detection_config(None, ["student.min_size=[a]"])
    with pytest.raises(ValueError, match=r"must look like key.path=value"):
        load_detection_config(None, ["optim.lr"])
    cfg = tiny_config(shapes, tmp_path, distill={"loss": "kd"})
    with pytest.raises(ValueError, match=r"distill needs a trained teacher"):
        cfg.validate()
    teacher = dict(TINY_MODEL, checkpoint=shapes["val_annotations"])
    distill = {"loss": "kd", "loss_kwargs": {"temprature": 2}}
    cfg = tiny_config(shapes, tmp_path, teacher=teacher, distill=distill)
    with pytest.raises(TypeError, match=r"unknown keyword 'temprature'"):
        cfg.validate()
    cfg = tiny_config(shapes, tmp_path, teacher=dict(TINY_MODEL))
    with pytest.raises(ValueError, match=r"no 'distill' section"):
        cfg.validate()


def test_renamed_keys_name_their_new_place():
    with pytest.raises(ConfigError, match=r"config.distill.ea was renamed: use the top-level ea:"):
        load_detection_config(None, ["distill.loss=kd", "distill.ea.enabled=true"])
    with pytest.raises(ConfigError, match=r"config.run was renamed: .*train.precision"):
        load_detection_config(None, ["run.precision=bf16"])
    with pytest.raises(
        ConfigError, match=r"config.run was renamed: run.output_dir is now output_dir"
    ):
        load_detection_config(None, ["run.output_dir=runs/x"])
    with pytest.raises(ConfigError, match=r"optim.clip_grad_norm was renamed: use train.grad_clip"):
        load_detection_config(None, ["optim.clip_grad_norm=1.0"])
    with pytest.raises(ValueError, match=r"ea.enabled weights a distillation term"):
        load_detection_config(None, ["ea.enabled=true"]).validate(check_files=False)


def test_results_hold_the_resolved_ea_settings(shapes, teacher_run, tmp_path):
    # the official preset resolves H_ub = 100 for KD below 1000 classes (here K + 1 = 5)
    teacher = dict(TINY_MODEL, checkpoint=teacher_run["model"])
    ea = {"enabled": True, "preset": "official"}
    cfg = tiny_config(shapes, tmp_path, iters=1, teacher=teacher, distill={"loss": "kd"}, ea=ea)
    train(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())["ea"]
    expected = EASettings(enabled=True, preset="official").resolve("kd", num_classes=5)
    assert saved == expected.to_dict() and saved["max_entropy"] == 100.0


def test_overrides_apply_to_nested_sections(shapes, tmp_path):
    cfg = load_detection_config(
        None, ["ea.enabled=true", "optim.milestones=[5, 9]", "student.backbone=resnet18"]
    )
    assert cfg.ea.enabled is True and cfg.optim.milestones == [5, 9]
    assert cfg.student.backbone == "resnet18" and cfg.teacher is None


@pytest.mark.parametrize(
    "path",
    [
        *sorted(glob.glob(os.path.join(ROOT, "configs", "coco", "*", "*.yaml"))),
        *sorted(glob.glob(os.path.join(ROOT, "configs", "detection_demo", "*.yaml"))),
    ],
)
def test_shipped_configs_bind_and_validate(path):
    first = open(path).readline()
    assert first.startswith("# eakd detect train "), "the first line gives the command"
    cfg = load_detection_config(path)
    cfg.validate(check_files=False)


def test_two_process_ddp_run(shapes, tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tiny_config(shapes, tmp_path, iters=2)
    mp.spawn(_ddp_worker, args=(2, port, cfg), nprocs=2, join=True)
    log = rows(tmp_path / "train_log.csv")
    assert [r["iteration"] for r in log] == ["1", "2"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["iteration"] == 2 and len(ckpt["rng"]) == 2
    assert os.path.isfile(tmp_path / "results.json")


def _ddp_worker(rank: int, world: int, port: int, cfg: DetectionConfig) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    result = train(cfg)
    import torch.distributed as dist

    assert result["iteration"] == 2
    dist.destroy_process_group()
