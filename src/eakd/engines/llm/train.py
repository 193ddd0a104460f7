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

A LoRA student (``model.lora``) is saved as its adapter (PEFT's ``adapter_config.json`` and
``adapter_model.safetensors``) in ``model/``, ``best/`` and ``final/``; the optimiser state
covers the adapter only and the base weights are never copied into a checkpoint; resume loads
the adapter back exactly. With ``train.on_policy.lmbda > 0`` micro-batches are replaced, with
that probability, by the student's own samples (:mod:`.on_policy`).

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
    CheckpointError,
    LossGuard,
    RunDir,
    RunExists,
    RunInterrupted,
    RunLogger,
    RunPath,
    atomic_copy,
    autocast_dtype,
    check_resume,
    load_resumable,
    previous_checkpoint,
    write_json,
)
from ..utils import seed_everything
from .config import LLMConfig, OnPolicyConfig, TrainConfig, bind_config
from .data import collate_train, encode_example, load_instructions, split_holdout
from .evaluate import evaluate_rouge
from .models import (
    CausalLMHidden,
    apply_lora,
    check_lora_targets,
    check_qlora,
    check_same_vocabulary,
    config_vocab_size,
    freeze_teacher,
    is_adapter_dir,
    layer_subset_student,
    load_adapter,
    load_causal_lm,
    load_tokenizer,
    qlora_load_kwargs,
    shared_vocab_size,
    skeleton_layer_names,
    transformers_offline,
    unwrap_peft,
)
from .on_policy import draw_on_policy, sample_responses, step_seed
from .task import DistillationObjective, build_divergence, count_items

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
    "name",  # a run folder that was moved or renamed
    "output_dir",
    "train.epochs",  # when the schedule extends exactly (a constant one)
    "train.max_steps",
    "train.loss_ceiling",
    "train.trackers",
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
    "model.lora.save_merged",
)

#: Keys added to the schema after runs were written: a stopped run's config without them
#: resumes as if it had their (behaviour-preserving) defaults.
_NEW_DEFAULTS = {
    ("model", "vocab"): "strict",
    ("model", "lora"): None,
    ("train", "on_policy"): to_dict(OnPolicyConfig()),
}

_ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class LLMRunDir(RunDir):
    """A run of the LLM engine: a :class:`RunDir` whose resumable state is a folder and whose
    models are ``save_pretrained`` folders (what ``eakd llm eval`` and a later distillation,
    as its teacher, load)::

        checkpoints/last/   state/ (Accelerate), model/, trainer_state.json
        best/               the student with the best validation Rouge-L
        final/              the student after the last step
        merged/             a LoRA run's best (else final) adapter merged into its base
        eval.json           the Rouge-L of ``eakd llm eval``

    A LoRA student's ``model/``, ``best/`` and ``final/`` hold its adapter.
    """

    @classmethod
    def of(cls, cfg: LLMConfig) -> LLMRunDir:
        return cls(Path(cfg.output_dir) / cfg.name)

    last = RunPath("checkpoints/last")
    best = RunPath("best")
    final = RunPath("final")
    merged = RunPath("merged")


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


def check_before_loading(cfg: LLMConfig) -> None:
    """The checks that need no weights, run before any model loads: the divergence and its EA
    options, the two heads' vocabularies (from the model configs), QLoRA's requirements and
    LoRA's target modules (against the student's config)."""
    build_divergence(cfg.loss, cfg.ea.resolve(method=None))
    m, lora = cfg.model, cfg.model.lora
    if cfg.loss.kd_ratio > 0 and m.student_layers is None and m.student and m.teacher:
        vs = config_vocab_size(m.student, m.student_gguf_file)
        vt = config_vocab_size(m.teacher, m.teacher_gguf_file)
        if vs is not None and vt is not None and (vs != vt or m.vocab == "trim"):
            tok_path, tok_gguf = (
                m.tokenizer or m.student,
                None if m.tokenizer else m.student_gguf_file,
            )
            shared_vocab_size(vs, vt, m.vocab, len(load_tokenizer(tok_path, tok_gguf)))
    if lora is None:
        return
    if lora.quantize != "none":
        check_qlora(cfg.train.device)
    if m.student_layers is None:  # a cut student has the teacher's module names
        path, gguf = m.student, m.student_gguf_file
    else:
        path, gguf = m.teacher, m.teacher_gguf_file
    if path is not None:
        names = skeleton_layer_names(path, gguf)
        if names is not None:
            check_lora_targets(lora.target_modules, names)


