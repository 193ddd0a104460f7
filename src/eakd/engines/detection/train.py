"""One training loop for Faster R-CNN FPN detectors, with or without RoI-level distillation.

Iteration-based, as Detectron2 schedules COCO: SGD with linear warm-up and a multistep decay.
Checkpoints hold the student, optimiser, scheduler, iteration, every rank's RNG states and the
config, written atomically; ``resume`` continues exactly (same data order, flips, RoI sampling).
Under ``torchrun --nproc_per_node N`` it runs DDP (gloo on CPU, nccl on GPU); only rank 0
writes files. Output folder: ``config.yaml``, ``train_log.csv``, ``eval_log.csv``,
``checkpoint_last.pt``, ``model_final.pt`` (``{"model": state_dict, ...}``: usable as a
teacher checkpoint), ``metrics.json``.
"""

from __future__ import annotations

import csv
import io
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ...adaptive import EntropyAdaptive
from ..utils import (
    DistContext,
    atomic_write_text,
    get_rng_state,
    resolve_device,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    setup_distributed,
    write_json,
)
from .config import DetectionConfig
from .data import CocoDetection, collate_detection
from .distill import DetectionDistiller, build_distill_loss
from .evaluate import METRICS, coco_evaluate, predict
from .model import build_detector, load_detector_weights

__all__ = ["TRAIN_COLUMNS", "evaluate", "lr_factor", "train"]

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
TRAIN_COLUMNS = (
    "iteration", "epoch", "lr", "loss", *LOSS_TERMS, "loss_distill",
    "ea_weight_mean", "ea_weight_fg", "ea_weight_bg", "teacher_entropy", "student_entropy",
    "sec_per_iter",
)  # fmt: skip
EVAL_COLUMNS = ("iteration", *METRICS)
#: Config sections that may change when resuming (they do not change what is computed).
RESUMABLE_CHANGES = ("run", "data.workers", "data.eval_batch_size", "optim.max_iters")


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


# --------------------------------------------------------------------------- checkpoints, logs
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "loss_kwargs" and k != "backbone_kwargs":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [
        k
        for k in keys
        if a.get(k) != b.get(k)
        and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)
    ]


