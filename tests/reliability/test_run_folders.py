"""What eakd may remove: a run's own files, eakd's runs under a demo folder, a killed write's
temporary files; never a file it did not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from eakd.engines.run import CheckpointError, RunDir, RunExists, save_checkpoint


def make_run(root: Path, finished: bool = True) -> RunDir:
    run = RunDir(root)
    run.start()
    run.write_config({"name": root.name})
    save_checkpoint({"epoch": 1}, run.last)
    if finished:
        run.write_results({"best_top1": 1.0})
    return run


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_fresh_removes_eakd_runs_only(tmp_path):
    out = tmp_path / "demo"
    make_run(out / "teacher")
    make_run(out / "students" / "kd" / "seed0")
    (out / "students" / "sweep.md").write_text("| table |")
    (out / "notes.txt").write_text("mine")
    (out / "students" / "kd" / "seed0" / "my_plot.png").write_bytes(b"png")
    (out / "other").mkdir()
    (out / "other" / "config.yaml").write_text("a config of mine, not a run\n")
    RunDir(out).remove_runs(also=("students/sweep.md",))
    assert files(out) == {"notes.txt", "students/kd/seed0/my_plot.png", "other/config.yaml"}
    assert not (out / "teacher").exists()


def test_overwrite_clears_the_run_and_keeps_foreign_files(tmp_path):
    run = make_run(tmp_path / "run")
    (run.root / "README.txt").write_text("mine")
    with pytest.raises(RunExists, match="already holds a finished run"):
        run.prepare(resume=False)
    run.prepare(resume=False, overwrite=True)
    assert files(run.root) == {"README.txt"}


def test_a_foreign_folder_is_never_cleared(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(RunExists, match="eakd did not write .*data.bin"):
            RunDir(folder).prepare(resume=False, overwrite=overwrite)
    assert files(folder) == {"data.bin"}


def test_runs_written_before_markers_count_as_eakd_runs(tmp_path):
    run = make_run(tmp_path / "old")
    run.marker.unlink()
    assert run.is_eakd_run()
    run.prepare(resume=False, overwrite=True)
    assert not run.config.exists()


def test_resume_needs_a_checkpoint_or_its_previous_copy(tmp_path):
    run = make_run(tmp_path / "run", finished=False)
    save_checkpoint({"epoch": 2}, run.last)
    run.last.unlink()  # a crash between the two renames of a save
    run.prepare(resume=True)  # the previous copy is there
    (run.checkpoints / "last.prev.pt").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run.prepare(resume=True)
    with pytest.raises(ValueError, match="exclude each other"):
        run.prepare(resume=True, overwrite=True)


def test_a_stopped_run_without_checkpoint_starts_over(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start()
    run.write_config({"name": "run"})
    (run.root / "train_log.csv").write_text("epoch\n")
    run.prepare(resume=False)
    assert files(run.root) == set()


def test_start_removes_a_killed_writes_temporary_files(tmp_path):
    run = make_run(tmp_path / "run", finished=False)
    stale = run.checkpoints / ".last.pt.0123abcd.tmp"
    stale.write_bytes(b"half")
    mine = run.checkpoints / ".my.tmp"
    mine.write_bytes(b"not eakd's")
    run.start()
    assert not stale.exists() and mine.exists()


def test_the_previous_checkpoint_is_the_replaced_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    assert not (tmp_path / "last.prev.pt").exists()
    save_checkpoint({"epoch": 2}, path)
    import torch

    assert torch.load(path, weights_only=True) == {"epoch": 2}
    assert torch.load(tmp_path / "last.prev.pt", weights_only=True) == {"epoch": 1}
