"""One training loop for Faster R-CNN FPN detectors, with or without RoI-level distillation.

Iteration-based, as Detectron2 schedules COCO: SGD with linear warm-up and a multistep decay.
Under ``torchrun --nproc_per_node N`` it runs DDP (gloo on CPU, nccl on GPU); only rank 0
writes files. The run directory ``output_dir/name`` (:class:`~eakd.engines.run.RunDir`) holds
``config.yaml``, ``train_log.csv``, ``eval_log.csv``, ``checkpoints/last.pt`` (student,
optimiser, scheduler, iteration, every rank's RNG states and the config: ``--resume``
continues exactly, with the same data order, flips and RoI sampling), ``checkpoints/final.pt``
(``{"model": state_dict, ...}``: usable as a teacher checkpoint) and ``results.json`` (the
final COCO metrics and the resolved EA settings).
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...adaptive import EntropyAdaptive
from ...core import EASettings
from ..run import (
    LossGuard,
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
    write_json,
)
from ..utils import (
    DistContext,
    get_rng_state,
    resolve_device,
    seed_everything,
    set_rng_state,
    setup_distributed,
)
from .config import DetectionConfig
from .data import CocoDetection, collate_detection
from .distill import DetectionDistiller, build_distill_loss
from .evaluate import coco_evaluate, predict
from .model import build_detector, load_detector_weights

__all__ = ["FINAL", "RESUMABLE_CHANGES", "TRAIN_COLUMNS", "evaluate", "lr_factor", "train"]

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
TRAIN_COLUMNS = (
    "iteration", "epoch", "lr", "loss", *LOSS_TERMS, "loss_distill",
    "ea_weight_mean", "ea_weight_fg", "ea_weight_bg", "teacher_entropy", "student_entropy",
    "sec_per_iter",
)  # fmt: skip
#: The trained student: ``checkpoints/final.pt``.
FINAL = "final"
#: Keys that may change when resuming (they do not change what is computed).
RESUMABLE_CHANGES = (
    "name", "output_dir", "data.workers", "data.eval_batch_size", "optim.max_iters",
    "train.seed", "train.precision", "train.device", "train.threads", "train.deterministic",
    "train.progress", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.loss_ceiling", "train.tensorboard", "train.trackers",
)  # fmt: skip


# --------------------------------------------------------------------------- distributed
def _gather(dist: DistContext, obj: Any) -> list[Any]:
    if not dist.enabled:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _broadcast(dist: DistContext, obj: Any) -> Any:
    if not dist.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _gather_rng(dist: DistContext) -> list[dict[str, Any]]:
    """Every rank's RNG states (through bytes: all_gather_object mishandles uint32 tensors)."""
    state = get_rng_state()
    if not dist.enabled:
        return [state]
    buf = io.BytesIO()
    torch.save(state, buf)
    blobs = _gather(dist, buf.getvalue())
    return [torch.load(io.BytesIO(b), weights_only=True) for b in blobs]


def _mean(dist: DistContext, values: dict[str, float]) -> dict[str, float]:
    if not dist.enabled or not values:
        return values
    gathered = _gather(dist, values)
    return {k: sum(g[k] for g in gathered) / len(gathered) for k in values}


