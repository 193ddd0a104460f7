"""What the kill-and-resume tests share: start ``eakd`` in a subprocess, stop it at a random
moment after a given number of logged rows, and compare two runs' states exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def start(argv: list[str], *pythonpath: Path) -> subprocess.Popen:
    """``python -m eakd.cli ARGV`` with this checkout's ``src`` (and ``pythonpath``) first."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *map(str, pythonpath)]),
    }
    cmd = [sys.executable, "-m", "eakd.cli", *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(log: Path) -> int:
    """Data rows of a CSV log so far."""
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def stop_after(proc: subprocess.Popen, log: Path, done: int, sig: int, rng, jitter: float) -> bool:
    """Send ``sig`` a random moment (up to ``jitter`` s) after ``log`` has ``done`` rows;
    False when the process ended first."""
    deadline = time.monotonic() + 300
    while rows(log) < done and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, jitter))
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True


def assert_same(a, b, where: str = "") -> None:
    """Nested dicts/lists/tensors equal exactly (tensors: same dtype and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif type(a).__module__ == "numpy":
        import numpy as np

        assert np.array_equal(a, b), where
    else:
        assert a == b, (where, a, b)
