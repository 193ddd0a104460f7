"""One training loop for LLM distillation (SFT, KD and its variants, EA-KD), on Accelerate.

Reads top to bottom: the run directory, models and data, optimiser and schedule,
``accelerator.prepare`` (so DDP, FSDP and DeepSpeed come from ``accelerate launch`` and its
config), optional resume, then optimisation steps of ``gradient_accumulation_steps``
micro-batches each. The loss of every micro-batch is normalised by the valid-token count of the
whole step (all micro-batches, all processes): ``num_items_in_batch``, so accumulation and data
parallelism give the gradient of one big batch.

A run lives in ``<output_dir>/<name>`` (:class:`LLMRunDir`). Its resumable state,
``checkpoints/last/``, holds the optimiser / scheduler / RNG state (``state/``, Accelerate's
``save_state``), the student in ``save_pretrained`` format (``model/``) and the loop's counters;
it is written to a temporary folder and renamed into place. With ``select_best``, Rouge-L on the
validation set after every epoch picks ``best/`` (DistiLLM selects by validation Rouge-L);
``final/`` is the last model.

Known limitation: the teacher is moved to the device as a whole (not sharded); with ZeRO-3 /
FSDP the student is sharded but the teacher must fit on every device.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..._atomic import new_file_mode
from ...config import ConfigError, to_dict
from ..run import (
    NonFiniteLoss,
    RunDir,
    RunLogger,
    RunPath,
    autocast_dtype,
    check_resume,
    write_json,
)
from ..utils import seed_everything
from .config import LLMConfig, TrainConfig, bind_config
from .data import collate_train, encode_example, load_instructions, split_holdout
from .evaluate import evaluate_rouge
from .models import (
    CausalLMHidden,
    check_same_vocabulary,
    layer_subset_student,
    load_causal_lm,
    load_tokenizer,
    transformers_offline,
)
from .task import DistillationObjective, count_items

__all__ = [
    "RESUMABLE_CHANGES",
    "LLMRunDir",
    "build_models",
    "evaluate",
    "format_table",
    "load_data",
    "train",
]

#: Config keys that may differ between a stopped run and its resumption: how long to train,
#: where and how verbosely, and what ``eakd llm eval`` scores afterwards.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.max_steps",
    "train.device",
    "train.threads",
    "train.progress",
    "train.tensorboard",
    "train.log_every_steps",
    "train.save_every_steps",
    "eval.checkpoint",
    "eval.datasets",
    "eval.dataset_max_examples",
    "eval.max_examples",
    "eval.output",
    "eval.seeds",
)

_ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class LLMRunDir(RunDir):
    """A run of the LLM engine: a :class:`RunDir` whose resumable state is a folder and whose
    models are ``save_pretrained`` folders (what ``eakd llm eval`` and a later distillation,
    as its teacher, load)::

        checkpoints/last/   state/ (Accelerate), model/, trainer_state.json
        best/               the student with the best validation Rouge-L
        final/              the student after the last step
        eval.json           the Rouge-L of ``eakd llm eval``
    """

    @classmethod
    def of(cls, cfg: LLMConfig) -> LLMRunDir:
        return cls(Path(cfg.output_dir) / cfg.name)

    last = RunPath("checkpoints/last")
    best = RunPath("best")
    final = RunPath("final")


def _drop_gguf_quantization(model) -> None:
    """A model dequantised from GGUF keeps a ``quantization_config`` that would make its
    ``save_pretrained`` output look quantised; the weights are plain tensors, so drop it."""
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if qc is not None and str(method).lower().endswith("gguf"):
        del model.config.quantization_config
        for attr in ("hf_quantizer", "quantization_method"):
            if hasattr(model, attr):
                with contextlib.suppress(AttributeError):
                    setattr(model, attr, None)
        model.is_quantized = False


def build_models(cfg: LLMConfig, need_teacher: bool = True):
    """``(tokenizer, student, teacher)`` from the ``model`` section (teacher ``None`` if not
    needed). A vocabulary mismatch between the two is an error."""
    m = cfg.model
    teacher = None
    if need_teacher or m.student_layers is not None:
        if m.teacher is None:
            raise ValueError("model.teacher is required (a local model folder) for distillation")
        teacher = load_causal_lm(m.teacher, m.teacher_gguf_file, m.teacher_dtype, "teacher")
        _drop_gguf_quantization(teacher)
    if m.student_layers is not None:
        student = layer_subset_student(teacher, m.student_layers).to(getattr(torch, m.dtype))
        tok_path, tok_gguf = m.tokenizer or m.teacher, None if m.tokenizer else m.teacher_gguf_file
    else:
        if m.student is None:
            raise ValueError("model.student is required (a local model folder)")
        student = load_causal_lm(m.student, m.student_gguf_file, m.dtype, "student")
        _drop_gguf_quantization(student)
        tok_path, tok_gguf = m.tokenizer or m.student, None if m.tokenizer else m.student_gguf_file
    tokenizer = load_tokenizer(tok_path, tok_gguf)
    if teacher is not None:
        tok_t = None
        if m.student_layers is None and m.tokenizer is None:
            tok_t = load_tokenizer(m.teacher, m.teacher_gguf_file)
        check_same_vocabulary(student, teacher, (tokenizer, tok_t) if tok_t else None)
    if not need_teacher:
        teacher = None
    return tokenizer, student, teacher


def load_data(cfg: LLMConfig):
    """``(train_examples, valid_examples)`` from the ``data`` section."""
    d = cfg.data
    if d.train is None:
        raise ValueError("data.train is required: a Dolly-format JSONL file")
    train_set = load_instructions(d.train, d.limit)
    if d.valid is not None:
        return train_set, load_instructions(d.valid)
    if d.valid_size:
        return split_holdout(train_set, d.valid_size, d.split_seed)
    return train_set, []


def _replace_dir(tmp: Path, final: Path) -> None:
    # save_pretrained's safetensors files are 0o600 whatever the umask: give every file the
    # mode a plain open() would
    mode = new_file_mode()
    for path in tmp.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _save_model(model, tokenizer, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, path)


def _save_last(acc, wrapper, tokenizer, state: dict[str, Any], run: LLMRunDir) -> None:
    """The resumable state, written to a temporary folder and renamed to ``checkpoints/last``."""
    tmp = run.last.with_name(f".{run.last.name}.tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / "state"))
    if acc.is_main_process:
        model = acc.unwrap_model(wrapper).model
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_json(tmp / "trainer_state.json", state)
        _replace_dir(tmp, run.last)
    acc.wait_for_everyone()


def _accelerator(t: TrainConfig):
    """Accelerate for ``train.device`` and ``train.precision``."""
    from accelerate import Accelerator

    gpu = t.device != "cpu" and torch.cuda.is_available()
    if t.device == "cuda" and not gpu:
        raise ConfigError("train.device=cuda but CUDA is not available; use train.device=cpu")
    autocast_dtype(t.precision, torch.device("cuda" if gpu else "cpu"))  # fp16 needs CUDA
    return Accelerator(mixed_precision=_ACCELERATE_PRECISION[t.precision], cpu=t.device == "cpu")


def _param_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "norm" in name.lower() else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train(config: dict[str, Any] | LLMConfig, *, resume: bool = False, quiet: bool = False):
    """Train a student in ``<output_dir>/<name>``; ``resume`` continues its ``checkpoints/last``
    (the config may differ from the stopped run's only in :data:`RESUMABLE_CHANGES`).

    Returns the run's ``results.json`` (``steps``, ``best``, ``final``, the resolved ``ea``)
    with ``run_dir`` and the logged rows (``history``)."""
    cfg = bind_config(config)
    t = cfg.train
    run = LLMRunDir.of(cfg)
    run.prepare(resume)
    if resume:
        check_resume(run.read_config(), to_dict(cfg), RESUMABLE_CHANGES, run.root)
    transformers = transformers_offline()
    if t.threads:
        torch.set_num_threads(t.threads)
    acc = _accelerator(t)
    seed_everything(t.seed, t.deterministic)
    main = acc.is_main_process
    say = print if main and not quiet else (lambda *a: None)

    # -- models and data --------------------------------------------------------------------
    tokenizer, student, teacher = build_models(cfg, need_teacher=cfg.loss.kd_ratio > 0)
    # the official preset changes nothing without a classification method: paper values
    ea = cfg.ea.resolve(method=None, num_classes=student.get_output_embeddings().weight.shape[0])
    train_set, valid_set = load_data(cfg)
    encoded = [
        encode_example(e, tokenizer, cfg.data.max_length, cfg.data.max_prompt_length)
        for e in train_set
    ]
    kept = [e for e in encoded if any(label != -100 for label in e.labels[1:])]
    if not kept:
        raise ValueError(
            f"no training example keeps a response token within data.max_length="
            f"{cfg.data.max_length} (prompts are up to data.max_prompt_length="
            f"{cfg.data.max_prompt_length} tokens); raise max_length or lower max_prompt_length"
        )
    if len(kept) < len(encoded):
        say(f"skipped {len(encoded) - len(kept)} examples whose response was cut off entirely")
    encoded = kept
    world, rank = acc.num_processes, acc.process_index
    per_step = t.batch_size * t.gradient_accumulation_steps * world
    steps_per_epoch = max(1, math.ceil(len(encoded) / per_step))
    total_steps = t.max_steps or t.epochs * steps_per_epoch

    # -- optimiser, schedule, engine wrapping -----------------------------------------------
    wrapper = CausalLMHidden(student)
    optimizer = torch.optim.AdamW(_param_groups(wrapper, t.weight_decay), lr=t.lr)
    scheduler = transformers.get_scheduler(
        t.scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=total_steps
    )
    # the scheduler is not prepared: Accelerate would step it once per process, and the step
    # count above already accounts for the processes; it is checkpointed all the same
    wrapper, optimizer = acc.prepare(wrapper, optimizer)
    acc.register_for_checkpointing(scheduler)
    if teacher is not None:
        teacher.to(acc.device)
    objective = DistillationObjective(wrapper, teacher, cfg.loss, ea)
    objective.train()

    # -- resume, run directory, log ---------------------------------------------------------
    state: dict[str, Any] = {"step": 0, "best": None, "history": []}
    if resume:
        acc.load_state(str(run.last / "state"))
        state = json.loads((run.last / "trainer_state.json").read_text())
        say(f"resuming {run.root} at step {state['step']}")
    logger = None
    if main:
        run.create()
        run.write_config(to_dict(cfg))
        resume_at = state["step"] if resume else None
        logger = RunLogger(run, resume_at, tensorboard=t.tensorboard, step_key="step", say=say)

    # -- the loop -------------------------------------------------------------------------------
    started = time.time()
    while state["step"] < total_steps:
        epoch, in_epoch = divmod(state["step"], steps_per_epoch)
        order = torch.randperm(
            len(encoded), generator=torch.Generator().manual_seed(t.seed + epoch)
        )
        shard = order[rank::world].tolist()
        micro = t.batch_size
        for k in range(in_epoch, steps_per_epoch):
            first = k * micro * t.gradient_accumulation_steps
            batches = [
                collate_train([encoded[i] for i in shard[s : s + micro]], tokenizer)
                for s in range(first, first + micro * t.gradient_accumulation_steps, micro)
                if shard[s : s + micro]
            ]
            n_items = sum((count_items(b["labels"]) for b in batches), torch.tensor(0))
            n_items = n_items.to(acc.device)
            if world > 1:
                n_items = acc.reduce(n_items, reduction="sum")
            logs = {"loss": 0.0, "distill": 0.0, "ce": 0.0}
            for j, batch in enumerate(batches):
                batch = {key: v.to(acc.device) for key, v in batch.items()}
                sync = j == len(batches) - 1
                with contextlib.nullcontext() if sync else acc.no_sync(wrapper):
                    terms = objective(batch, num_items=n_items.clamp_min(1))
                    # DDP averages gradients over processes; the loss is already a global mean
                    acc.backward(terms["loss"] * world)
                for key in logs:
                    logs[key] += float(terms[key].detach())
            for value in logs.values():  # before the step: the weights and last/ stay good
                NonFiniteLoss.check(value, state["step"] + 1, epoch + 1, last_good=run.last)
            if t.grad_clip:
                acc.clip_grad_norm_(wrapper.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            step = state["step"]
            if step % t.log_every_steps == 0 or step == total_steps:
                row = {"step": step, "epoch": epoch + 1, **logs}
                row.update(lr=scheduler.get_last_lr()[0], seconds=time.time() - started)
                state["history"].append(row)
                if logger is not None:
                    logger.log(row)
                if t.progress:
                    say(
                        f"step {step}/{total_steps} (epoch {epoch + 1}): loss {logs['loss']:.4f} "
                        f"distill {logs['distill']:.4f} ce {logs['ce']:.4f} lr {row['lr']:.2e} "
                        f"{row['seconds']:.0f} s"
                    )
            if t.save_every_steps and step % t.save_every_steps == 0:
                _save_last(acc, wrapper, tokenizer, state, run)
            if step >= total_steps:
                break
        epoch_done = state["step"] % steps_per_epoch == 0 or state["step"] >= total_steps
        if epoch_done and t.select_best and valid_set and main:
            model = acc.unwrap_model(wrapper).model
            subset = valid_set[: t.valid_max_examples] if t.valid_max_examples else valid_set
            score = evaluate_rouge(
                model, tokenizer, {"valid": subset}, cfg.eval, seeds=t.valid_seeds
            )["average"]
            say(f"epoch {epoch + 1}: validation Rouge-L {score:.2f}")
            if state["best"] is None or score > state["best"]["rouge_l"]:
                state["best"] = {"step": state["step"], "rouge_l": score}
                _save_model(model, tokenizer, run.best)
        if epoch_done and not t.save_every_steps:
            _save_last(acc, wrapper, tokenizer, state, run)

    results = {
        "steps": state["step"],
        "best": state["best"],
        "final": str(run.final),
        "ea": ea.to_dict(),
    }
    if main:
        _save_model(acc.unwrap_model(wrapper).model, tokenizer, run.final)
        run.write_results(results)
        logger.close()
    acc.wait_for_everyone()
    return {**results, "run_dir": str(run.root), "history": state["history"]}


def evaluate(
    config: dict[str, Any] | LLMConfig, *, checkpoint: str | None = None, quiet: bool = False
) -> dict:
    """Rouge-L of a checkpoint (default: the run's best, else final model) on the
    ``eval.datasets`` over ``eval.seeds``; writes JSON (default: the run's ``eval.json``)."""
    cfg = bind_config(config)
    e = cfg.eval
    run = LLMRunDir.of(cfg)
    path = checkpoint or e.checkpoint
    if path is None:
        path = run.best if run.best.is_dir() else run.final
    if not e.datasets:
        raise ValueError("eval.datasets is empty: map names to Dolly-format JSONL files")
    datasets = {
        name: load_instructions(p, e.dataset_max_examples.get(name, e.max_examples))
        for name, p in sorted(e.datasets.items())
    }
    model = load_causal_lm(path, dtype=cfg.model.dtype, what="checkpoint")
    tokenizer = load_tokenizer(path)
    if cfg.train.device != "cpu" and torch.cuda.is_available():
        model.to("cuda")
    result = evaluate_rouge(model, tokenizer, datasets, e)
    result["checkpoint"] = str(path)
    target = Path(e.output) if e.output else run.eval
    write_json(target, result)
    if not quiet:
        print(format_table(result))
        print(f"wrote {target}")
    return result


def format_table(result: dict) -> str:
    """Rouge-L per dataset (mean +- std over seeds) and the average, as a text table."""
    names = list(result["datasets"])
    head = " | ".join(f"{n:>14}" for n in [*names, "average"])
    cells = [f"{d['mean']:6.2f} +- {d['std']:4.2f}".rjust(14) for d in result["datasets"].values()]
    cells.append(f"{result['average']:14.2f}")
    return f"Rouge-L over seeds {result['seeds']}\n{head}\n{' | '.join(cells)}"
