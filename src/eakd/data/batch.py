"""The in-memory fast path: whole-batch augmentation and a loader that slices one tensor.

For small datasets (MNIST-1D, Fashion-MNIST, optionally CIFAR) a per-sample pipeline of PIL
ops and a ``DataLoader`` cost more than the model on a 2-core CPU. Here the split lives in one
tensor (uint8 images or float signals, on the CPU or moved once to the GPU); each batch is
sliced, augmented with :class:`BatchAugment` and normalised in a few vectorised ops::

    loader = InMemoryLoader(ds, batch_size=128, shuffle=True, drop_last=True, seed=0,
                            augment=BatchAugment(crop_padding=2, hflip=True),
                            mean=ds.info.mean, std=ds.info.std, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:  # x: float32 (B, C, H, W) on the device, normalised
            ...

:func:`eakd.data.build_loader` builds this automatically for in-memory datasets whose
transform is the standard one (or None); the batch pipeline then has the same distribution as
the per-sample one: zero-padded random crop (offsets uniform in [0, 2p]) and a flip with
probability 1/2, applied to the uint8 pixels before ``/255`` and Normalize, as torchvision does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

__all__ = ["BatchAugment", "InMemoryLoader", "epoch_seed", "normalize_batch"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of epoch ``epoch`` of a loader seeded with ``seed``."""
    return (seed * 1_000_003 + epoch) % 2**63


class BatchAugment:
    """Random crop with zero padding and random horizontal flip of a whole batch.

    Works for images (B, C, H, W) and signals (B, C, L) of any dtype on any device; each sample
    draws its own crop offset and flip. Random draws are made on the CPU (from ``generator`` or
    the global torch RNG), so results do not depend on the device.

    Args:
        crop_padding: p; every spatial dimension is padded by p on both sides with ``fill`` and
            a window of the original size is cut at an offset uniform in [0, 2p]. 0 or None: no
            crop.
        hflip: flip the last dimension with probability 1/2.
        fill: padding value (0 matches torchvision's RandomCrop on uint8 pixels).
    """

    def __init__(self, crop_padding: int | None = 4, hflip: bool = True, fill: float = 0.0):
        if crop_padding is not None and crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.crop_padding, self.hflip, self.fill = crop_padding or 0, hflip, fill

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim not in (3, 4):
            raise ValueError(f"expected (B, C, L) or (B, C, H, W), got shape {tuple(x.shape)}")
        b, p = x.shape[0], self.crop_padding
        if p > 0:
            x = self._crop(x, p, generator)
        if self.hflip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(b, *([1] * (x.ndim - 1))), x.flip(-1), x)
        return x

    def _crop(self, x: torch.Tensor, p: int, generator: torch.Generator | None) -> torch.Tensor:
        b, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
        padded = F.pad(x, [p, p] * len(spatial), value=self.fill).flatten(2)
        offsets = torch.randint(0, 2 * p + 1, (b, len(spatial)), generator=generator)
        # One gather over the flattened padded plane: element (i_1..i_d) of sample n comes from
        # sum_d (offset_{n,d} + i_d) * stride_d, with the strides of the padded shape.
        strides = [1] * len(spatial)
        for d in range(len(spatial) - 2, -1, -1):
            strides[d] = strides[d + 1] * (spatial[d + 1] + 2 * p)
        start = (offsets * torch.tensor(strides)).sum(1).to(x.device)
        grid = torch.zeros((), dtype=torch.int64, device=x.device)
        for n, stride in zip(spatial, strides, strict=True):
            grid = grid.unsqueeze(-1) + torch.arange(n, device=x.device) * stride
        index = (start.view(b, 1, 1) + grid.reshape(1, 1, -1)).expand(b, c, -1)
        return padded.gather(2, index).view_as(x)

    def __repr__(self) -> str:
        return (
            f"BatchAugment(crop_padding={self.crop_padding}, hflip={self.hflip}, fill={self.fill})"
        )


def normalize_batch(
    x: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; then ``(x - mean[c]) / std[c]`` over channel dim 1."""
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).div_(255.0)
    elif not x.is_floating_point():
        x = x.to(torch.float32)
    if mean is None or std is None:
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


class InMemoryLoader:
    """Iterate over ``(inputs, targets)`` batches sliced from tensors held in memory.

    Args:
        dataset: anything with ``as_tensors() -> (inputs (N, C, ...), targets (N,))``, or such a
            pair directly.
        batch_size: samples per batch.
        shuffle: new random order each epoch.
        drop_last: drop the last incomplete batch.
        seed: seed of the order and of the augmentation draws: epoch e's batches depend only on
            (seed, e). Epochs count up on each iteration; :meth:`set_epoch` sets the next one
            (for resuming).
        augment: batch augmentation applied before normalisation (e.g. :class:`BatchAugment`).
        mean, std: normalisation after augmentation (uint8 inputs are scaled to [0, 1] first);
            None: no normalisation.
        device: move the whole split there once (e.g. the GPU), so batches never cross the bus.
        sampler: an index sampler (e.g. ``DistributedSampler``) that replaces ``shuffle``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        augment: BatchAugment | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        sampler: Sampler[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        inputs, targets = dataset if isinstance(dataset, tuple) else dataset.as_tensors()
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if device is not None:
            inputs, targets = inputs.to(device), targets.to(device)
        self.dataset = dataset
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.augment, self.mean, self.std = seed, augment, mean, std
        self.sampler = sampler
        self.epoch = 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``."""
        self.epoch = epoch

    def _num_indices(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.inputs)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = self._num_indices()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.generator.manual_seed(epoch_seed(self.seed, epoch))
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is not None:
            order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        elif self.shuffle:
            order = torch.randperm(len(self.inputs), generator=self.generator)
        else:
            order = torch.arange(len(self.inputs))
        order = order.to(self.inputs.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.inputs[idx]
            if self.augment is not None:
                x = self.augment(x, generator=self.generator)
            yield normalize_batch(x, self.mean, self.std), self.targets[idx]

    def __repr__(self) -> str:
        return (
            f"InMemoryLoader(samples={len(self.inputs)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, augment={self.augment})"
        )
