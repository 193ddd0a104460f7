"""``eakd demo`` (classification): a complete EA-KD experiment, offline, on 2 CPU cores.

A teacher CNN is trained once, then a narrower student of the same family with CE only, KD and
EA-KD over three seeds each, through the same training loop and sweep code as any experiment.
The table gives mean +/- std top-1 (best and last epoch) and EA-KD minus KD. The students keep
snapshots at three epochs spread over the schedule as the paper's 40, 120 and 240 of 240
(:func:`snapshot_epochs`), so the figures show them over training. Two datasets:
MNIST-1D (generated locally by the ``mnist1d`` package; the default) and Fashion-MNIST (the
Debian package ``dataset-fashion-mnist``). The settings were chosen so that distillation
demonstrably helps the student (KD beats CE-only on the mean over seeds); see
``scripts/explore_demo.py`` for how.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ..config import from_dict
from ..engines.classification.config import ExperimentConfig
from ..engines.classification.sweep import run_sweep, sweep_runs
from ..engines.run import RunDir

__all__ = ["DEMO_DATASETS", "demo_config", "run_demo", "snapshot_epochs"]

VARIANTS = ("vanilla", "kd", "ea_kd")
GRID = [f"method={','.join(VARIANTS)}"]
LABELS = {"vanilla": "CE only", "kd": "KD", "ea_kd": "EA-KD"}

#: Per dataset: data, models and recipe (what ``scripts/explore_demo.py`` settled on).
DEMO_DATASETS: dict[str, dict[str, Any]] = {
    "mnist1d": {
        "data": {
            "name": "mnist1d",
            "batch_size": 256,
            "test_batch_size": 1000,
            "num_workers": 0,
            "augment": "none",
            "options": {"num_samples": 12000, "train_split": 0.6667, "seed": 42},
        },
        "teacher": {"name": "cnn1d_w16"},
        "student": {"name": "cnn1d_w8"},
        "teacher_epochs": 20,
        "student_epochs": 15,
        "lr": 0.05,
    },
    "fashion_mnist": {
        "data": {
            "name": "fashion_mnist",
            "batch_size": 128,
            "test_batch_size": 1000,
            "num_workers": 0,
            "augment": "none",
            "options": {"subset": 6000, "seed": 42},
        },
        "teacher": {"name": "cnn2d_w16"},
        "student": {"name": "cnn2d_w4"},
        "teacher_epochs": 15,
        "student_epochs": 10,
        "lr": 0.05,
    },
}


def snapshot_epochs(epochs: int) -> list[int]:
    """The students' ``log.save_epochs``: the paper's epochs 40, 120 and 240 of 240 scaled to
    ``epochs`` (``round(epochs * f)`` for ``f`` in 1/6, 1/2, 1; 15 epochs: 2, 8, 15)."""
    return sorted({max(1, round(epochs * f)) for f in (40 / 240, 120 / 240, 1.0)})


def demo_config(dataset: str, out: Path, role: str, teacher_ckpt: str | None = None) -> dict:
    """The experiment config of the teacher run or of the student sweep."""
    spec = DEMO_DATASETS[dataset]
    teacher = role == "teacher"
    cfg: dict[str, Any] = {
        "name": "teacher" if teacher else "students",
        "output_dir": str(out),
        "student": copy.deepcopy(spec["teacher"] if teacher else spec["student"]),
        "teacher": None
        if teacher
        else {**copy.deepcopy(spec["teacher"]), "checkpoint": teacher_ckpt},
        "data": copy.deepcopy(spec["data"]),
        "method": {
            "name": "vanilla" if teacher else "kd",
            "ce_weight": 1.0,
            "kd_weight": 1.0,
            "loss": {} if teacher else {"temperature": 4.0},
        },
        "ea": {"enabled": False, "temperature": 3.0},
        "optim": {
            "lr": spec["lr"],
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "milestones": [],
        },
        "train": {
            "epochs": spec["teacher_epochs" if teacher else "student_epochs"],
            "seed": 0,
            "progress": False,
            "threads": 1,
        },
        "log": {"tensorboard": False, "entropy_bins": 1024},
    }
    if teacher:
        cfg.pop("teacher")
    else:  # snapshots are copies of the weights: the students train the same without them
        cfg["log"]["save_epochs"] = snapshot_epochs(cfg["train"]["epochs"])
    return cfg


def _train_job(job: tuple[dict, bool]) -> dict:
    from ..engines.classification.train import train

    cfg, resume = job
    return train(cfg, resume=resume, quiet=True)


def _jobs(base: dict, seeds: range) -> list[tuple[dict, bool]]:
    """The (config, resume) of every student run not finished yet (the sweep's runs)."""
    _, runs = sweep_runs(base, seeds, GRID)
    return [(data, run.holds_run()) for _, data, run in runs if not run.results.exists()]


def run_demo(args: argparse.Namespace | None = None) -> int:
    dataset = getattr(args, "dataset", None) or "mnist1d"
    seeds = range(getattr(args, "seeds", None) or 3)
    out = Path(getattr(args, "output", None) or Path("runs") / "demo" / dataset)
    if getattr(args, "fresh", False) and out.exists():
        # eakd's own runs and tables only: other files in the folder are never touched
        RunDir(out).remove_runs(also=("students/sweep.md", "students/sweep.csv"))
    workers = max(1, min(getattr(args, "workers", None) or (os.cpu_count() or 1), 4))
    began = time.time()
    print(
        f"EA-KD demo on {dataset}: a teacher, then CE-only / KD / EA-KD students over "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} (outputs in {out})"
    )

    teacher_cfg = demo_config(dataset, out, "teacher")
    from_dict(ExperimentConfig, teacher_cfg)  # validate before any work
    teacher = RunDir(out / teacher_cfg["name"])
    if teacher.results.exists():
        t_res = teacher.read_results()
        print(f"teacher: reusing {teacher.root} (top-1 {t_res['best_top1']:.2f}%)")
    else:
        t0 = time.time()
        t_res = _train_job((teacher_cfg, teacher.holds_run()))
        print(f"teacher trained in {time.time() - t0:.0f} s: top-1 {t_res['best_top1']:.2f}%")
    ckpt = str(teacher.best)

    base = demo_config(dataset, out, "students", ckpt)
    jobs = _jobs(base, seeds)
    t0 = time.time()
    if jobs:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(_train_job, jobs))
        else:
            for job in jobs:
                _train_job(job)
        print(f"{len(jobs)} student runs trained in {time.time() - t0:.0f} s ({workers} at once)")
    rows, sweep_dir = run_sweep(base, seeds, GRID, quiet=True)
    print()
    print(format_demo_table(rows, t_res["best_top1"]))
    print()
    print(
        f"done in {time.time() - began:.0f} s. Per-run logs, checkpoints and results: "
        f"{sweep_dir}/<variant>/seed<k>/; tables: {sweep_dir / 'sweep.md'}"
    )
    _figures(sweep_dir, out)
    return 0


