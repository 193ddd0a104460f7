"""Files eakd writes atomically (results, checkpoints, configs, figures) get the permissions a
plain ``open()`` gives under the process umask, and a replaced file keeps its own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eakd._atomic import atomic_open, new_file_mode

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_new_file_gets_the_umask_mode(tmp_path, umask):
    with atomic_open(tmp_path / "new.bin") as fh:
        fh.write(b"data")
    with open(tmp_path / "plain.bin", "wb") as fh:  # what a plain open() gives
        fh.write(b"data")
    assert _mode(tmp_path / "new.bin") == 0o666 & ~umask == _mode(tmp_path / "plain.bin")
    assert (tmp_path / "new.bin").read_bytes() == b"data"
    assert new_file_mode() == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bin", "plain.bin"]


@pytest.mark.parametrize("existing", [0o600, 0o640, 0o664, 0o444])
def test_replaced_file_keeps_its_mode(tmp_path, umask, existing):
    path = tmp_path / "results.json"
    path.write_text("old")
    path.chmod(existing)
    with atomic_open(path) as fh:
        fh.write(b"new")
    assert path.read_text() == "new" and _mode(path) == existing


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, umask):
    path = tmp_path / "last.pt"
    path.write_bytes(b"good")
    path.chmod(0o640)
    with pytest.raises(RuntimeError, match="crash"), atomic_open(path) as fh:
        fh.write(b"partial")
        raise RuntimeError("crash")
    assert path.read_bytes() == b"good" and _mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_run_files_get_the_umask_mode(tmp_path):
    """What a run writes through the run plumbing: config, results, a checkpoint."""
    import torch

    from eakd.engines.run import RunDir, save_state, write_json

    old = os.umask(0o022)
    try:
        run = RunDir(tmp_path / "run")
        run.write_config({"optim": {"lr": 1e-4}})
        run.write_results({"best": 1.0})
        save_state({"w": torch.zeros(2)}, run.root / "checkpoints" / "last.pt")
        write_json(run.root / "extra.json", {"a": 1})
    finally:
        os.umask(old)
    files = sorted(p for p in run.root.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["last.pt", "config.yaml", "extra.json", "results.json"]
    assert {p.name: _mode(p) for p in files} == {p.name: 0o644 for p in files}
