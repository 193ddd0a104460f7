"""``eakd detect ...`` and the detection demo, end to end on tiny data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re

import yaml
from detection_helpers import TINY_MODEL

from eakd.cli.main import main
from eakd.demos.detection import DemoSettings, demo_configs, run_demo
from eakd.engines.detection.config import load_detection_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def write_config(shapes, tmp_path) -> str:
    cfg = {
        "student": TINY_MODEL,
        "data": {**shapes, "batch_size": 4, "workers": 0},
        "optim": {"lr": 0.01, "max_iters": 1, "warmup_iters": 1, "milestones": []},
        "name": "run",
        "output_dir": str(tmp_path),
        "train": {"progress": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_detect_train_then_eval(shapes, tmp_path, capsys):
    path = write_config(shapes, tmp_path)
    assert main(["detect", "train", path, "train.log_every=1"]) == 0
    out = capsys.readouterr().out
    assert "| AP | AP50 | AP75 |" in out and "checkpoints/final.pt" in out
    assert main(["detect", "train", path]) == 2  # the folder already holds a run
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["detect", "eval", path]) == 0
    assert "| AP | AP50 | AP75 |" in capsys.readouterr().out
    report = json.load(open(tmp_path / "run" / "eval.json"))
    assert report["checkpoint"].endswith("checkpoints/final.pt") and "AP50" in report
    # a finished run continues to a larger optim.max_iters only with --extend
    assert main(["detect", "train", path, "optim.max_iters=2", "--resume"]) == 2
    assert "pass --extend" in capsys.readouterr().err
    assert main(["detect", "train", path, "optim.max_iters=2", "--extend"]) == 0
    assert "| AP | AP50 | AP75 |" in capsys.readouterr().out
    assert json.load(open(tmp_path / "run" / "results.json"))["iteration"] == 2
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2"]


def test_detect_errors_are_one_line_messages(shapes, tmp_path, capsys):
    path = write_config(shapes, tmp_path)
    assert main(["detect", "train", path, "optim.lrr=1"]) == 2
    assert "unknown key 'lrr' in config.optim" in capsys.readouterr().err
    assert main(["detect", "eval", path, f"output_dir={tmp_path / 'empty'}"]) == 2
    assert "no checkpoints/final.pt or checkpoints/last.pt" in capsys.readouterr().err
    assert main(["detect", "train", path, "--resume"]) == 2
    assert "cannot resume: no checkpoint at" in capsys.readouterr().err
    assert main(["detect", "train", path, "run.precision=bf16"]) == 2
    assert "train.precision" in capsys.readouterr().err
    assert main(["detect", "train", str(tmp_path / "absent.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_make_shapes_writes_a_coco_dataset(tmp_path, capsys):
    out = tmp_path / "shapes"
    code = main(
        [
            "detect",
            "make-shapes",
            str(out),
            "--train",
            "3",
            "--val",
            "2",
            "--image-size",
            "48",
            "--no-fashion-mnist",
        ]
    )
    assert code == 0
    data = json.load(open(out / "annotations" / "instances_val.json"))
    assert len(data["images"]) == 2 and data["images"][0]["width"] == 48
    assert len(os.listdir(out / "train")) == 3
    assert "val_annotations" in capsys.readouterr().out


def test_demo_prints_its_table(tmp_path, capsys):
    tiny = DemoSettings(
        num_train=8, num_val=4, image_size=64, object_size=(12, 28), fashion_mnist=False,
        batch_size=4, teacher_iters=2, student_iters=2,
        teacher={"backbone": "mobilenet_v3_small", "fpn_channels": 16, "representation_size": 32},
        student={"backbone": "mobilenet_v3_small", "fpn_channels": 8, "representation_size": 16},
    )  # fmt: skip
    assert run_demo(argparse.Namespace(output=str(tmp_path)), tiny) == 0
    out = capsys.readouterr().out
    table = {}
    for method in ("teacher", "plain", "KD", "EA-KD"):
        row = rf"\| mobilenet_v3_small \| {method} \| ([\d.]+) \| [\d.]+ \| [\d.]+ \| \d+ \|"
        found = re.search(row, out)
        assert found, method
        table[method] = found.group(1)
    assert "EA-KD - KD:" in out
    assert os.path.isfile(tmp_path / "ea_kd" / "train_log.csv")
    # a second call reuses the finished runs and prints the same numbers
    assert run_demo(argparse.Namespace(output=str(tmp_path)), tiny) == 0
    again = capsys.readouterr().out
    for method, ap in table.items():
        assert re.search(rf"\| {method} \| {ap} \| [\d.]+ \| [\d.]+ \| reused \|", again), method
    # other settings retrain the runs they change
    changed = dataclasses.replace(tiny, student_iters=1)
    assert run_demo(argparse.Namespace(output=str(tmp_path)), changed) == 0
    again = capsys.readouterr().out
    assert re.search(r"\| teacher \| [\d.]+ \| [\d.]+ \| [\d.]+ \| reused \|", again)
    assert re.search(r"\| plain \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ \|", again)
    # --fresh retrains everything
    assert run_demo(argparse.Namespace(output=str(tmp_path), fresh=True), changed) == 0
    assert "reused" not in capsys.readouterr().out


def test_demo_config_files_match_the_demo():
    settings = DemoSettings()
    paths = {
        "train_images": "data/shapes/train",
        "train_annotations": "data/shapes/annotations/instances_train.json",
        "val_images": "data/shapes/val",
        "val_annotations": "data/shapes/annotations/instances_val.json",
    }
    expected = demo_configs(
        paths, "runs/detection_demo", settings, "runs/detection_demo/teacher/checkpoints/final.pt"
    )
    for name, cfg in expected.items():
        path = os.path.join(ROOT, "configs", "detection_demo", f"{name}.yaml")
        loaded = load_detection_config(path)
        cfg.train.progress = loaded.train.progress
        assert loaded.to_dict() == cfg.to_dict(), name