def format_demo_table(rows: list[dict[str, Any]], teacher_top1: float) -> str:
    by = {r["variant"]: r for r in rows}
    lines = [
        f"teacher top-1: {teacher_top1:.2f}%",
        "",
        "| student | best top-1 (%) | last top-1 (%) | per seed (best) |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        r = by[v]
        seeds = ", ".join(f"{x:.2f}" for x in r["per_seed_best"])
        lines.append(
            f"| {LABELS[v]} | {r['best_mean']:.2f} +/- {r['best_std']:.2f} | "
            f"{r['last_mean']:.2f} +/- {r['last_std']:.2f} | {seeds} |"
        )
    kd, ea, ce = by["kd"], by["ea_kd"], by["vanilla"]
    lines += [
        "",
        f"KD - CE only:  best {kd['best_mean'] - ce['best_mean']:+.2f}, "
        f"last {kd['last_mean'] - ce['last_mean']:+.2f}",
        f"EA-KD - KD:    best {ea['best_mean'] - kd['best_mean']:+.2f}, "
        f"last {ea['last_mean'] - kd['last_mean']:+.2f}",
    ]
    return "\n".join(lines)


#: The demo draws the figures its runs support within its time budget (``tsne`` is followed by
#: the t-SNE at each saved epoch); the loss landscapes (about a minute of forward passes on 2
#: cores, three times that at the saved epochs) are left to ``eakd analyze``.
DEMO_FIGURES = ("loss_share", "segments", "entropy_boxes", "tsne", "time")


def _figures(sweep_dir: Path, out: Path) -> None:
    try:
        from ..analysis.analyze import DEMO_OPTIONS, analyze
    except ImportError:
        print("(figures: install the analysis extra, pip install 'eakd[analysis]')")
        return
    fig_dir = out / "figures"
    report = analyze(
        [sweep_dir], fig_dir, DEMO_FIGURES, None, None, **{**DEMO_OPTIONS, "tsne_points": 500}
    )
    names = ", ".join(p.name for p in report.paths if p.suffix == ".png")
    print(f"figures: {fig_dir} ({names}; numbers in report.md)")
    print(f"all figures, the loss landscape included: eakd analyze {sweep_dir}")