class _CsvLog:
    """Append-only CSV with fixed columns; on resume, rows past the checkpoint's iteration
    (written by the stopped run after its last checkpoint) are dropped."""

    def __init__(self, path: str, columns: tuple[str, ...], keep_until: int | None) -> None:
        self.path, self.columns = path, columns
        rows: list[dict[str, str]] = []
        if keep_until is not None and os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= keep_until]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(path, buf.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writerow({k: _fmt(row.get(k, "")) for k in self.columns})


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# --------------------------------------------------------------------------- building blocks
def _build_task(cfg: DetectionConfig, num_classes: int, device: torch.device) -> DetectionDistiller:
    student = build_detector(cfg.student, num_classes)
    teacher, loss, weight = None, None, 1.0
    if cfg.distill is not None:
        teacher = build_detector(cfg.teacher, num_classes)  # loads teacher.checkpoint strictly
        ea = cfg.distill.ea
        loss = build_distill_loss(
            cfg.distill.loss, cfg.distill.loss_kwargs, ea.enabled, ea.temperature,
            ea.max_entropy, ea.kind, ea.normalize,
        )  # fmt: skip
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


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _evaluate_model(
    model: nn.Module,
    dataset: CocoDetection,
    cfg: DetectionConfig,
    device: torch.device,
    dist: DistContext,
    progress: bool,
) -> dict[str, float]:
    """COCO mAP of ``model`` on ``dataset``; every rank predicts its shard, rank 0 scores."""
    shard = list(range(dist.rank, len(dataset), dist.world_size))
    bs = cfg.data.eval_batch_size
    batches = [shard[i : i + bs] for i in range(0, len(shard), bs)]
    loader = _loader(dataset, batches, cfg.data.workers, cfg.run.seed)
    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batches), desc="eval", leave=False, dynamic_ncols=True)
    with _autocast(device, cfg.run.precision):
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
def train(cfg: DetectionConfig, resume: str | None = None) -> dict[str, Any]:
    """Train the configured detector (plain or distilled); return the final metrics and paths.

    Args:
        cfg: the validated experiment.
        resume: a checkpoint path, or ``"auto"`` for ``run.output_dir/checkpoint_last.pt`` when
            it exists. The config must match the checkpoint's except for
            :data:`RESUMABLE_CHANGES`.
    """
    cfg.validate()
    run, optim = cfg.run, cfg.optim
    dist = setup_distributed(run.device)
    device = resolve_device(run.device, dist.local_rank)
    if run.threads:
        torch.set_num_threads(run.threads)
    if cfg.data.batch_size % dist.world_size:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} must divide evenly over "
            f"{dist.world_size} processes"
        )
    # ranks differ in their RoI sampling; data order and flips are shared (seeded per epoch)
    seed_everything(run.seed + dist.rank, run.deterministic)
    out = run.output_dir
    last_path = os.path.join(out, "checkpoint_last.pt")
    if resume == "auto":
        resume = last_path if os.path.isfile(last_path) else None
    if resume is None and os.path.isfile(last_path):
        raise FileExistsError(
            f"{out} already holds a run (checkpoint_last.pt); resume it with --resume auto, "
            "or choose another run.output_dir"
        )

    train_set, val_set = _datasets(cfg)
    iters_per_epoch = len(train_set) // cfg.data.batch_size
    if iters_per_epoch < 1:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} exceeds the {len(train_set)} training images"
        )
    task = _build_task(cfg, train_set.num_classes, device)
    optimizer = _optimizer(task.student, optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, optim))
    scaler = torch.amp.GradScaler(device.type, enabled=run.precision == "fp16")

    start = 0
    state = None
    if resume is not None:
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"no checkpoint to resume from at {resume!r}")
        state = torch.load(resume, map_location="cpu", weights_only=True)
        changed = _config_changes(state["config"], cfg.to_dict())
        if changed:
            raise ValueError(
                f"cannot resume from {resume}: the config differs in {', '.join(changed)}; "
                "resume with the checkpoint's config (only run.*, data.workers, "
                "data.eval_batch_size and optim.max_iters may change)"
            )
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
        import yaml

        os.makedirs(out, exist_ok=True)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write_text(os.path.join(out, "config.yaml"), text)
        keep = start if state is not None else None
        train_log = _CsvLog(os.path.join(out, "train_log.csv"), TRAIN_COLUMNS, keep)
        eval_log = _CsvLog(os.path.join(out, "eval_log.csv"), EVAL_COLUMNS, keep)
    if state is not None:
        # restored last: everything above may draw random numbers
        rngs = state["rng"]
        if len(rngs) == dist.world_size:
            set_rng_state(rngs[dist.rank])
        elif dist.is_main:
            warnings.warn(
                f"{resume} was written by {len(rngs)} processes, this run has "
                f"{dist.world_size}: it continues, but not bit-exactly",
                stacklevel=2,
            )
    classes = {"names": train_set.class_names, "category_ids": train_set.label_to_category[1:]}

    def save(iteration: int, metrics: dict[str, float] | None) -> None:
        rngs = _gather_rng(dist)
        if dist.is_main:
            save_checkpoint(
                {
                    "model": task.student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "iteration": iteration,
                    "epoch": iteration // iters_per_epoch,
                    "rng": rngs,
                    "config": cfg.to_dict(),
                    "classes": classes,
                    "metrics": metrics,
                },
                last_path,
            )

    bar = None
    if run.progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=optim.max_iters, initial=start, desc="train", dynamic_ncols=True)
    ea_loss = task.loss if isinstance(task.loss, EntropyAdaptive) else None
    sums: dict[str, float] = {}
    count, t0 = 0, time.perf_counter()
    t_start = time.perf_counter()
    metrics: dict[str, float] | None = state.get("metrics") if state is not None else None
    saved_at = start if state is not None else None
    it = start
    model.train()
    while it < optim.max_iters:
        epoch = it // iters_per_epoch
        train_set.set_epoch(epoch, run.seed)
        batches = _EpochBatches(
            len(train_set), cfg.data.batch_size, dist, run.seed, epoch, it % iters_per_epoch
        )
        for images, targets in _loader(train_set, batches, cfg.data.workers, run.seed + epoch):
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [
                {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
            ]
            with _autocast(device, run.precision):
                losses = model(images, targets)
            loss = losses["loss"]
            if not torch.isfinite(loss.detach()):
                terms = {k: float(v.detach()) for k, v in losses.items()}
                last = f"{last_path} (iteration {saved_at})" if saved_at is not None else "none"
                raise FloatingPointError(
                    f"non-finite loss at iteration {it + 1}: {terms}; stopped without writing; "
                    f"last good checkpoint: {last}. Lower optim.lr or check the data."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if optim.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(task.student.parameters(), optim.clip_grad_norm)
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
            if it % run.log_every == 0 or it == optim.max_iters:
                avg = _mean(dist, {k: v / count for k, v in sums.items()})
                row = {
                    "iteration": it,
                    "epoch": (it - 1) // iters_per_epoch,
                    "lr": optimizer.param_groups[0]["lr"],
                    "sec_per_iter": (time.perf_counter() - t0) / count,
                    **avg,
                }
                if dist.is_main:
                    train_log.write(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{avg['loss']:.3f}", lr=f"{row['lr']:.2g}")
                sums, count, t0 = {}, 0, time.perf_counter()
            final = it == optim.max_iters
            if final or (run.eval_every and it % run.eval_every == 0):
                metrics = _evaluate_model(task.student, val_set, cfg, device, dist, run.progress)
                if dist.is_main:
                    eval_log.write({"iteration": it, **metrics})
                    if bar is not None:
                        bar.write(f"iteration {it}: " + _format_metrics(metrics))
            if final or (run.checkpoint_every and it % run.checkpoint_every == 0):
                save(it, metrics)
                saved_at = it
            if final:
                break
    if bar is not None:
        bar.close()
    if state is not None and start >= optim.max_iters and metrics is None:
        metrics = _evaluate_model(task.student, val_set, cfg, device, dist, run.progress)
    final_path = os.path.join(out, "model_final.pt")
    if dist.is_main:
        save_checkpoint(
            {"model": task.student.state_dict(), "config": cfg.to_dict(), "classes": classes},
            final_path,
        )
        write_json(os.path.join(out, "metrics.json"), {"iteration": it, **(metrics or {})})
    dist.barrier()
    return {
        "metrics": metrics,
        "iteration": it,
        "seconds": time.perf_counter() - t_start,
        "output_dir": out,
        "checkpoint": last_path,
        "model": final_path,
    }


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def evaluate(cfg: DetectionConfig, checkpoint: str | None = None) -> dict[str, float]:
    """COCO mAP of the configured student on ``data.val_*``.

    ``checkpoint`` defaults to ``run.output_dir/model_final.pt``, then ``checkpoint_last.pt``.
    Rank 0 writes ``eval.json`` next to the checkpoint's run.
    """
    cfg.validate(need_train=False, check_files=False)  # the teacher is not needed here
    dist = setup_distributed(cfg.run.device)
    device = resolve_device(cfg.run.device, dist.local_rank)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if checkpoint is None:
        for name in ("model_final.pt", "checkpoint_last.pt"):
            path = os.path.join(cfg.run.output_dir, name)
            if os.path.isfile(path):
                checkpoint = path
                break
        else:
            raise FileNotFoundError(
                f"no model_final.pt or checkpoint_last.pt in {cfg.run.output_dir!r}; train "
                "first or pass --checkpoint PATH"
            )
    _, val_set = _datasets(cfg, train=False)
    model = build_detector(cfg.student, val_set.num_classes)
    load_detector_weights(model, checkpoint)
    model.to(device)
    metrics = _evaluate_model(model, val_set, cfg, device, dist, cfg.run.progress)
    if dist.is_main:
        report = {"checkpoint": checkpoint, **metrics}
        write_json(os.path.join(cfg.run.output_dir, "eval.json"), report)
    return metrics
