"""``eakd demo --task detection``: EA-KD for Faster R-CNN FPN, offline, on 2 CPU cores.

It generates the shapes dataset (:mod:`.synthetic`, written in COCO format and read back by the
same loader as COCO), trains a MobileNetV3-Large FPN teacher, then a MobileNetV3-Small FPN
student three ways (plain, KD, EA-KD on the RoI classification logits) and prints COCO AP /
AP50 / AP75 for each. Everything runs through the same ``train`` function as
``eakd detect train``; the equivalent config files are in ``configs/detection_demo/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..core import EASettings
from ..engines.detection.config import (
    DataConfig,
    DetectionConfig,
    DistillConfig,
    OptimConfig,
    TrainConfig,
)
from ..engines.detection.model import ModelConfig
from ..engines.run import RunDir

__all__ = ["DemoSettings", "demo_configs", "run_demo"]

_ANCHORS = [[16], [32], [64], [128]]
_SMALL_IMAGES = {
    "anchor_sizes": _ANCHORS,
    "returned_layers": [2, 3, 4],
    "rpn_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    "box_batch_size_per_image": 64,
    "trainable_layers": 6,
}


@dataclass
class DemoSettings:
    """Sizes and schedule of the demo (tuned to finish within 10 minutes on 2 CPU cores)."""

    num_train: int = 1500
    num_val: int = 250
    image_size: int = 128
    object_size: tuple[int, int] = (16, 48)
    fashion_mnist: bool | None = None
    batch_size: int = 8
    teacher_iters: int = 700
    student_iters: int = 400
    teacher_lr: float = 0.04
    student_lr: float = 0.04
    kd_temperature: float = 1.0
    kd_weight: float = 1.0
    ea_temperature: float = 3.0
    seed: int = 0
    teacher: dict[str, Any] = field(
        default_factory=lambda: {
            "backbone": "mobilenet_v3_large",
            "fpn_channels": 64,
            "representation_size": 128,
        }
    )
    student: dict[str, Any] = field(
        default_factory=lambda: {
            "backbone": "mobilenet_v3_small",
            "fpn_channels": 32,
            "representation_size": 128,
        }
    )


def _model(spec: dict[str, Any], size: int, checkpoint: str | None = None) -> ModelConfig:
    sizes = {"min_size": [size], "max_size": size}
    return ModelConfig(**{**_SMALL_IMAGES, "norm": "bn", **sizes, **spec, "checkpoint": checkpoint})


def demo_configs(
    paths: dict[str, str], out: str, s: DemoSettings, teacher_checkpoint: str
) -> dict[str, DetectionConfig]:
    """The four runs, in ``out/<name>``: ``teacher``, then the student with ``plain``, ``kd``
    and ``ea_kd``."""
    data = DataConfig(**paths, batch_size=s.batch_size, eval_batch_size=16, workers=0)
    # a checkpoint every 100 iterations: a stopped demo resumes where it was
    train = TrainConfig(seed=s.seed, log_every=50, checkpoint_every=100, eval_every=0)

    def optim(lr: float, iters: int) -> OptimConfig:
        return OptimConfig(
            lr=lr,
            weight_decay=1e-4,
            max_iters=iters,
            warmup_iters=min(100, iters // 4),
            warmup_factor=0.01,
            milestones=[int(iters * 0.75)],
        )

    student = _model(s.student, s.image_size)
    teacher = _model(s.teacher, s.image_size, teacher_checkpoint)
    kd = DistillConfig(loss="kd", loss_kwargs={"temperature": s.kd_temperature}, weight=s.kd_weight)
    ea = EASettings(enabled=True, temperature=s.ea_temperature)

    def config(name: str, **sections: Any) -> DetectionConfig:
        return DetectionConfig(
            name=name, output_dir=out, data=data, train=replace(train), **sections
        )

    runs = {
        "teacher": config(
            "teacher",
            student=_model(s.teacher, s.image_size),
            optim=optim(s.teacher_lr, s.teacher_iters),
        )
    }
    for name, distill, weights in (("plain", None, None), ("kd", kd, None), ("ea_kd", kd, ea)):
        runs[name] = config(
            name,
            student=student,
            teacher=teacher if distill is not None else None,
            distill=distill,
            ea=weights or EASettings(),
            optim=optim(s.student_lr, s.student_iters),
        )
    return runs


def _table(rows: list[tuple[str, str, dict[str, float], float | None]]) -> str:
    lines = [
        "| model | training | AP | AP50 | AP75 | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for model, method, m, sec in rows:
        scores = " | ".join(f"{m[k]:.2f}" for k in ("AP", "AP50", "AP75"))
        took = "reused" if sec is None else f"{sec:.0f}"
        lines.append(f"| {model} | {method} | {scores} | {took} |")
    return "\n".join(lines)


def _data(out: str, s: DemoSettings, fresh: bool) -> dict[str, str]:
    """Generate the dataset, or reuse the one in ``out`` when it was made with these settings."""
    import json

    from ..engines.detection.synthetic import make_shapes_dataset

    root = os.path.join(out, "data")
    recipe = {
        "num_train": s.num_train,
        "num_val": s.num_val,
        "image_size": s.image_size,
        "object_size": list(s.object_size),
        "fashion_mnist": s.fashion_mnist,
        "seed": s.seed,
    }
    stamp = os.path.join(root, "recipe.json")
    if not fresh and os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == recipe:
                return {
                    "train_images": os.path.join(root, "train"),
                    "train_annotations": os.path.join(root, "annotations", "instances_train.json"),
                    "val_images": os.path.join(root, "val"),
                    "val_annotations": os.path.join(root, "annotations", "instances_val.json"),
                }
    if os.path.isdir(root) and os.listdir(root):
        if not os.path.isfile(stamp):  # not the demo's: never delete it
            raise FileExistsError(
                f"{root} exists and was not made by the detection demo (no recipe.json); move "
                "it away or choose another --output"
            )
        shutil.rmtree(root)  # the demo's own dataset, made with other settings
    paths = make_shapes_dataset(
        root,
        s.num_train,
        s.num_val,
        s.image_size,
        object_size=s.object_size,
        fashion_mnist=s.fashion_mnist,
        seed=s.seed,
    )
    from ..engines.run import write_json

    write_json(stamp, recipe)
    return paths


def _run(cfg: DetectionConfig, fresh: bool) -> tuple[dict[str, float], float | None]:
    """Train ``cfg``; a finished run with the same config is reused, a stopped one resumed."""
    from ..engines.detection.train import FINAL, train
    from ..engines.run import load_state

    run = cfg.run_dir
    final = run.checkpoint(FINAL)
    replace = fresh
    if not fresh and run.results.is_file() and final.is_file():
        if load_state(final)["config"] == cfg.to_dict():
            metrics = run.read_results()["metrics"]
            return {k: metrics[k] for k in ("AP", "AP50", "AP75")}, None
        replace = True  # the demo's own run, made with other settings
    resume = not replace and run.holds_run()
    if resume and load_state(run.last)["config"] != cfg.to_dict():
        resume, replace = False, True  # stopped with other settings
    result = train(cfg, resume=resume, overwrite=replace)
    return result["metrics"], result["seconds"]


def run_demo(args: argparse.Namespace | None = None, settings: DemoSettings | None = None) -> int:
    """Run the demo and print its table; returns the exit status.

    ``args.output`` is the folder for data, logs and checkpoints (default
    ``runs/demo/detection``); finished runs found there with the same settings are reused
    (shown as ``reused``) unless ``args.fresh``. One seed per method (the demo has a
    10-minute budget); ``args.seeds`` does not apply.
    """
    import torch

    s = settings or DemoSettings()
    out = getattr(args, "output", None) or os.path.join("runs", "demo", "detection")
    fresh = bool(getattr(args, "fresh", False))
    start = time.perf_counter()
    print(
        f"EA-KD detection demo: Faster R-CNN FPN, {s.teacher['backbone']} teacher -> "
        f"{s.student['backbone']} student, {torch.get_num_threads()} CPU threads"
    )
    paths = _data(out, s, fresh)
    from ..engines.detection.data import load_coco_annotations
    from ..engines.detection.train import FINAL

    names = [c["name"] for c in load_coco_annotations(paths["val_annotations"])["categories"]]
    print(
        f"data: {s.num_train} train / {s.num_val} val images of {s.image_size} px, "
        f"{len(names)} classes ({', '.join(names)}), COCO format in {paths['val_annotations']}"
    )
    teacher_ckpt = str(RunDir(os.path.join(out, "teacher")).checkpoint(FINAL))
    configs = demo_configs(paths, out, s, teacher_ckpt)
    labels = {
        "teacher": (s.teacher["backbone"], "teacher"),
        "plain": (s.student["backbone"], "plain"),
        "kd": (s.student["backbone"], "KD"),
        "ea_kd": (s.student["backbone"], "EA-KD"),
    }
    rows = []
    for name, cfg in configs.items():
        model, method = labels[name]
        elapsed = time.perf_counter() - start
        print(f"[{elapsed:5.0f}s] {model} ({method}), {cfg.optim.max_iters} iterations")
        metrics, seconds = _run(cfg, fresh)
        rows.append((model, method, metrics, seconds))
    total = time.perf_counter() - start
    print()
    print(_table(rows))
    by = {r[1]: r[2] for r in rows}
    print(
        f"\nEA-KD - KD: {by['EA-KD']['AP'] - by['KD']['AP']:+.2f} AP, "
        f"{by['EA-KD']['AP50'] - by['KD']['AP50']:+.2f} AP50 (one seed each: differences of a "
        f"few AP are within seed-to-seed variation at this size; KD T={s.kd_temperature:g}, "
        f"weight {s.kd_weight:g}; EA T'={s.ea_temperature:g}, H_ub = log(K+1))"
    )
    print(f"total {total:.0f} s; data, logs and checkpoints in {out}")
    return 0
