"""One training loop for every classification method, with and without EA.

Reads top to bottom: set-up (devices, data, models, task, optimiser), optional resume, then
epochs of (train, evaluate, log, checkpoint). Every file is a path of the run's
:class:`~eakd.engines.run.RunDir`, written atomically; a resumed run continues exactly where the
stopped one ended (the order and the augmentation of epoch ``e`` depend only on ``(seed, e)``,
and RNG states are restored). The epochs of ``log.save_epochs`` also keep a snapshot of the
student (:func:`snapshot_name`, :func:`list_snapshots`).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...config import ConfigError, from_dict, to_dict
from ..run import (
    LossGuard,
    RunDir,
    RunExists,
    RunInterrupted,
    RunLogger,
    atomic_copy,
    autocast,
    autocast_dtype,
    check_resume,
    load_resumable,
    save_checkpoint,
    save_state,
)
from ..utils import (
    DistContext,
    get_rng_state,
    resolve_device,
    seed_everything,
    set_rng_state,
    setup_distributed,
)
from .config import ExperimentConfig, ModelConfig, OptimConfig, resolve_ea
from .evaluate import accuracy_counts, evaluate
from .task import ClassificationTask

__all__ = [
    "RESUMABLE_CHANGES",
    "build_model_from",
    "learning_rate",
    "list_snapshots",
    "schedule_extends",
    "snapshot_name",
    "train",
]

#: Config keys that may differ between a stopped run and its resumption.
RESUMABLE_CHANGES = (
    "name",  # a run folder that was moved or renamed
    "output_dir",
    "train.epochs",  # when the schedule extends exactly (schedule_extends)
    "train.progress",
    "train.loss_ceiling",
    "train.device",
    "train.threads",
    "data.num_workers",
    "log.tensorboard",
    "log.trackers",
    "log.save_epochs",  # snapshots are read-only copies: training is the same without them
)

_SNAPSHOT = re.compile(r"epoch(\d+)")


def snapshot_name(epoch: int) -> str:
    """The checkpoint name of epoch ``epoch``'s snapshot (``log.save_epochs``): ``epoch0040``,
    written to ``RunDir.checkpoint(snapshot_name(epoch))``."""
    return f"epoch{epoch:04d}"


def list_snapshots(run: RunDir) -> dict[int, Path]:
    """``{epoch: checkpoints/epochNNNN.pt}`` of the snapshots ``run`` holds, oldest first."""
    found = {}
    for path in run.checkpoints.glob("epoch*.pt"):
        m = _SNAPSHOT.fullmatch(path.stem)
        if m is not None and path.is_file():
            found[int(m[1])] = path
    return dict(sorted(found.items()))


def learning_rate(optim: OptimConfig, epoch: int, epochs: int) -> float:
    """The learning rate of epoch ``epoch`` (from 1): linear warm-up, then the schedule.

    ``multistep`` multiplies by ``gamma`` once for every milestone the epoch is past
    (epoch 151 of the CIFAR recipe runs at 0.1x), ``cosine`` anneals to 0 over ``epochs``.
    """
    if optim.schedule == "multistep":
        factor = optim.gamma ** sum(epoch > m for m in optim.milestones)
    elif optim.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(epochs, 1)))
    else:
        factor = 1.0
    if optim.warmup_epochs > 0:
        factor *= min(1.0, epoch / optim.warmup_epochs)
    return optim.lr * factor


def schedule_extends(optim: OptimConfig, old: int, new: int, done: int) -> bool:
    """Whether a run that trained ``done`` of ``old`` epochs can continue to ``new`` epochs
    exactly: the learning rate of every epoch already trained is the same over ``new`` epochs
    (so the result is what a fresh ``new``-epoch run computes). True for ``multistep`` and
    constant schedules; ``cosine`` anneals over the total and changes with it."""
    return done <= new and all(
        learning_rate(optim, e, old) == learning_rate(optim, e, new) for e in range(1, done + 1)
    )


def _check_epochs(cfg: ExperimentConfig, state: dict, run: RunDir, extend: bool) -> bool:
    """The resume rule for ``train.epochs`` (see :func:`train`); True when the run already
    finished its (unchanged) schedule, i.e. there is nothing to do."""
    done, old, new = int(state["epoch"]), int(state["config"]["train"]["epochs"]), cfg.train.epochs
    if new != old:
        if new < done:
            raise ConfigError(
                f"cannot resume {run.root} with train.epochs={new}: it already trained {done} "
                f"epochs; keep train.epochs={old}"
            )
        if not schedule_extends(cfg.optim, old, new, done):
            raise ConfigError(
                f"cannot resume {run.root} with train.epochs={new}: its {cfg.optim.schedule} "
                f"schedule over {old} epochs set the learning rate of the {done} epoch(s) "
                f"already trained, and over {new} epochs those would differ (a schedule no "
                f"fresh run has). Keep train.epochs={old}, or start a new run (another name) "
                "with the longer schedule; multistep and constant schedules extend exactly"
            )
    if not run.finished:
        return False
    if new == done:
        return True
    if not extend:
        raise RunExists(
            f"{run.root} is a finished run ({done} epochs); continuing it to {new} epochs "
            f"rewrites its results.json, last.pt and best.pt: pass --extend to do so (the "
            f"finished results are kept as results.epoch{done:04d}.json and "
            f"checkpoints/best.epoch{done:04d}.pt), or start a new run under another name"
        )
    return False


def build_model_from(cfg: ModelConfig, num_classes: int, role: str, data: Any = None) -> nn.Module:
    """Build a zoo/external model and load its checkpoint (teachers are expected to have one).

    With ``cfg.input`` the model is wrapped in :class:`eakd.models.InputAdapter`: it receives
    batches normalised with ``data.mean`` / ``data.std`` (the dataset's
    :class:`eakd.data.DatasetInfo`) and sees them resized to ``cfg.input.size`` and normalised
    with ``cfg.input.mean`` / ``cfg.input.std``. ``cfg.replace_head`` loads the checkpoint
    without its classifier.
    """
    from ...models import InputAdapter, build_model, load_checkpoint

    kwargs = dict(cfg.kwargs)
    if "num_classes" in kwargs:
        if kwargs.pop("num_classes") != num_classes:
            raise ConfigError(
                f"{role}.kwargs.num_classes={cfg.kwargs['num_classes']} but the dataset has "
                f"{num_classes} classes; the class count comes from the dataset: remove "
                f"{role}.kwargs.num_classes (or choose the dataset with that many classes)"
            )
    model = build_model(cfg.name, num_classes=num_classes, **kwargs)
    if cfg.checkpoint:
        load_checkpoint(model, cfg.checkpoint, replace_head=cfg.replace_head)
    elif role == "teacher":
        print(
            f"warning: teacher {cfg.name!r} has no checkpoint (teacher.checkpoint); "
            "distilling from a randomly initialised teacher"
        )
    if cfg.input is not None:
        if data is None:
            raise ValueError(f"{role}.input needs the dataset's normalisation (its DatasetInfo)")
        model = InputAdapter.from_spec(model, cfg.input, data.mean, data.std)
    return model


def _build_data(cfg: ExperimentConfig, dist: DistContext):
    """Train/test loaders from ``eakd.data`` (sharded across ranks under DDP)."""
    from ...data import build_dataset, build_loader, build_transform

    d = cfg.data
    if d.augment == "none":  # train on the test pipeline: no random crops or flips
        train_tf: Any = build_transform(d.name, "test")
    else:
        train_tf = d.augment
    train_ds = build_dataset(d.name, d.root, "train", transform=train_tf, **d.options)
    test_ds = build_dataset(d.name, d.root, "test", **d.options)
    # data.batch_size is the global batch (mdistiller's meaning), split over the processes.
    # Always shard with the distributed sampler (one replica when alone): every rank draws the
    # same permutation and takes every world-th index, so the global batch of step k is the
    # same for any number of processes and a DDP run matches a single one.
    if d.batch_size % dist.world_size:
        raise ValueError(
            f"data.batch_size={d.batch_size} is the global batch and must divide evenly over "
            f"the {dist.world_size} processes; use a multiple of {dist.world_size}"
        )
    common: dict[str, Any] = {
        "distributed": True,
        "num_replicas": dist.world_size,
        "rank": dist.rank,
        "seed": cfg.train.seed,
    }
    per_rank = d.batch_size // dist.world_size
    train_loader = build_loader(train_ds, per_rank, True, d.num_workers, **common)
    test_loader = build_loader(test_ds, d.test_batch_size, False, d.num_workers, **common)
    return train_loader, test_loader, test_ds.info


def _to_device(batch, device):
    return tuple(b.to(device, non_blocking=True) for b in batch)


def train(
    cfg: ExperimentConfig | dict[str, Any],
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    extend: bool = False,
) -> dict[str, Any]:
    """Train ``cfg``; returns the results written to ``results.json``.

    Args:
        cfg: an :class:`ExperimentConfig` or its plain-dict form (validated strictly).
        resume: continue the stopped run at ``<output_dir>/<name>`` (its ``checkpoints/last.pt``;
            when that cannot be read, the previous good copy ``last.prev.pt``). The config may
            differ only in :data:`RESUMABLE_CHANGES`; ``train.epochs`` only where the schedule
            extends exactly (:func:`schedule_extends`). Resuming a finished run returns its
            results without training.
        quiet: no progress bar and no per-epoch lines.
        overwrite: replace the run at that path (eakd's files only) instead of refusing.
        extend: with ``resume``, continue a finished run to a longer ``train.epochs`` (its
            finished results and best weights are kept beside, as ``*.epochNNNN.*``).
    """
    if isinstance(cfg, dict):
        cfg = from_dict(ExperimentConfig, cfg)
    save_epochs = set(cfg.log.save_epochs)
    if save_epochs and max(save_epochs) > cfg.train.epochs:
        raise ConfigError(
            f"log.save_epochs lists epoch {max(save_epochs)} but the run trains "
            f"train.epochs={cfg.train.epochs}; list epochs from 1 to {cfg.train.epochs}"
        )
    dist = setup_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    amp_dtype = autocast_dtype(cfg.train.precision, device)
    run = RunDir(Path(cfg.output_dir) / cfg.name)
    say = (lambda *a: None) if quiet or not dist.is_main else print

    run.prepare(resume or extend, overwrite=overwrite, main=dist.is_main)
    state = load_resumable(run.last)[0] if resume or extend else None
    if state is not None:
        check_resume(state["config"], to_dict(cfg), RESUMABLE_CHANGES, run.root)
        if _check_epochs(cfg, state, run, extend):
            say(f"{run.root} already finished its {state['epoch']} epochs; nothing to resume")
            return run.read_results()
        if run.finished and dist.is_main:  # --extend: keep what the finished run reported
            done = int(state["epoch"])
            atomic_copy(run.results, run.root / f"results.epoch{done:04d}.json")
            if run.best.is_file():
                atomic_copy(run.best, run.checkpoint(f"best.epoch{done:04d}"))

    train_loader, test_loader, info = _build_data(cfg, dist)
    num_classes = info.num_classes
    ea = resolve_ea(cfg, num_classes)
    student = build_model_from(cfg.student, num_classes, "student", info).to(device)
    teacher = None
    if cfg.teacher is not None and cfg.method.name != "vanilla":
        teacher = build_model_from(cfg.teacher, num_classes, "teacher", info).to(device)
    bins = cfg.log.entropy_bins if cfg.log.diagnostics else 0
    task = ClassificationTask(student, teacher, cfg.method, ea, num_classes, bins).to(device)
    params = task.trainable_parameters()
    optimizer = torch.optim.SGD(
        params,
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        nesterov=cfg.optim.nesterov,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    runner: nn.Module = task
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(task, device_ids=ids)

    start_epoch, best, history = 1, {"top1": -1.0, "epoch": 0}, []
    if state is not None:
        student.load_state_dict(state["model"])
        if task.distill is not None and state.get("objective"):
            task.distill.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        say(f"resuming {run.root} at epoch {start_epoch}")

    logger = None
    if dist.is_main:
        run.start()
        run.write_config(to_dict(cfg))
        resume_at = start_epoch - 1 if state is not None else None
        logger = RunLogger(
            run,
            resume_at,
            tensorboard=cfg.log.tensorboard,
            say=say,
            trackers=cfg.log.trackers,
            config=to_dict(cfg),
        )
        if state is None:
            run.reset_diagnostics()
            for path in list_snapshots(run).values():  # another run's, left in this folder
                path.unlink()
        else:
            run.truncate_diagnostics(start_epoch - 1)
            lost = sorted(e for e in save_epochs if e < start_epoch)
            lost = [e for e in lost if not run.checkpoint(snapshot_name(e)).exists()]
            if lost:
                say(
                    f"note: no snapshot of epoch(s) {lost} (log.save_epochs): the stopped run "
                    "passed them without saving one"
                )

    teacher_eval = state.get("teacher_eval") if state else None
    if teacher is not None and teacher_eval is None:
        t_res = evaluate(teacher, test_loader, device, dist, amp_dtype, task.ea_temperature)
        teacher_eval = {"top1": t_res["top1"], "top5": t_res["top5"]}
        if dist.is_main and cfg.log.test_entropies and not dist.enabled:
            save_state(t_res["entropies"].half(), run.teacher_entropies())
        say(f"teacher {cfg.teacher.name}: top-1 {teacher_eval['top1']:.2f}%")

    epochs = cfg.train.epochs
    step_times: list[float] = []
    last_eval: dict[str, Any] = {}
    guard = LossGuard(cfg.train.loss_ceiling, run.last, dist.is_main)
    where = {"epoch": start_epoch, "step": 0}
    try:
        for epoch in range(start_epoch, epochs + 1):
            torch.manual_seed(cfg.train.seed * 1_000_003 + epoch)  # dropout etc.: f(seed, epoch)
            train_loader.set_epoch(epoch)
            task.set_epoch(epoch)
            task.reset_diagnostics() if task.distill is not None else None
            lr = learning_rate(cfg.optim, epoch, epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            runner.train()
            sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "correct": 0, "n": 0}
            bar = _progress(train_loader, epoch, epochs, cfg.train.progress and not quiet, dist)
            t_epoch = time.perf_counter()
            for step, batch in enumerate(bar, 1):
                where.update(epoch=epoch, step=step)
                t0 = time.perf_counter()
                batch = _to_device(batch, device)
                at = f"epoch {epoch - 1}"
                with guard.step(step, epoch, at), autocast(device, amp_dtype):
                    result = runner(batch)
                loss = result["loss"]
                value = guard.check(float(loss.detach()), step, epoch, at)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                n = batch[-1].numel()
                sums["loss"] += value * n
                sums["ce"] += float(result["ce"].detach()) * n
                sums["kd"] += float(result["kd"].detach()) * n if "kd" in result else 0.0
                sums["correct"] += accuracy_counts(result["logits"].detach(), batch[-1], (1,))[0]
                sums["n"] += n
                if device.type == "cuda":  # count the step's queued backward/update kernels too
                    torch.cuda.synchronize(device)
                step_times.append(time.perf_counter() - t0)
                if hasattr(bar, "set_postfix"):
                    elapsed = time.perf_counter() - t_epoch
                    bar.set_postfix(
                        loss=f"{sums['loss'] / sums['n']:.3f}",
                        acc=f"{100 * sums['correct'] / sums['n']:.1f}",
                        img_s=f"{sums['n'] * dist.world_size / max(elapsed, 1e-9):.0f}",
                    )
            keys = ("loss", "ce", "kd", "correct", "n")
            totals = dict(
                zip(keys, dist.all_reduce_sum([sums[k] for k in keys], device), strict=True)
            )
            n_all = max(totals["n"], 1)
            row: dict[str, Any] = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": totals["loss"] / n_all,
                "train_ce": totals["ce"] / n_all,
                "train_kd": totals["kd"] / n_all,
                "train_top1": 100.0 * totals["correct"] / n_all,
                "epoch_time_s": time.perf_counter() - t_epoch,
                "step_time_s": sum(step_times[-len(train_loader) :]) / max(len(train_loader), 1),
            }
            if epoch % cfg.train.eval_every == 0 or epoch == epochs:
                want_h = cfg.log.test_entropies and not dist.enabled
                last_eval = evaluate(
                    student,
                    test_loader,
                    device,
                    dist,
                    amp_dtype,
                    task.ea_temperature if want_h else None,
                )
                row.update(
                    test_top1=last_eval["top1"],
                    test_top5=last_eval["top5"],
                    test_loss=last_eval["loss"],
                )
                if last_eval["top1"] > best["top1"]:
                    best = {"top1": last_eval["top1"], "top5": last_eval["top5"], "epoch": epoch}
                if dist.is_main and want_h:
                    save_state(last_eval["entropies"].half(), run.student_entropies(epoch))
            history.append({k: v for k, v in row.items() if isinstance(v, (int, float))})
            diagnostics = task.distill is not None and cfg.log.diagnostics
            if diagnostics and dist.enabled:
                task.reduce_diagnostics(device)
            if dist.is_main:
                if diagnostics:
                    diag = task.diagnostics()
                    run.append_diagnostics({"epoch": epoch, **diag})
                    # the scalar statistics join the epoch's log row (the histograms stay in
                    # diagnostics.jsonl)
                    row.update({f"ea_{k}": v for k, v in diag.items() if not k.startswith("hist")})
                logger.log(row)
                checkpoint = {
                    # mdistiller/RepDistiller-compatible: {"model": state_dict, ...}
                    "model": student.state_dict(),
                    "objective": task.distill.state_dict() if task.distill is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "rng": get_rng_state(),
                    "best": best,
                    "history": history,
                    "teacher_eval": teacher_eval,
                    "config": to_dict(cfg),
                    "ea": ea.to_dict(),
                    "arch": cfg.student.name,
                }
                if epoch in save_epochs:
                    # before last.pt: a run stopped in between repeats this epoch on resume and
                    # writes the same snapshot again
                    snapshot = {
                        "model": checkpoint["model"],
                        "epoch": epoch,
                        "arch": cfg.student.name,
                        "config": checkpoint["config"],
                    }
                    save_state(snapshot, run.checkpoint(snapshot_name(epoch)))
                save_checkpoint(checkpoint, run.last)
                if best["epoch"] == epoch:
                    best_state = {
                        "model": checkpoint["model"],
                        "epoch": epoch,
                        "arch": cfg.student.name,
                        "best_top1": best["top1"],
                        "config": checkpoint["config"],
                    }
                    save_state(best_state, run.best)
                if "test_top1" in row:
                    say(
                        f"epoch {epoch}/{epochs}: train loss {row['train_loss']:.4f}, "
                        f"test top-1 {row['test_top1']:.2f}% (best {best['top1']:.2f}% @ "
                        f"{best['epoch']})"
                    )
            dist.barrier()
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C: say where, and what to resume from
        saved = where["epoch"] - 1
        raise guard.interrupted(
            f"epoch {where['epoch']}, step {where['step']}", f"epoch {saved}" if saved else ""
        ) from exc

    results = {
        "name": cfg.name,
        "method": cfg.method.name,
        "ea": ea.to_dict(),
        "seed": cfg.train.seed,
        "epochs": epochs,
        "best_top1": best["top1"],
        "best_top5": best.get("top5"),
        "best_epoch": best["epoch"],
        "last_top1": history[-1].get("test_top1") if history else None,
        "last_top5": history[-1].get("test_top5") if history else None,
        "teacher_top1": teacher_eval["top1"] if teacher_eval else None,
        "step_time_s": (sum(h["step_time_s"] for h in history) / len(history)) if history else None,
        "history": history,
    }
    if dist.is_main:
        run.write_results(results)
        logger.close()
    return results


def _progress(loader, epoch, epochs, enabled, dist):
    if not enabled or not dist.is_main:
        return loader
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return loader
    return tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True)
