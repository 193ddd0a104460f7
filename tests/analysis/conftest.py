"""Tiny MNIST-1D runs for the analysis tests: a teacher, then KD and EA-KD students at two KD
temperatures (a four-variant sweep laid out as ``<variant>/seed0/``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engines" / "classification"
sys.path.insert(0, str(ENGINE_TESTS))  # the test model tiny_models:Tiny1d, built by import path

from tiny_models import tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def make_config(tmp_path_factory):
    """``make_config(root, name, **sections)``: a tiny MNIST-1D experiment (2 epochs)."""
    pytest.importorskip("mnist1d")
    cache = tmp_path_factory.getbasetemp() / "mnist1d_cache"

    def make(root, name="run", **sections):
        # the analysis runs distil from a wider (width 16) teacher
        sections["teacher"] = {"kwargs": {"width": 16}, **sections.get("teacher", {})}
        return tiny_config(root, cache, name, **sections)

    return make


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory, make_config) -> Path:
    from eakd.engines.classification import train

    root = tmp_path_factory.mktemp("teacher")
    cfg = make_config(root, "teacher", method={"name": "vanilla"}, train={"epochs": 3})
    cfg["student"] = {"name": "tiny_models:Tiny1d", "kwargs": {"width": 16}}
    cfg.pop("teacher")
    train(cfg, quiet=True)
    return root / "runs" / "teacher" / "checkpoints" / "best.pt"


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, make_config, teacher_ckpt) -> Path:
    """``<root>/runs/sweep/{kd,ea_kd}+method.loss.temperature={2,4}/seed0``."""
    from eakd.engines.classification import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    cfg = make_config(root, "sweep", teacher={"checkpoint": str(teacher_ckpt)})
    grid = ["method=kd,ea_kd", "method.loss.temperature=2,4"]
    _, sweep_dir = run_sweep(cfg, [0], grid)
    return sweep_dir
