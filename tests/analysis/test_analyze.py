"""Figures and reports from tiny MNIST-1D runs, and the recorded data they read."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from eakd.analysis import FIGURES, analyze, find_runs, group_runs, write_demo_figures
from eakd.analysis.forward import build_student, collect_outputs, find_teacher, split_loader
from eakd.analysis.metrics import (
    quantile_loss_shares,
    quantile_loss_shares_exact,
    quantile_share_uncertainty,
)
from eakd.cli.main import main

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

SMALL = [
    "--tsne-points",
    "60",
    "--landscape-grid",
    "3",
    "--landscape-samples",
    "64",
]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bins", [64, 200_000])
def test_loss_shares_from_a_run_match_the_per_sample_losses(
    tmp_path, monkeypatch, make_config, teacher_ckpt, bins
):
    from eakd.engines.classification import task as task_module
    from eakd.engines.classification import train

    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    original = task_module.ClassificationTask._record

    def capture(self, s, t, per_item, weights, hs=None, ht=None):
        h = ht if ht is not None else task_module.entropy(t, self.ea_temperature)
        seen.setdefault(self.epoch, []).append((h.detach().clone(), (per_item * weights).detach()))
        return original(self, s, t, per_item, weights, hs, ht)

    monkeypatch.setattr(task_module.ClassificationTask, "_record", capture)
    cfg = make_config(
        tmp_path,
        ea={"enabled": True},
        teacher={"checkpoint": str(teacher_ckpt)},
        log={"entropy_bins": bins},
    )
    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "runs/run/diagnostics.jsonl").open()]
    assert [r["epoch"] for r in rows] == sorted(seen) == [1, 2]
    for row in rows:
        ht = torch.cat([h for h, _ in seen[row["epoch"]]]).double().numpy()
        loss = torch.cat([v for _, v in seen[row["epoch"]]]).double().numpy()
        exact = quantile_loss_shares_exact(ht, loss)
        est = quantile_loss_shares(row["hist_count"], row["hist_weighted"])
        bound = quantile_share_uncertainty(row["hist_count"], row["hist_weighted"])
        assert est.sum() == pytest.approx(1.0)
        assert np.abs(est - exact).max() <= bound + 1e-6
        if bins > 1000:  # one sample per bin near every boundary: the histogram is exact
            assert bound < 1e-9
            np.testing.assert_allclose(est, exact, atol=1e-6)


def test_forward_passes_follow_the_recorded_test_order(sweep):
    runs = find_runs([sweep])
    run = next(r for r in runs if r.ea)
    teacher = find_teacher(runs).build(run.num_classes)
    out = collect_outputs(teacher, split_loader(run), torch.device("cpu"))
    recorded = run.teacher_entropies()
    torch.testing.assert_close(
        out.entropy(run.ea_settings.temperature), recorded, atol=2e-3, rtol=1e-3
    )
    student = collect_outputs(build_student(run), split_loader(run), torch.device("cpu"))
    last = max(run.student_entropies())
    torch.testing.assert_close(
        student.entropy(run.ea_settings.temperature),
        run.student_entropies()[last],
        atol=2e-3,
        rtol=1e-3,
    )
    assert student.features is not None and student.features.shape == (100, 8)
    acc = 100.0 * float(student.correct.float().mean())
    assert acc == pytest.approx(run.results["last_top1"])


def test_runs_are_grouped_and_labelled(sweep):
    groups = group_runs(find_runs([sweep]))
    assert [g.label for g in groups] == [
        "KD (temperature=2)",
        "KD (temperature=4)",
        "EA-KD (temperature=2)",
        "EA-KD (temperature=4)",
    ]
    assert all(len(g.runs) == 1 and g.representative.seed == 0 for g in groups)


def test_analyze_writes_every_figure_and_the_report(sweep, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["analyze", str(sweep), "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "skipped" not in printed
    for name, (file_name, _) in FIGURES.items():
        data = (out / file_name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    report = (out / "report.md").read_text()
    assert report.count("![") == len(FIGURES) and "Skipped" not in report
    # the sensitivity figure found the swept KD temperature on its own
    assert "method.loss.temperature" in report


def test_figures_can_be_chosen_and_unsupported_ones_fail_clearly(sweep, tmp_path, capsys):
    run = sweep / "ea_kd+method.loss.temperature=2" / "seed0"
    out = tmp_path / "one"
    assert main(["analyze", str(run), "--out", str(out), "--figures", "loss_share,time"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "loss_share.png",
        "report.md",
        "time_vs_accuracy.png",
    ]
    code = main(["analyze", str(run), "--out", str(out), "--figures", "sensitivity"])
    assert code == 2
    assert "cannot draw sensitivity: no hyper-parameter is swept" in capsys.readouterr().err
    report = analyze([run], out, ["sensitivity"], strict=False)
    assert report.figures[0].path is None and "no hyper-parameter" in report.figures[0].skipped
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no such run or sweep directory" in capsys.readouterr().err
    assert main(["analyze", str(run), "--figures", "loss,time"]) == 2
    assert "unknown figure(s) ['loss']" in capsys.readouterr().err


def test_write_demo_figures_skips_what_the_runs_cannot_show(sweep, teacher_ckpt, tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()  # a demo folder: the teacher's run next to the students' variants
    (demo / "teacher").symlink_to(teacher_ckpt.parents[1], target_is_directory=True)
    (demo / "kd").symlink_to(sweep / "kd+method.loss.temperature=4", target_is_directory=True)
    (demo / "ea_kd").symlink_to(sweep / "ea_kd+method.loss.temperature=4")
    paths = write_demo_figures(
        demo, tmp_path / "out", tsne_points=50, landscape_grid=3, landscape_samples=32
    )
    names = [p.name for p in paths]
    assert names[-1] == "report.md" and "sensitivity.png" not in names
    assert len(names) == len(FIGURES)  # six figures + the report
    assert all(p.stat().st_size > 0 for p in paths)
    report = (tmp_path / "out/report.md").read_text()
    assert "Skipped: no hyper-parameter is swept" in report
    assert "| KD | 1 |" in report and "| EA-KD | 1 |" in report
    assert "| CE |" not in report  # the teacher's run is not taken for a student


def test_options_are_checked(sweep, tmp_path):
    with pytest.raises(TypeError, match="unknown option"):
        analyze([sweep], tmp_path, tsne_point=3)
    with pytest.raises(ValueError, match="checkpoint must be"):
        analyze([sweep], tmp_path, checkpoint="first")


def test_importing_the_analysis_does_not_import_matplotlib():
    code = "import eakd.analysis, sys; print('matplotlib' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
