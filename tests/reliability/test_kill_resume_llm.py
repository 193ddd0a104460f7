"""The LLM engine stopped at random steps (SIGKILL and Ctrl-C) and resumed each time ends
bit-identical to an uninterrupted run: the student's weights, the optimiser, scheduler and RNG
state, the train log and the trainer state (only wall-clock seconds may differ)."""

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

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
import _kill  # noqa: E402
from _kill import assert_same  # noqa: E402

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals")

STEPS = 24


def write_config(root: Path, where: str, tiny_models, dolly_file) -> tuple[Path, Path]:
    """Sequence-level EA-KD, chunked forward KL, cosine schedule, a checkpoint every step."""
    cfg = {
        "name": "run",
        "output_dir": str(root / where),
        "model": {"teacher": str(tiny_models["teacher"]), "student": str(tiny_models["student"])},
        "data": {"train": str(dolly_file), "valid_size": 2, "max_length": 160},
        "loss": {"divergence": "forward_kl", "chunk_size": 16},
        "ea": {"enabled": True, "granularity": "sequence", "temperature": 1.0},
        "train": {
            "batch_size": 1,
            "gradient_accumulation_steps": 2,
            "max_steps": STEPS,
            "lr": 1e-2,
            "device": "cpu",
            "log_every_steps": 1,
            "save_every_steps": 1,
            "select_best": False,
            "tensorboard": False,
            "progress": False,
        },
    }
    path = root / f"{where}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, root / where / "run"


def state_of(run: Path) -> dict:
    from safetensors.torch import load_file

    trainer = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    for row in trainer["history"]:
        row.pop("seconds")
    with (run / "train_log.csv").open() as fh:
        log = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]
    state = run / "checkpoints" / "last" / "state"
    return {
        "final": load_file(str(run / "final" / "model.safetensors")),
        "optimizer": torch.load(state / "optimizer.bin", weights_only=False),
        "scheduler": torch.load(state / "custom_checkpoint_0.pkl", weights_only=False),
        "rng": torch.load(state / "random_states_0.pkl", weights_only=False),
        "trainer": trainer,
        "log": log,
        "results": json.loads((run / "results.json").read_text()),
    }


def test_killed_and_resumed_llm_run_ends_bit_identical(tmp_path, tiny_models, dolly_file):
    from eakd.cli import main

    config, run = write_config(tmp_path, "straight", tiny_models, dolly_file)
    assert main(["llm", "train", str(config), "--quiet"]) == 0
    expected = state_of(run)
    expected["results"]["final"] = None  # a path

    rng = random.Random(3)
    config, run = write_config(tmp_path, "killed", tiny_models, dolly_file)
    log = run / "train_log.csv"
    stopped = 0
    for done, sig in zip(sorted(rng.sample(range(2, STEPS - 4), 3)), [9, 2, 9], strict=True):
        held = (run / "checkpoints" / "last").exists()
        proc = _kill.start(["llm", "train", str(config), "--quiet", *(["--resume"] * held)])
        sent = _kill.stop_after(proc, log, done, sig, rng, 0.05)
        _, err = proc.communicate(timeout=300)
        if not sent or proc.returncode == 0:
            continue
        stopped += 1
        if sig == signal.SIGINT:
            assert proc.returncode == 130, err
            line = err.strip().splitlines()[-1]
            assert line.startswith("eakd: error: interrupted at step "), err
            assert line.endswith("--resume") and "Traceback" not in err, err
        else:
            assert proc.returncode == -signal.SIGKILL, err
    assert stopped >= 1
    if not (run / "results.json").exists():
        proc = _kill.start(["llm", "train", str(config), "--quiet", "--resume"])
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    got = state_of(run)
    got["results"]["final"] = None
    assert_same(expected, got)