# --------------------------------------------------------------------------- schedule, data
def lr_factor(iteration: int, optim) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based).

    Linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters``, then ``gamma`` per
    milestone passed (Detectron2's ``WarmupMultiStepLR``).
    """
    factor = optim.gamma ** sum(iteration >= m for m in optim.milestones)
    if iteration < optim.warmup_iters:
        alpha = iteration / optim.warmup_iters
        factor *= optim.warmup_factor * (1 - alpha) + alpha
    return factor


class _EpochBatches:
    """This rank's batches of one epoch: a seeded permutation, split into global batches.

    Every rank draws the same permutation from ``(seed, epoch)`` and takes its slice of each
    global batch; ``start`` skips the batches a resumed run already trained on.
    """

    def __init__(self, n: int, batch: int, dist: DistContext, seed: int, epoch: int, start: int):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        self.perm = torch.randperm(n, generator=g).tolist()
        self.batch, self.dist, self.start = batch, dist, start
        self.per_rank = batch // dist.world_size
        self.num_batches = n // batch

    def __len__(self) -> int:
        return self.num_batches - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, self.num_batches):
            lo = b * self.batch + self.dist.rank * self.per_rank
            yield self.perm[lo : lo + self.per_rank]


def _loader(dataset, batch_sampler, workers: int, seed: int):
    # a private generator, so building a loader never advances the global RNG (exact resume)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate_detection,
        generator=torch.Generator().manual_seed(seed),
    )


def _datasets(cfg: DetectionConfig, train: bool = True):
    d = cfg.data
    val = CocoDetection(
        d.val_images,
        d.val_annotations,
        box_tolerance=d.box_tolerance,
        contiguous_labels=d.contiguous_labels,
    )
    if not train:
        return None, val
    tr = CocoDetection(
        d.train_images,
        d.train_annotations,
        train=True,
        hflip=d.hflip,
        filter_empty=d.filter_empty,
        box_tolerance=d.box_tolerance,
        contiguous_labels=d.contiguous_labels,
    )
    if tr.label_to_category != val.label_to_category:
        raise ValueError(
            f"{d.train_annotations} and {d.val_annotations} list different category ids "
            f"({tr.label_to_category[1:]} vs {val.label_to_category[1:]})"
        )
    return tr, val


# --------------------------------------------------------------------------- building blocks
def _build_task(
    cfg: DetectionConfig, ea: EASettings, num_classes: int, device: torch.device
) -> DetectionDistiller:
    student = build_detector(cfg.student, num_classes)
    teacher, loss, weight = None, None, 1.0
    if cfg.distill is not None:
        teacher = build_detector(cfg.teacher, num_classes)  # loads teacher.checkpoint strictly
        loss = build_distill_loss(cfg.distill.loss, cfg.distill.loss_kwargs, ea)
        weight = cfg.distill.weight
    return DetectionDistiller(student, teacher, loss, weight).to(device)


def _optimizer(model: nn.Module, optim) -> torch.optim.SGD:
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm)
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (no_decay if is_norm else decay).append(p)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)


def _ea_summary(stats, labels: torch.Tensor) -> dict[str, float]:
    """Mean EA weight overall, on foreground and on background RoIs, and mean entropies."""
    w, fg = stats.weights, labels > 0
    return {
        "ea_weight_mean": float(w.mean()),
        "ea_weight_fg": float(w[fg].mean()) if fg.any() else 0.0,
        "ea_weight_bg": float(w[~fg].mean()) if (~fg).any() else 0.0,
        "teacher_entropy": float(stats.teacher_entropy.mean()),
        "student_entropy": float(stats.student_entropy.mean()),
    }


def _evaluate_model(
    model: nn.Module,
    dataset: CocoDetection,
    cfg: DetectionConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    dist: DistContext,
) -> dict[str, float]:
    """COCO mAP of ``model`` on ``dataset``; every rank predicts its shard, rank 0 scores."""
    shard = list(range(dist.rank, len(dataset), dist.world_size))
    bs = cfg.data.eval_batch_size
    batches = [shard[i : i + bs] for i in range(0, len(shard), bs)]
    loader = _loader(dataset, batches, cfg.data.workers, cfg.train.seed)
    bar = None
    if cfg.train.progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batches), desc="eval", leave=False, dynamic_ncols=True)
    with autocast(device, dtype):
        results = predict(model, loader, device, dataset.label_to_category, bar)
    if bar is not None:
        bar.close()
    gathered = _gather(dist, results)
    metrics = None
    if dist.is_main:
        merged = [r for part in gathered for r in part]
        metrics = coco_evaluate(dataset.coco, merged, image_ids=dataset.ids)
    return _broadcast(dist, metrics)


# --------------------------------------------------------------------------- entry points
def train(
    cfg: DetectionConfig, resume: bool = False, overwrite: bool = False, extend: bool = False
) -> dict[str, Any]:
    """Train the configured detector (plain or distilled).

    Args:
        cfg: the experiment.
        resume: continue the stopped run in ``output_dir/name`` from ``checkpoints/last.pt``
            (or its previous good copy); the config may differ from the stopped run's only in
            :data:`RESUMABLE_CHANGES`. A finished run is returned as it is.
        overwrite: replace an existing run at that path (eakd's files only).
        extend: with a longer ``optim.max_iters``, continue a finished run (the iteration
            schedule does not depend on ``max_iters``, so this is exact); its results and
            final weights are kept beside as ``*.iterNNNNNNN.*``.

    Returns:
        ``results.json``'s content (``metrics``, the resolved ``ea`` settings, ...) with
        ``seconds`` and the paths ``run_dir``, ``last`` and ``model`` (the final weights).
    """
    cfg.validate()
    tc, optim = cfg.train, cfg.optim
    run = cfg.run_dir
    dist = setup_distributed(tc.device)
    run.prepare(resume or extend, overwrite=overwrite, main=dist.is_main)
    device = resolve_device(tc.device, dist.local_rank)
    dtype = autocast_dtype(tc.precision, device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if cfg.data.batch_size % dist.world_size:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} must divide evenly over "
            f"{dist.world_size} processes"
        )
    # ranks differ in their RoI sampling; data order and flips are shared (seeded per epoch)
    seed_everything(tc.seed + dist.rank, tc.deterministic)

    # data, model, optimiser
    train_set, val_set = _datasets(cfg)
    iters_per_epoch = len(train_set) // cfg.data.batch_size
    if iters_per_epoch < 1:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} exceeds the {len(train_set)} training images"
        )
    method = cfg.distill.loss if cfg.distill is not None else None
    ea = cfg.ea.resolve(method, num_classes=train_set.num_classes + 1)  # K + 1 RoI classes
    task = _build_task(cfg, ea, train_set.num_classes, device)
    optimizer = _optimizer(task.student, optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, optim))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")

    # resume
    start, state = 0, None
    if resume or extend:
        state = load_resumable(run.last)[0]
        check_resume(state["config"], cfg.to_dict(), RESUMABLE_CHANGES, run.root)
        done = int(state["iteration"])
        if run.finished and done >= optim.max_iters:
            if dist.is_main:
                print(f"{run.root} already finished its {done} iterations; nothing to resume")
            return {**run.read_results(), "run_dir": str(run.root), "last": str(run.last)}
        if run.finished and not extend:
            raise RunExists(
                f"{run.root} is a finished run ({done} iterations); continuing it to "
                f"{optim.max_iters} rewrites its results.json and final.pt: pass --extend to do "
                f"so (they are kept as results.iter{done:07d}.json and "
                f"checkpoints/final.iter{done:07d}.pt), or start a new run under another name"
            )
        if run.finished and dist.is_main:
            atomic_copy(run.results, run.root / f"results.iter{done:07d}.json")
            if run.checkpoint(FINAL).is_file():
                atomic_copy(run.checkpoint(FINAL), run.checkpoint(f"{FINAL}.iter{done:07d}"))
        task.student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["iteration"])
    model: nn.Module = task
    if dist.enabled:
        model = nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None
        )
    if dist.is_main:
        run.start()
        run.write_config(cfg.to_dict())
        run.create()
        kept = start if state is not None else None
        train_log = RunLogger(
            run,
            resume_at=kept,
            tensorboard=tc.tensorboard,
            step_key="iteration",
            say=print,
            trackers=tc.trackers,
            config=cfg.to_dict(),
        )
        eval_log = RunLogger(
            run,
            kept,
            tensorboard=tc.tensorboard,
            step_key="iteration",
            path=run.eval_log,
            trackers=train_log.trackers,
        )
    if state is not None:
        # restored last: everything above may draw random numbers
        rngs = state["rng"]
        if len(rngs) == dist.world_size:
            set_rng_state(rngs[dist.rank])
        elif dist.is_main:
            warnings.warn(
                f"{run.last} was written by {len(rngs)} processes, this run has "
                f"{dist.world_size}: it continues, but not bit-exactly",
                stacklevel=2,
            )
    classes = {"names": train_set.class_names, "category_ids": train_set.label_to_category[1:]}

    # the loop
    bar = None
    if tc.progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=optim.max_iters, initial=start, desc="train", dynamic_ncols=True)
    ea_loss = task.loss if isinstance(task.loss, EntropyAdaptive) else None
    sums: dict[str, float] = {}
    count, t0 = 0, time.perf_counter()
    t_start = time.perf_counter()
    metrics: dict[str, float] | None = state.get("metrics") if state is not None else None
    it = start
    model.train()
    guard = LossGuard(tc.loss_ceiling, run.last, dist.is_main)
    saved = {"at": start}
    try:
        while it < optim.max_iters:
            epoch = it // iters_per_epoch
            train_set.set_epoch(epoch, tc.seed)
            batches = _EpochBatches(
                len(train_set), cfg.data.batch_size, dist, tc.seed, epoch, it % iters_per_epoch
            )
            for images, targets in _loader(train_set, batches, cfg.data.workers, tc.seed + epoch):
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [
                    {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)}
                    for t in targets
                ]
                at = f"iteration {saved['at']}" if saved["at"] else ""
                with guard.step(it + 1, None, at), autocast(device, dtype):
                    losses = model(images, targets)
                loss = losses["loss"]
                guard.check(float(loss.detach()), it + 1, None, at)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if tc.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(task.student.parameters(), tc.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                it += 1

                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if ea_loss is not None and ea_loss.last_stats is not None:
                    for k, v in _ea_summary(ea_loss.last_stats, task.last_logits[2]).items():
                        sums[k] = sums.get(k, 0.0) + v
                count += 1
                if bar is not None:
                    bar.update(1)
                if it % tc.log_every == 0 or it == optim.max_iters:
                    avg = _mean(dist, {k: v / count for k, v in sums.items()})
                    row = {
                        "iteration": it,
                        "epoch": (it - 1) // iters_per_epoch,
                        "lr": optimizer.param_groups[0]["lr"],
                        "sec_per_iter": (time.perf_counter() - t0) / count,
                        **avg,
                    }
                    if dist.is_main:
                        train_log.log({c: row.get(c, "") for c in TRAIN_COLUMNS})
                    if bar is not None:
                        bar.set_postfix(loss=f"{avg['loss']:.3f}", lr=f"{row['lr']:.2g}")
                    sums, count, t0 = {}, 0, time.perf_counter()
                final = it == optim.max_iters
                if final or (tc.eval_every and it % tc.eval_every == 0):
                    metrics = _evaluate_model(task.student, val_set, cfg, device, dtype, dist)
                    if dist.is_main:
                        eval_log.log({"iteration": it, **metrics})
                        if bar is not None:
                            bar.write(f"iteration {it}: " + _format_metrics(metrics))
                if final or (tc.checkpoint_every and it % tc.checkpoint_every == 0):
                    rngs = _gather_rng(dist)
                    if dist.is_main:
                        save_checkpoint(
                            {
                                "model": task.student.state_dict(),
                                "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(),
                                "scaler": scaler.state_dict(),
                                "iteration": it,
                                "epoch": it // iters_per_epoch,
                                "rng": rngs,
                                "config": cfg.to_dict(),
                                "classes": classes,
                                "metrics": metrics,
                            },
                            run.last,
                        )
                    saved["at"] = it
                if final:
                    break
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C: say where, and what to resume from
        at = f"iteration {saved['at']}" if saved["at"] else ""
        raise guard.interrupted(f"iteration {it + 1}", at) from exc
    if bar is not None:
        bar.close()
    if state is not None and start >= optim.max_iters and metrics is None:
        metrics = _evaluate_model(task.student, val_set, cfg, device, dtype, dist)

    # the results
    model_path = run.checkpoint(FINAL)
    results = {
        "name": cfg.name,
        "method": method or "vanilla",
        "seed": tc.seed,
        "iteration": it,
        "metrics": metrics,
        "ea": ea.to_dict(),
    }
    if dist.is_main:
        weights = {"model": task.student.state_dict(), "config": cfg.to_dict(), "classes": classes}
        save_state(weights, model_path)
        run.write_results(results)
        train_log.close()
        eval_log.close()
    dist.barrier()
    return {
        **results,
        "seconds": time.perf_counter() - t_start,
        "run_dir": str(run.root),
        "last": str(run.last),
        "model": str(model_path),
    }


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def evaluate(cfg: DetectionConfig, checkpoint: str | None = None) -> dict[str, float]:
    """COCO mAP of the configured student on ``data.val_*``.

    ``checkpoint`` defaults to the run's ``checkpoints/final.pt``, then ``checkpoints/last.pt``.
    Rank 0 writes ``eval.json`` into the run directory.
    """
    cfg.validate(need_train=False, check_files=False)  # the teacher is not needed here
    run = cfg.run_dir
    dist = setup_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    dtype = autocast_dtype(cfg.train.precision, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if checkpoint is None:
        found = [p for p in (run.checkpoint(FINAL), run.last) if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"no checkpoints/{FINAL}.pt or checkpoints/last.pt in {run.root}; train first "
                "or pass --checkpoint PATH"
            )
        checkpoint = str(found[0])
    _, val_set = _datasets(cfg, train=False)
    model = build_detector(cfg.student, val_set.num_classes)
    load_detector_weights(model, checkpoint)
    model.to(device)
    metrics = _evaluate_model(model, val_set, cfg, device, dtype, dist)
    if dist.is_main:
        write_json(run.eval, {"checkpoint": checkpoint, **metrics})
    return metrics