def build_models(
    cfg: LLMConfig, need_teacher: bool = True, adapter: str | os.PathLike[str] | None = None
):
    """``(tokenizer, student, teacher)`` from the ``model`` section (teacher ``None`` if not
    needed). A vocabulary mismatch between the two is an error (``model.vocab`` says whether
    padding rows past the tokenizer may differ). The teacher is frozen (eval mode, no
    gradients). With ``model.lora`` the student is a PEFT model with a new adapter, or with the
    one saved in ``adapter`` (which also applies without ``model.lora``)."""
    m = cfg.model
    lora = m.lora
    quantized = lora is not None and lora.quantize != "none"
    if quantized:
        check_qlora(cfg.train.device)
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
        extra = qlora_load_kwargs(m.dtype) if quantized else {}
        student = load_causal_lm(m.student, m.student_gguf_file, m.dtype, "student", **extra)
        _drop_gguf_quantization(student)
        tok_path, tok_gguf = m.tokenizer or m.student, None if m.tokenizer else m.student_gguf_file
    tokenizer = load_tokenizer(tok_path, tok_gguf)
    if teacher is not None:
        teacher.eval()
        teacher.requires_grad_(False)  # after cutting the student from it
        tok_t = None
        if m.student_layers is None and m.tokenizer is None:
            tok_t = load_tokenizer(m.teacher, m.teacher_gguf_file)
        check_same_vocabulary(
            student,
            teacher,
            (tokenizer, tok_t) if tok_t else None,
            vocab=m.vocab,
            tokenizer_size=len(tokenizer),
        )
    if adapter is not None:
        student = load_adapter(student, adapter)
    elif lora is not None:
        student = apply_lora(student, lora)
    if not need_teacher:
        teacher = None
    return tokenizer, student, teacher


def distillation_vocab(cfg: LLMConfig, tokenizer, student, teacher) -> int:
    """``V``, the vocabulary the loss (and ``H_ub = log V``) runs over: the head's rows, or
    ``len(tokenizer)`` with ``model.vocab: trim``."""
    if cfg.model.vocab == "trim":
        if teacher is None:
            return len(tokenizer)
        return check_same_vocabulary(student, teacher, vocab="trim", tokenizer_size=len(tokenizer))
    return int(unwrap_peft(student).get_output_embeddings().weight.shape[0])


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


