"""The per-epoch figures of runs that kept snapshots (``log.save_epochs``): loss landscapes,
Area@level over epochs and t-SNE at each saved epoch (EA-KD Figures 7, B1b, B2)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eakd.analysis import EPOCH_FIGURES, analyze, checkpoint_name, find_runs
from eakd.analysis.landscape import filter_normalized_direction, loss_surface
from eakd.analysis.metrics import area_below
from eakd.cli.main import main
from eakd.models import build_model, load_checkpoint

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

PNG = b"\x89PNG\r\n\x1a\n"
GRID, RANGE = 3, 0.5
#: every training sample (400 of the 500), so the landscape batches are the training set in order
SAMPLES = 400
SMALL = {
    "tsne_points": 60,
    "landscape_grid": GRID,
    "landscape_range": RANGE,
    "landscape_samples": SAMPLES,
}


@pytest.fixture(scope="module")
def snap_sweep(tmp_path_factory, make_config, teacher_ckpt) -> Path:
    """KD and EA-KD students over 3 epochs, keeping snapshots at epochs 1 and 3."""
    from eakd.engines.classification import run_sweep

    root = tmp_path_factory.mktemp("snap_sweep")
    cfg = make_config(
        root,
        "sweep",
        teacher={"checkpoint": str(teacher_ckpt)},
        train={"epochs": 3},
        log={"save_epochs": [1, 3]},
    )
    _, sweep_dir = run_sweep(cfg, [0], ["method=kd,ea_kd"])
    return sweep_dir


@pytest.fixture(scope="module")
def snap_report(snap_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("snap_figures")
    return analyze([snap_sweep], out, **SMALL)


def _surface(model, batches) -> np.ndarray:
    """The landscape of ``model`` as the analysis defines it (seeds 0 and 1, the grid above)."""
    xs = np.linspace(-RANGE, RANGE, GRID)
    d1 = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    d2 = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    return loss_surface(model, batches, (d1, d2), xs)


def _train_batches(run) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All training samples in order, with the test-time transform, in test-size batches."""
    from eakd.data import build_dataset, build_transform

    d = run.config["data"]
    tf = build_transform(d["name"], "test")
    ds = build_dataset(d["name"], d["root"], "train", transform=tf, **d["options"])
    assert len(ds) == SAMPLES
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))])
    y = torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])
    bs = d["test_batch_size"]
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]


def _section(report: str, name: str) -> str:
    """The report's section of figure ``name``."""
    what = EPOCH_FIGURES[name][1]
    return report.split(f"## {what[0].upper()}{what[1:]}\n", 1)[1].split("\n## ", 1)[0]


