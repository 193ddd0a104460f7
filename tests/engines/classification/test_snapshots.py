"""Per-epoch snapshots of the student (``log.save_epochs``): written at the listed epochs with
that epoch's weights, without changing the training, kept and completed exactly on resume."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from eakd.config import ConfigError, from_dict
from eakd.engines.classification import ExperimentConfig, train
from eakd.engines.classification import task as task_module
from eakd.engines.classification.train import list_snapshots, snapshot_name
from eakd.engines.run import RunDir
from eakd.models import build_model, load_checkpoint

pytest.importorskip("mnist1d")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_models:Tiny1d is built by import path

from tiny_models import tiny_config


def make_cfg(tmp_path: Path, save_epochs: list[int] | None = None, epochs: int = 3) -> dict:
    """The tiny MNIST-1D EA-KD run over ``epochs`` epochs, keeping ``save_epochs``."""
    log = {"save_epochs": save_epochs} if save_epochs is not None else {}
    return tiny_config(
        tmp_path,
        tmp_path.parent / "mnist1d_cache",
        ea={"enabled": True},
        train={"epochs": epochs},
        log=log,
    )


def model_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def stop_before(epoch: int, monkeypatch) -> None:
    """Make the next run stop as epoch ``epoch`` begins (after epoch ``epoch - 1``'s files)."""
    original = task_module.ClassificationTask.set_epoch

    def crash(self, e):
        if e == epoch:
            raise KeyboardInterrupt
        original(self, e)

    monkeypatch.setattr(task_module.ClassificationTask, "set_epoch", crash)


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """The same 3-epoch run with snapshots at epochs 1 and 3, and without snapshots."""
    root = tmp_path_factory.mktemp("snapshots")
    with_snaps = train(make_cfg(root / "snaps", [1, 3]), quiet=True)
    without = train(make_cfg(root / "plain"), quiet=True)
    return root, with_snaps, without


def test_snapshots_are_written_at_the_listed_epochs_only(full_runs):
    root, _, _ = full_runs
    run = RunDir(root / "snaps/runs/run")
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [
        "best.pt",
        "epoch0001.pt",
        "epoch0003.pt",
        "last.prev.pt",  # the previous good checkpoint (epoch 2)
        "last.pt",
    ]
    assert list_snapshots(run) == {1: run.checkpoint("epoch0001"), 3: run.checkpoint("epoch0003")}
    assert snapshot_name(40) == "epoch0040"
    for epoch, path in list_snapshots(run).items():
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert sorted(state) == ["arch", "config", "epoch", "model"]
        assert state["epoch"] == epoch and state["arch"] == "tiny_models:Tiny1d"
        assert state["config"]["log"]["save_epochs"] == [1, 3]
        model = build_model("tiny_models:Tiny1d", num_classes=10, width=8)
        load_checkpoint(model, path)  # an mdistiller-style {"model": ...}, loadable anywhere
    # the last epoch's snapshot is the model of last.pt
    assert_same_weights(model_of(run.checkpoint("epoch0003")), model_of(run.last))
    # no snapshots without save_epochs (the default)
    assert list_snapshots(RunDir(root / "plain/runs/run")) == {}


def test_saving_snapshots_leaves_the_training_unchanged(full_runs):
    root, with_snaps, without = full_runs

    def untimed(history):
        return [{k: v for k, v in h.items() if not k.endswith("_time_s")} for h in history]

    assert untimed(with_snaps["history"]) == untimed(without["history"])
    assert with_snaps["best_top1"] == without["best_top1"]
    assert_same_weights(
        model_of(root / "snaps/runs/run/checkpoints/last.pt"),
        model_of(root / "plain/runs/run/checkpoints/last.pt"),
    )


def test_a_snapshot_holds_the_weights_of_its_epoch_and_resume_completes_them(
    full_runs, tmp_path, monkeypatch
):
    root, _, _ = full_runs
    full = RunDir(root / "snaps/runs/run")
    cfg = make_cfg(tmp_path, [1, 3])
    run = RunDir(tmp_path / "runs/run")
    stop_before(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, quiet=True)
    # stopped after epoch 1: its snapshot is the model of epoch 1 (last.pt), as in the full run
    assert list(list_snapshots(run)) == [1]
    first = run.checkpoint("epoch0001").read_bytes()
    assert_same_weights(model_of(run.checkpoint("epoch0001")), model_of(run.last))
    assert_same_weights(
        model_of(run.checkpoint("epoch0001")), model_of(full.checkpoint("epoch0001"))
    )
    monkeypatch.undo()
    train(cfg, resume=True, quiet=True)
    # the snapshot written before the stop is kept as it was; epoch 3's is written on resume
    assert list(list_snapshots(run)) == [1, 3]
    assert run.checkpoint("epoch0001").read_bytes() == first
    assert_same_weights(
        model_of(run.checkpoint("epoch0003")), model_of(full.checkpoint("epoch0003"))
    )


def test_snapshot_epochs_may_be_added_on_resume(full_runs, tmp_path, monkeypatch, capsys):
    root, _, _ = full_runs
    stop_before(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg(tmp_path), quiet=True)
    monkeypatch.undo()
    capsys.readouterr()
    train(make_cfg(tmp_path, [1, 2, 3]), resume=True)
    assert "note: no snapshot of epoch(s) [1] (log.save_epochs)" in capsys.readouterr().out
    run = RunDir(tmp_path / "runs/run")
    assert list(list_snapshots(run)) == [2, 3]
    full = RunDir(root / "snaps/runs/run")
    assert_same_weights(
        model_of(run.checkpoint("epoch0003")), model_of(full.checkpoint("epoch0003"))
    )
    assert torch.load(run.checkpoint("epoch0002"), weights_only=True)["epoch"] == 2


def test_a_new_run_removes_snapshots_left_by_another(tmp_path):
    """A run of ours that stopped before its first checkpoint holds nothing to keep."""
    run = RunDir(tmp_path / "runs/run")
    run.start()
    stale = run.checkpoint("epoch0002")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"another run's")
    train(make_cfg(tmp_path, [1], epochs=1), quiet=True)
    assert list(list_snapshots(RunDir(tmp_path / "runs/run"))) == [1]


@pytest.mark.parametrize(
    ("save_epochs", "message"),
    [
        ([0, 2], r"log.save_epochs must list epochs >= 1, got \[0, 2\]"),
        ([-3], r"log.save_epochs must list epochs >= 1, got \[-3\]"),
        ([2, 1], r"each epoch once, in increasing order, got \[2, 1\]"),
        ([1, 1], r"each epoch once, in increasing order, got \[1, 1\]"),
        (["40"], r"config.log.save_epochs\[0\] must be an integer, got '40'"),
        (40, r"config.log.save_epochs must be a list, got 40"),
    ],
)
def test_bad_save_epochs_are_refused_by_the_config(tmp_path, save_epochs, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ExperimentConfig, make_cfg(tmp_path, save_epochs))


def test_save_epochs_past_the_last_epoch_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"log.save_epochs lists epoch 5 but .*train.epochs=3"):
        train(make_cfg(tmp_path, [1, 5]), quiet=True)
    assert not (tmp_path / "runs").exists()
