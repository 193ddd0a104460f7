"""``build_loader``: seeded, optionally distributed data loading with an in-memory fast path."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from .batch import BatchAugment, InMemoryLoader, epoch_seed

__all__ = [
    "SeededDataLoader",
    "SeededRandomSampler",
    "batch_pipeline",
    "build_loader",
    "seed_worker",
    "set_epoch",
]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and ``numpy`` from the worker's torch seed.

    DataLoader seeds torch in worker k with ``base_seed + k`` (base_seed from the loader's
    generator); libraries drawing from ``random`` or ``numpy`` get the same determinism.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 -- third-party transforms draw from the global state
    random.seed(seed)


class SeededRandomSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    Like ``DistributedSampler(shuffle=True)`` on one process: call :meth:`set_epoch` each epoch;
    a run resumed at epoch e sees the same order as the original run.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class SeededDataLoader(DataLoader):
    """A ``DataLoader`` whose epoch e (order and worker seeds) depends only on ``(seed, e)``.

    Epochs count up on each iteration; :meth:`set_epoch` sets the next one (for resuming).
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Any:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if self.generator is not None:
            # Worker seeds are drawn from this generator when the epoch's iterator starts.
            self.generator.manual_seed(epoch_seed(self.seed, epoch))
        return super().__iter__()


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``loader.set_epoch(epoch)`` or ``loader.sampler.set_epoch(epoch)`` when present."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)


def batch_pipeline(dataset: Any) -> dict[str, Any] | None:
    """The batched equivalent of ``dataset.transform`` for :class:`InMemoryLoader`, or None.

    Equivalent pipelines exist for datasets with ``as_tensors()`` whose transform is None (raw
    tensors: no augmentation, no normalisation) or the dataset's standard transform (train:
    :class:`BatchAugment` with the info's crop padding and flip; both splits: Normalize).
    """
    if not hasattr(dataset, "as_tensors"):
        return None
    transform = getattr(dataset, "transform", None)
    if transform is None:
        return {"augment": None, "mean": None, "std": None}
    from .transforms import StandardTransform

    if not isinstance(transform, StandardTransform) or transform.info.resized_crop:
        return None
    info = transform.info
    augment = None
    if transform.split == "train" and (info.crop_padding or info.hflip):
        augment = BatchAugment(info.crop_padding, info.hflip)
    return {"augment": augment, "mean": info.mean, "std": info.std}


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(length)``: an evaluation shard. Unlike
    :class:`DistributedSampler` it does not pad the shards to equal length, so metrics summed
    over the ranks count every sample exactly once."""

    def __init__(self, length: int, num_replicas: int | None = None, rank: int | None = None):
        if num_replicas is None or rank is None:
            num_replicas = torch.distributed.get_world_size()
            rank = torch.distributed.get_rank()
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.length, self.num_replicas, self.rank = length, num_replicas, rank

    def __iter__(self):
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    distributed: bool = False,
    seed: int = 0,
    *,
    drop_last: bool | None = None,
    in_memory: bool | str = "auto",
    device: torch.device | str | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> DataLoader | InMemoryLoader:
    """A loader for training (shuffled, ``drop_last``) or evaluation (in order, every sample).

    Args:
        dataset: a dataset from :func:`eakd.data.build_dataset` or any map-style dataset.
        batch_size: per-process batch size.
        train: shuffle and drop the last incomplete batch (``drop_last`` overrides the latter).
        num_workers: DataLoader worker processes (ignored by the in-memory path).
        distributed: shard with ``DistributedSampler`` (needs an initialised process group, or
            ``num_replicas`` and ``rank``); evaluation shards are padded to equal length.
        seed: seeds the order, the worker RNGs (``seed_worker`` + a generator) and the
            in-memory augmentation; epoch e depends only on (seed, e). Epochs count up on each
            iteration; ``loader.set_epoch(e)`` sets the next one when resuming.
        in_memory: "auto" uses :class:`InMemoryLoader` when ``dataset.info.in_memory`` and
            :func:`batch_pipeline` finds an equivalent batched pipeline; True forces it (error
            if there is none); False always uses a DataLoader.
        device: in-memory path only: hold the split on this device.
        pin_memory, persistent_workers: passed to ``DataLoader``. Persistent workers keep their
            first epoch's seeds, so ``set_epoch`` no longer fixes their augmentation.

    Returns:
        A :class:`SeededDataLoader` or an :class:`InMemoryLoader`, both with ``set_epoch``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if in_memory not in (True, False, "auto"):
        raise ValueError(f"in_memory must be True, False or 'auto', got {in_memory!r}")
    drop_last = train if drop_last is None else drop_last

    sampler: Sampler[int] | None = None
    if distributed:
        if (num_replicas is None or rank is None) and not (
            torch.distributed.is_available() and torch.distributed.is_initialized()
        ):
            raise RuntimeError(
                "distributed=True needs torch.distributed.init_process_group() first, or "
                "explicit num_replicas and rank"
            )
        if train:
            sampler = DistributedSampler(
                dataset,
                num_replicas=num_replicas,
                rank=rank,
                shuffle=True,
                seed=seed,
                drop_last=drop_last,
            )
        else:  # every sample once over all ranks: no padding duplicates in the metrics
            sampler = ShardSampler(len(dataset), num_replicas, rank)

    pipeline = batch_pipeline(dataset)
    info = getattr(dataset, "info", None)
    use_memory = in_memory is True or (
        in_memory == "auto" and pipeline is not None and bool(getattr(info, "in_memory", False))
    )
    if use_memory:
        if pipeline is None:
            raise ValueError(
                "in_memory=True needs a dataset with as_tensors() and its standard transform "
                f"(or None); got {type(dataset).__name__} with transform "
                f"{getattr(dataset, 'transform', None)!r}"
            )
        return InMemoryLoader(
            dataset,
            batch_size,
            shuffle=train,
            drop_last=drop_last,
            seed=seed,
            device=device,
            sampler=sampler,
            **pipeline,
        )

    if sampler is None:
        sampler = SeededRandomSampler(len(dataset), seed) if train else SequentialSampler(dataset)  # type: ignore[arg-type]
    return SeededDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(epoch_seed(seed, 0)),
        seed=seed,
    )
