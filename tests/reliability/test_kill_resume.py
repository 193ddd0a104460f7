"""Kill a training run at random points (SIGKILL and Ctrl-C/SIGINT, mid-epoch), resume it each
time with ``--resume``, and compare everything it wrote with an uninterrupted run of the same
config: weights, optimiser state, RNG states, the per-epoch log, the diagnostics, the test-set
entropies and the results, bit for bit (only wall-clock timings may differ). Also: a corrupt
``last.pt`` falls back to its previous good copy and the run still ends bit-identical."""

from __future__ import annotations

import csv
import json
import random
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml

from eakd.cli import main

HERE = Path(__file__).resolve()
TINY = HERE.parents[1] / "engines" / "classification"
sys.path[:0] = [str(HERE.parent), str(TINY)]
import _kill  # noqa: E402
from _kill import assert_same  # noqa: E402
from tiny_models import tiny_config  # noqa: E402

pytest.importorskip("mnist1d")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals")

TIMES = {"epoch_time_s", "step_time_s"}


def write_config(root: Path, where: str) -> tuple[Path, Path]:
    """EA-KD on 2000 MNIST-1D samples, 6 epochs (80 steps each), a random teacher, as run
    ``where/runs/run``: (the config file, the run folder)."""
    cfg = tiny_config(root / where, root / "cache", "run", ea={"enabled": True})
    cfg["train"]["epochs"] = 6
    cfg["data"]["options"] = {"num_samples": 2000}
    path = root / f"{where}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, root / where / "runs" / "run"


def start(config: Path, *extra: str):
    return _kill.start(["train", str(config), "--quiet", *extra], TINY)


def kill_after(proc, run: Path, epochs_done: int, sig: int, rng) -> bool:
    """``sig`` a random moment into the epoch after ``epochs_done`` (epochs of ~0.2 s)."""
    return _kill.stop_after(proc, run / "train_log.csv", epochs_done, sig, rng, 0.12)


def state_of(run: Path) -> dict:
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    last["config"].pop("output_dir")
    for h in last["history"]:
        for k in TIMES:
            h.pop(k, None)
    with (run / "train_log.csv").open() as fh:
        log = [{k: v for k, v in r.items() if k not in TIMES} for r in csv.DictReader(fh)]
    results = json.loads((run / "results.json").read_text())
    results.pop("step_time_s")
    for h in results["history"]:
        for k in TIMES:
            h.pop(k, None)
    entropies = {
        p.name: torch.load(p, weights_only=True) for p in sorted((run / "entropies").glob("*.pt"))
    }
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    best["config"].pop("output_dir")
    return {
        "last": last,
        "best": best,
        "log": log,
        "results": results,
        "diagnostics": (run / "diagnostics.jsonl").read_text(),
        "entropies": entropies,
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    config, run = write_config(root, "straight")
    assert main(["train", str(config), "--quiet"]) == 0
    return root, state_of(run)


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_and_resumed_runs_end_bit_identical(reference, seed):
    root, expected = reference
    rng = random.Random(seed)
    config, run = write_config(root, f"killed{seed}")
    # three stops at random epochs, mid-epoch, alternating the signals
    plan = sorted(rng.sample(range(0, 5), 3))
    signals = [signal.SIGKILL, signal.SIGINT, signal.SIGKILL][:: 1 if seed == 0 else -1]
    stopped = 0
    for epochs_done, sig in zip(plan, signals, strict=True):
        # a stop before the first checkpoint leaves nothing to resume: that run starts over
        held = (run / "checkpoints" / "last.pt").exists()
        proc = start(config, *(["--resume"] if held else []))
        sent = kill_after(proc, run, epochs_done, sig, rng)
        _, err = proc.communicate(timeout=180)
        if not sent:
            assert proc.returncode == 0, err
            continue
        if proc.returncode == 0:  # it finished just as the signal came
            continue
        stopped += 1
        if sig == signal.SIGINT:
            assert proc.returncode == 130, err
            line = err.strip().splitlines()[-1]
            assert line.startswith("eakd: error: interrupted at epoch "), err
            assert "resume with: eakd train" in line and line.endswith("--resume"), line
            assert "Traceback" not in err
        else:
            assert proc.returncode == -signal.SIGKILL, err
        if (run / "results.json").exists():
            break
    assert stopped >= 1, "no stop landed inside a run"
    if not (run / "results.json").exists():
        proc = start(config, "--resume")
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    assert_same(expected, state_of(run))
    leftovers = [p.name for p in run.rglob(".*.tmp")]
    assert not leftovers, leftovers  # a killed write's temporary file is cleaned on resume


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one(reference, capsys):
    root, expected = reference
    config, run = write_config(root, "corrupt")
    proc = start(config)
    kill_after(proc, run, 3, signal.SIGKILL, random.Random(5))
    proc.communicate(timeout=180)
    last = run / "checkpoints" / "last.pt"
    assert (run / "checkpoints" / "last.prev.pt").is_file()
    last.write_bytes(last.read_bytes()[:1000])  # a disk that cut the file short
    assert main(["train", str(config), "--quiet", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "cannot be read; resuming from the previous checkpoint last.prev.pt" in err
    assert_same(expected, state_of(run))
