"""The dataset registry: ``register_dataset(info)``, ``list_datasets()``, ``dataset_info(name)``.

Each dataset registers a constructor ``ctor(root=None, split="train", transform=None, **kw)``
together with a :class:`DatasetInfo` record, so the metadata a model or a training loop needs
(classes, input shape, normalisation) is known without touching the disk. The transforms are
built from these records, and :func:`eakd.data.build_dataset` joins the two.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "default_cache_dir",
    "default_data_root",
    "list_datasets",
    "normalize_split",
    "register_dataset",
]

DATASETS: Registry = Registry("dataset")
_INFOS: dict[str, DatasetInfo] = {}

SPLITS = ("train", "test", "val")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a registered dataset.

    Attributes:
        name: registry name.
        num_classes: number of classes C (logits are (N, C)).
        input_shape: shape of one sample after the default transform, channels first:
            (C, H, W) for images, (C, L) for 1-D signals.
        mean, std: per-channel normalisation constants (of pixel values in [0, 1] for images).
        crop_padding: zero padding of the training random crop to ``spatial_size``
            (None: no crop augmentation).
        hflip: whether training uses a random horizontal flip.
        rotation: training random rotation range in degrees (None: none).
        resized_crop: training uses RandomResizedCrop(spatial_size) instead of the padded crop.
        test_resize: evaluation resizes the short side to this, then centre-crops to
            ``spatial_size`` (None: images are used at their size).
        in_memory: the whole dataset is small enough to live in one tensor, so
            :func:`eakd.data.build_loader` uses the batched tensor path by default.
        layout: the expected on-disk layout (quoted in errors).
        source: how to obtain the data offline (quoted in errors).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int | None = None
    hflip: bool = False
    rotation: float | None = None
    resized_crop: bool = False
    test_resize: int | None = None
    in_memory: bool = False
    layout: str = ""
    source: str = ""

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def spatial_size(self) -> tuple[int, ...]:
        """(H, W) for images, (L,) for signals."""
        return self.input_shape[1:]


def register_dataset(info: DatasetInfo) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``ctor(root=None, split="train", transform=None, **kw)`` under ``info.name``."""

    def deco(ctor: Callable[..., Any]) -> Callable[..., Any]:
        DATASETS.register(info.name)(ctor)
        _INFOS[info.name] = info
        return ctor

    return deco


def list_datasets() -> list[str]:
    """Names of every registered dataset, sorted."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (no disk access)."""
    DATASETS.get(name)  # unknown names raise with the valid ones
    return _INFOS[name]


def normalize_split(split: str) -> str:
    """Map a split name to ``"train"`` or ``"test"``.

    Every dataset here has one labelled held-out split (CIFAR's test batch, the Tiny-ImageNet
    and ImageNet ``val`` folders, MNIST-1D's test part), so ``"val"`` and ``"test"`` both
    select it, as the distillation literature does.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return "train" if split == "train" else "test"


def default_data_root() -> Path:
    """``$EAKD_DATA`` if set, else ``./data``: where datasets are looked for when root is None."""
    return Path(os.environ.get("EAKD_DATA", "data")).expanduser()


def default_cache_dir() -> Path:
    """``$EAKD_CACHE`` if set, else ``~/.cache/eakd``: where generated data is cached."""
    return Path(os.environ.get("EAKD_CACHE", Path.home() / ".cache" / "eakd")).expanduser()