def test_the_epoch_figures_follow_landscape_and_tsne(snap_report):
    assert [(f.name, f.path is not None) for f in snap_report.figures] == [
        ("loss_share", True),
        ("segments", True),
        ("entropy_boxes", True),
        ("tsne", True),
        ("tsne_epochs", True),
        ("time", True),
        ("sensitivity", False),  # nothing swept
        ("landscape", True),
        ("landscape_epochs", True),
        ("area_epochs", True),
    ]
    text = snap_report.report.read_text()
    for name, (file_name, what) in EPOCH_FIGURES.items():
        data = (snap_report.out_dir / file_name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
        assert f"![{name}]({file_name})" in text and what[1:] in text
    # a row per student and saved epoch in the landscape and t-SNE sections' tables
    for name in ("landscape_epochs", "tsne_epochs"):
        rows = [line.split(" | ")[:2] for line in _section(text, name).splitlines()]
        assert [r for r in rows if r[0] in ("| KD", "| EA-KD")] == [
            ["| KD", "1"],
            ["| KD", "3"],
            ["| EA-KD", "1"],
            ["| EA-KD", "3"],
        ], name


def test_area_at_level_has_one_point_per_snapshot_with_the_landscape_numbers(
    snap_sweep, snap_report, teacher_ckpt
):
    runs = {r.base_label: r for r in find_runs([snap_sweep])}
    area = next(f for f in snap_report.figures if f.name == "area_epochs").data
    surfaces = next(f for f in snap_report.figures if f.name == "landscape_epochs").data
    assert sorted(area["area"]) == ["EA-KD", "KD"]
    batches = _train_batches(runs["KD"])
    expected_surfaces: dict[str, dict[int, np.ndarray]] = {}
    for label, run in runs.items():
        assert list(run.snapshots()) == [1, 3]
        expected_surfaces[label] = {}
        for epoch, path in run.snapshots().items():
            model = build_model("tiny_models:Tiny1d", num_classes=10, width=8)
            load_checkpoint(model, path)
            expected_surfaces[label][epoch] = _surface(model.eval(), batches)
            np.testing.assert_array_equal(
                surfaces["surfaces"][label][epoch], expected_surfaces[label][epoch]
            )
    teacher = build_model("tiny_models:Tiny1d", num_classes=10, width=16)
    load_checkpoint(teacher, teacher_ckpt)
    t_surface = _surface(teacher.eval(), batches)
    # the level: EA-KD's 1.6 at log 100 scaled to log 10, or the pooled 25th percentile when
    # no surface reaches it
    pooled = [s for by in expected_surfaces.values() for s in by.values()] + [t_surface]
    level = 1.6 / math.log(100) * math.log(10)
    if all(s.min() >= level for s in pooled):
        level = float(np.percentile(np.concatenate([s.ravel() for s in pooled]), 25))
    assert area["level"] == surfaces["level"] == level
    xs = np.linspace(-RANGE, RANGE, GRID)
    for label, by_epoch in expected_surfaces.items():
        assert area["area"][label] == {e: area_below(s, level, xs, xs) for e, s in by_epoch.items()}
    assert area["teacher"] == area_below(t_surface, level, xs, xs)
    # the report's table: one row per epoch, the teacher's Area minus each student's
    text = snap_report.report.read_text()
    kd, ea = area["area"]["KD"][3], area["area"]["EA-KD"][3]
    t = area["teacher"]
    assert f"| 3 | {kd:.4g} | {ea:.4g} | {t - kd:+.4g} | {t - ea:+.4g} |" in text


def test_the_tsne_at_each_epoch_has_a_panel_per_snapshot(snap_report):
    tsne = next(f for f in snap_report.figures if f.name == "tsne_epochs")
    assert {k: sorted(v) for k, v in tsne.data["ch_index"].items()} == {
        "KD": [1, 3],
        "EA-KD": [1, 3],
    }
    assert all(v > 0 for by in tsne.data["ch_index"].values() for v in by.values())
    text = snap_report.report.read_text()
    assert "| KD | 1 | top 10 % H_S |" in text and "| EA-KD | 3 | top 10 % w_EA |" in text


def test_the_checkpoint_option_takes_a_snapshot_by_its_epoch(snap_sweep, tmp_path, capsys):
    assert [checkpoint_name(w) for w in (40, "40", "epoch40", "epoch0040")] == ["epoch0040"] * 4
    assert checkpoint_name("best") == "best" and checkpoint_name("last") == "last"
    for bad in ("first", 0, "epoch-1", True):
        with pytest.raises(ValueError, match="checkpoint must be 'last', 'best' or the epoch"):
            checkpoint_name(bad)
    out = tmp_path / "ep1"
    args = ["analyze", str(snap_sweep), "--out", str(out), "--figures", "segments"]
    assert main([*args, "--checkpoint", "1"]) == 0
    assert "students use checkpoints/epoch0001.pt" in (out / "report.md").read_text()
    assert main([*args, "--checkpoint", "epoch0002"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoints/epoch0002.pt: its snapshots are of epochs [1, 3]" in err


def test_runs_without_snapshots_get_no_epoch_figures(sweep, tmp_path):
    small = {**SMALL, "tsne_points": 30, "landscape_samples": 32}
    report = analyze([sweep], tmp_path / "all", ["landscape", "tsne"], **small)
    assert [f.name for f in report.figures] == ["landscape", "tsne"]
    with pytest.raises(ValueError, match="cannot draw area_epochs: no run kept per-epoch"):
        analyze([sweep], tmp_path / "one", ["area_epochs"])
    skipped = analyze([sweep], tmp_path / "one", ["tsne_epochs"], strict=False).figures[0]
    assert skipped.path is None and "log.save_epochs" in skipped.skipped
