"""EADistillationTrainer under data parallelism: 2 CPU processes (torchrun, gloo, through
Accelerate) reach the weights, losses and EA statistics of one process with the same global
batch, over two on-policy steps.

On-policy completions make this comparable only when the student's generation does not depend
on the process: TRL seeds every process differently (``set_seed(seed, device_specific=True)``),
so sampled completions differ between one and two processes. Greedy decoding
(``generation_kwargs={"do_sample": False}``) keeps the completions the student's own (they are
regenerated from the updated student at the second step) and makes them the same in both runs.
The prompts have equal token lengths: TRL left-pads the prompts of a batch and its loss forward
passes no ``position_ids``, so with GPT-2's absolute positions a padded prompt is read at other
positions than the same prompt alone in its process (with prompts of unequal lengths this test
fails for that reason, not for the data parallelism).

Run as a script (``python -m torch.distributed.run --nproc_per_node 2 test_trl_ddp.py OUT``),
this file is the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
PROMPTS = ["w1 w2 w3", "w4 w5 w6", "w7 w8 w9", "w10 w11 w12"]
STEPS = 2
GLOBAL_BATCH = 2
LOGGED = ("loss", "grad_norm", "ea/mean_weight", "ea/student_entropy", "ea/teacher_entropy")


def _train(output_dir: Path, per_device: int):
    """Two on-policy EA-KD steps of the tiny student; returns the trainer."""
    from datasets import Dataset
    from tiny_lms import make_lm, make_tokenizer

    from eakd.integrations.trl import EADistillationConfig, EADistillationTrainer

    args = EADistillationConfig(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=per_device,
        max_completion_length=4,
        generation_kwargs={"do_sample": False},
        learning_rate=1e-2,
        beta=0.5,
        ea_granularity="sequence",
        chunk_size=3,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    trainer = EADistillationTrainer(
        model=make_lm(1),
        teacher_model=make_lm(2, n_layer=3, n_embd=48),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=make_tokenizer(),
    )
    trainer.train()
    return trainer


def _logs(trainer) -> list[dict[str, float]]:
    return [{k: float(h[k]) for k in LOGGED} for h in trainer.state.log_history if "loss" in h]


def _worker(out: Path) -> None:
    trainer = _train(out, GLOBAL_BATCH // int(os.environ["WORLD_SIZE"]))
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
        info = {"logs": _logs(trainer), "processes": trainer.accelerator.num_processes}
        (out / "logs.json").write_text(json.dumps(info))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun gloo test runs on Linux")
def test_two_processes_match_one_process(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("eakd.integrations.trl")
    from tiny_lms import make_lm

    one = _train(tmp_path / "one", GLOBAL_BATCH)
    start = make_lm(1).state_dict()
    weights = {k: v.detach() for k, v in one.model.state_dict().items()}
    assert any(not torch.equal(start[k], v) for k, v in weights.items())  # training moved them

    out = tmp_path / "two"
    out.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    info = json.loads((out / "logs.json").read_text())
    assert info["processes"] == 2
    two = torch.load(out / "weights.pt")
    assert two.keys() == weights.keys()
    for k, v in weights.items():
        torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-5, msg=k)
    # the logged loss and EA statistics are over the global batch (gathered), as in one process
    ref = _logs(one)
    assert len(ref) == len(info["logs"]) == STEPS
    for got, want in zip(info["logs"], ref, strict=True):
        for key in LOGGED:
            assert got[key] == pytest.approx(want[key], rel=1e-4), key


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
