"""Experiment trackers (Accelerate's tracker classes, by the names ``log_with`` takes) receive
the run's config once and every logged row at its step, in every engine's logger; unknown,
missing and misplaced tracker names are one-line errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker

from eakd.config import ConfigError
from eakd.engines.run import RunDir, RunLogger, start_trackers

sys.path.insert(0, str(Path(__file__).resolve().parent / "classification"))
from tiny_models import tiny_config

EVENTS: list[tuple] = []


class RecordingTracker(GeneralTracker):
    """A tracker that records what it is given."""

    name = "eakd_recording"
    requires_logging_directory = True

    def __init__(self, run_name, logging_dir, **kwargs):
        super().__init__()
        EVENTS.append(("init", run_name, logging_dir))

    @property
    def tracker(self):
        return self

    def start(self):
        EVENTS.append(("start",))

    def store_init_configuration(self, values):
        EVENTS.append(("config", values))

    def log(self, values, step=None, **kwargs):
        EVENTS.append(("log", step, dict(values)))

    def finish(self):
        EVENTS.append(("finish",))


@pytest.fixture
def recording(monkeypatch):
    EVENTS.clear()
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, RecordingTracker.name, RecordingTracker)
    return EVENTS


def test_a_logger_feeds_its_trackers_and_shares_them(tmp_path, recording):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    log = RunLogger(run, trackers=["eakd_recording"], config={"a": 1}, step_key="step")
    other = RunLogger(run, step_key="step", path=run.eval_log, trackers=log.trackers)
    log.log({"step": 1, "loss": 0.5, "name": "x", "flag": True})
    other.log({"step": 1, "AP": 12.0})
    other.close()  # a shared tracker is closed by its owner only
    log.log({"step": 2, "loss": 0.25})
    log.close()
    assert recording == [
        ("init", "run", str(tmp_path / "run" / "trackers")),
        ("start",),
        ("config", {"a": 1}),
        ("log", 1, {"loss": 0.5}),
        ("log", 1, {"AP": 12.0}),
        ("log", 2, {"loss": 0.25}),
        ("finish",),
    ]


def test_a_classification_run_logs_every_epoch_to_its_trackers(tmp_path, recording):
    pytest.importorskip("mnist1d")
    from eakd.engines.classification import train

    cfg = tiny_config(tmp_path, tmp_path / "cache", "tracked", log={"trackers": ["eakd_recording"]})
    train(cfg, quiet=True)
    configs = [e[1] for e in recording if e[0] == "config"]
    assert len(configs) == 1 and configs[0]["log"]["trackers"] == ["eakd_recording"]
    logs = [e for e in recording if e[0] == "log"]
    assert [step for _, step, _ in logs] == [1, 2]
    assert all("train_loss" in values and "test_top1" in values for _, _, values in logs)
    assert recording[-1] == ("finish",)


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("nonsense", ConfigError, r"unknown tracker 'nonsense'; Accelerate knows .*mlflow"),
        ("tensorboard", ConfigError, r"tensorboard is not a tracker here: .*tensorboard: true"),
    ],
)
def test_bad_tracker_names(tmp_path, name, error, message):
    with pytest.raises(error, match=message):
        start_trackers([name], RunDir(tmp_path / "run"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_missing_tracker_names_its_install(tmp_path):
    with pytest.raises(ImportError, match=r"the wandb tracker is not installed: pip install wandb"):
        start_trackers(["wandb"], RunDir(tmp_path / "run"))