def _replace_dir(tmp: Path, final: Path, keep: Path | None = None) -> None:
    """Move the folder ``tmp`` to ``final``; the folder it replaces becomes ``keep`` (the
    previous good checkpoint) or is removed."""
    # save_pretrained's safetensors files are 0o600 whatever the umask: give every file the
    # mode a plain open() would
    mode = new_file_mode()
    for path in tmp.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)
    if final.exists():
        old = keep or final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        if keep is None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _check_last(path: Path, what: str = "checkpoint") -> dict[str, Any]:
    """The trainer state of the resumable folder ``path``; :class:`CheckpointError` when the
    folder is incomplete or its state unreadable."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{what} {path} cannot be read (trainer_state.json: {exc}); the folder is "
            "incomplete or damaged"
        ) from exc
    if not (path / "state").is_dir() or not (path / "model").is_dir():
        raise CheckpointError(f"{what} {path} is incomplete (no state/ or model/ folder)")
    return state


def _save_model(model, tokenizer, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, path)


def _skip_model_in_state(acc) -> None:
    """A LoRA run's Accelerate state leaves the model out (the base would be copied into every
    checkpoint); its adapter is saved in ``model/`` and loaded back by :func:`_load_adapter`."""
    acc.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    acc.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def _load_adapter(model, path: Path) -> None:
    """The adapter weights saved in ``path``, copied into the PEFT ``model`` in place."""
    import peft

    weights = peft.utils.load_peft_weights(str(path), device="cpu")
    result = peft.set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(
            f"{path}: the adapter does not fit the student ({result.unexpected_keys[:3]}...); "
            "resume with the run's own config"
        )


def _save_merged(model, tokenizer, run: LLMRunDir) -> None:
    """The best (else final) adapter merged into the base: a plain model in ``merged/``."""
    source = run.best if run.best.is_dir() else run.final
    _load_adapter(model, source)
    _save_model(model.merge_and_unload(), tokenizer, run.merged)


def _save_last(acc, wrapper, tokenizer, state: dict[str, Any], run: LLMRunDir) -> None:
    """The resumable state, written to a temporary folder, verified, and renamed to
    ``checkpoints/last``; the folder it replaces stays as ``checkpoints/last.prev``."""
    state["saved"] = state["step"]
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
        if _check_last(tmp)["step"] != state["step"]:  # verified before it replaces last/
            raise OSError(f"writing {run.last} failed: its trainer state does not read back")
        _replace_dir(tmp, run.last, keep=previous_checkpoint(run.last))
    acc.wait_for_everyone()


def _total_steps(cfg: dict[str, Any], steps_per_epoch: int) -> int:
    t = cfg["train"]
    return t.get("max_steps") or t["epochs"] * steps_per_epoch


def _schedule_extends(t: TrainConfig, old: int, new: int, done: int) -> bool:
    """Whether the learning rate of the ``done`` steps taken is the same in the schedule over
    ``new`` steps as over ``old`` (constant schedules; any schedule while still in warm-up)."""
    from transformers import get_scheduler

    def factors(total: int):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        lam = get_scheduler(
            t.scheduler, opt, num_warmup_steps=t.warmup_steps, num_training_steps=total
        ).lr_lambdas[0]
        return [lam(k) for k in range(done)]

    return done <= new and factors(old) == factors(new)


def _check_length(
    saved: dict[str, Any],
    cfg: LLMConfig,
    steps_per_epoch: int,
    done: int,
    run: LLMRunDir,
    extend: bool,
) -> bool:
    """The resume rule for ``train.epochs``/``train.max_steps``: a new total is allowed when
    the schedule over it gives the steps already taken the same learning rate
    (:func:`_schedule_extends`); a finished run continues only with ``extend``. True when the
    run already finished its unchanged schedule (nothing to do)."""
    old = _total_steps(saved, steps_per_epoch)
    new = _total_steps(to_dict(cfg), steps_per_epoch)
    t = cfg.train
    if new != old:
        if new < done:
            raise ConfigError(
                f"cannot resume {run.root} with {new} steps: it already took {done}; keep "
                "train.epochs / train.max_steps as they were"
            )
        if not _schedule_extends(t, old, new, done):
            raise ConfigError(
                f"cannot resume {run.root} with {new} steps instead of {old}: its {t.scheduler} "
                f"schedule over {old} steps set the learning rate of the {done} steps already "
                f"taken, and over {new} steps they would differ (a schedule no fresh run has). "
                "Keep train.epochs / train.max_steps, or start a new run (another name); a "
                "constant schedule extends exactly"
            )
    if not run.finished:
        return False
    if new == done:
        return True
    if not extend:
        raise RunExists(
            f"{run.root} is a finished run ({done} steps); continuing it to {new} steps rewrites "
            f"its results.json and final/: pass --extend to do so (results.json is kept as "
            f"results.step{done:07d}.json), or start a new run under another name"
        )
    return False


def _with_new_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    for (section, key), value in _NEW_DEFAULTS.items():
        if isinstance(saved.get(section), dict):
            saved[section].setdefault(key, value)
    return saved


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


def train(
    config: dict[str, Any] | LLMConfig,
    *,
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    extend: bool = False,
):
    """Train a student in ``<output_dir>/<name>``; ``resume`` continues its ``checkpoints/last``
    (or, when that is damaged, the previous good ``checkpoints/last.prev``); the config may
    differ from the stopped run's only in :data:`RESUMABLE_CHANGES`, its length only where the
    schedule extends exactly. A finished run is returned as it is; ``extend`` continues it to
    a longer schedule. ``overwrite`` replaces an existing run (eakd's files only).

    Returns the run's ``results.json`` (``steps``, ``best``, ``final``, the resolved ``ea``)
    with ``run_dir`` and the logged rows (``history``)."""
    cfg = bind_config(config)
    t = cfg.train
    run = LLMRunDir.of(cfg)
    resume = resume or extend
    acc = _accelerator(t)
    run.prepare(resume, overwrite=overwrite, main=acc.is_main_process)
    saved_cfg = None
    if resume:
        saved_cfg = _with_new_defaults(run.read_config())
        check_resume(saved_cfg, to_dict(cfg), RESUMABLE_CHANGES, run.root)
    check_before_loading(cfg)
    transformers = transformers_offline()
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed, t.deterministic)
    main = acc.is_main_process
    say = print if main and not quiet else (lambda *a: None)

    # -- models and data --------------------------------------------------------------------
    tokenizer, student, teacher = build_models(cfg, need_teacher=cfg.loss.kd_ratio > 0)
    vocab = distillation_vocab(cfg, tokenizer, student, teacher)
    # the official preset changes nothing without a classification method: paper values;
    # H_ub = log V of the vocabulary the loss runs over (the tokenizer's when trimming)
    ea = cfg.ea.resolve(method=None, num_classes=vocab)
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
    lora = cfg.model.lora is not None
    if lora:
        _skip_model_in_state(acc)
    if teacher is not None:
        freeze_teacher(teacher.to(acc.device))
    trim = vocab if cfg.model.vocab == "trim" else None
    objective = DistillationObjective(wrapper, teacher, cfg.loss, ea, vocab_size=trim)
    objective.train()
    op = t.on_policy

    # -- resume, run directory, log ---------------------------------------------------------
    state: dict[str, Any] = {"step": 0, "best": None, "history": []}
    if resume:
        state, source = load_resumable(
            run.last, warn=None if main else (lambda m: None), read=_check_last
        )
        if _check_length(saved_cfg, cfg, steps_per_epoch, state["step"], run, extend):
            say(f"{run.root} already finished its {state['step']} steps; nothing to resume")
            return {**run.read_results(), "run_dir": str(run.root), "history": state["history"]}
        if run.finished and main:  # --extend: keep what the finished run reported
            atomic_copy(run.results, run.root / f"results.step{state['step']:07d}.json")
        acc.load_state(str(source / "state"))
        if lora:
            _load_adapter(acc.unwrap_model(wrapper).model, source / "model")
        say(f"resuming {run.root} at step {state['step']}")
    logger = None
    if main:
        run.start()
        run.create()
        run.write_config(to_dict(cfg))
        resume_at = state["step"] if resume else None
        logger = RunLogger(
            run,
            resume_at,
            tensorboard=t.tensorboard,
            step_key="step",
            say=say,
            trackers=t.trackers,
            config=to_dict(cfg),
        )

    # -- the loop -------------------------------------------------------------------------------
    started = time.time()
    guard = LossGuard(t.loss_ceiling, run.last, main)
    try:
        while state["step"] < total_steps:
            epoch, in_epoch = divmod(state["step"], steps_per_epoch)
            order = torch.randperm(
                len(encoded), generator=torch.Generator().manual_seed(t.seed + epoch)
            )
            shard = order[rank::world].tolist()
            micro = t.batch_size
            for k in range(in_epoch, steps_per_epoch):
                first = k * micro * t.gradient_accumulation_steps
                micro_batches = [
                    [encoded[i] for i in shard[s : s + micro]]
                    for s in range(first, first + micro * t.gradient_accumulation_steps, micro)
                    if shard[s : s + micro]
                ]
                generated = 0
                if op.lmbda > 0:  # GKD: the student's own responses, drawn per micro-batch
                    model = acc.unwrap_model(wrapper).model
                    for j, examples in enumerate(micro_batches):
                        if draw_on_policy(
                            op.lmbda, step_seed("draw", t.seed, state["step"], rank, j)
                        ):
                            micro_batches[j] = sample_responses(
                                model,
                                tokenizer,
                                examples,
                                seed=step_seed("sample", t.seed, state["step"], rank, j),
                                max_new_tokens=op.max_new_tokens,
                                max_length=cfg.data.max_length,
                                temperature=op.temperature,
                                top_k=op.top_k,
                                top_p=op.top_p,
                                vocab_size=vocab,
                            )
                            generated += 1
                batches = [collate_train(examples, tokenizer) for examples in micro_batches]
                n_items = sum((count_items(b["labels"]) for b in batches), torch.tensor(0))
                n_items = n_items.to(acc.device)
                if world > 1:
                    n_items = acc.reduce(n_items, reduction="sum")
                logs = {"loss": 0.0, "distill": 0.0, "ce": 0.0}
                for j, batch in enumerate(batches):
                    batch = {key: v.to(acc.device) for key, v in batch.items()}
                    sync = j == len(batches) - 1
                    at = f"step {state['saved']}" if state.get("saved") else ""
                    with (
                        contextlib.nullcontext() if sync else acc.no_sync(wrapper),
                        guard.step(state["step"] + 1, epoch + 1, at),
                    ):
                        terms = objective(batch, num_items=n_items.clamp_min(1))
                        # DDP averages gradients over processes; the loss is already a global mean
                        acc.backward(terms["loss"] * world)
                    for key in logs:
                        logs[key] += float(terms[key].detach())
                for value in logs.values():  # before the step: the weights and last/ stay good
                    guard.check(value, state["step"] + 1, epoch + 1, at)
                if t.grad_clip:
                    acc.clip_grad_norm_(wrapper.parameters(), t.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                step = state["step"]
                if step % t.log_every_steps == 0 or step == total_steps:
                    row = {"step": step, "epoch": epoch + 1, **logs}
                    if op.lmbda > 0:
                        row["on_policy"] = generated / len(batches)
                    row.update(lr=scheduler.get_last_lr()[0], seconds=time.time() - started)
                    state["history"].append(row)
                    if logger is not None:
                        logger.log(row)
                    if t.progress:
                        say(
                            f"step {step}/{total_steps} (epoch {epoch + 1}): loss "
                            f"{logs['loss']:.4f} distill {logs['distill']:.4f} ce "
                            f"{logs['ce']:.4f} lr {row['lr']:.2e} {row['seconds']:.0f} s"
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
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C: say where, and what to resume from
        at = f"step {state['saved']}" if state.get("saved") else ""
        raise guard.interrupted(f"step {state['step'] + 1}", at) from exc

    results = {
        "steps": state["step"],
        "best": state["best"],
        "final": str(run.final),
        "ea": ea.to_dict(),
    }
    if main:
        model = acc.unwrap_model(wrapper).model
        _save_model(model, tokenizer, run.final)
        if lora and cfg.model.lora.save_merged:
            _save_merged(model, tokenizer, run)
            results["merged"] = str(run.merged)
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
    if is_adapter_dir(path):  # a LoRA run: its base (from the model section) + the adapter
        tokenizer, model, _ = build_models(cfg, need_teacher=False, adapter=path)
    else:
        model = load_causal_lm(path, dtype=cfg.model.dtype, what="checkpoint")
        tokenizer = load_tokenizer(path)
    quantized = cfg.model.lora is not None and cfg.model.lora.quantize != "none"
    if cfg.train.device != "cpu" and torch.cuda.is_available() and not quantized:
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
