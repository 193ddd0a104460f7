"""Datasets, transforms and loaders for the classification experiments (never downloads).

Registered datasets (``list_datasets()``): ``cifar100``, ``cifar10``, ``tiny_imagenet``,
``imagenet`` (local files in their standard layouts), ``mnist1d`` (generated with the
``mnist1d`` package and cached) and ``fashion_mnist`` (IDX files of the Debian package
``dataset-fashion-mnist``)::

    from eakd.data import build_dataset, build_loader
    train = build_dataset("cifar100", root="data", split="train")        # paper's augmentation
    loader = build_loader(train, batch_size=64, train=True, num_workers=2, seed=0)
    mld = build_dataset("cifar100", root="data", transform="mld")       # (weak, strong, y)
    fm = build_dataset("fashion_mnist", subset=10_000)                  # in-memory fast path
    fast = build_loader(fm, batch_size=128, train=True, device="cuda")  # batched crop + flip

Missing or malformed data raises ``FileNotFoundError`` / ``ValueError`` naming the expected
layout (``dataset_info(name).layout``) and how to obtain it (``.source``).

The transforms (``build_transform``, ``mld_transforms``, ``RandAugmentFixMatch``, ...) need
torchvision and are imported on first use, so the tensor datasets stay light.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from ..registry import bind_kwargs
from . import cifar, fashion_mnist, folder, mnist1d
from .base import ArrayImageDataset, ClassificationDataset
from .batch import BatchAugment, InMemoryLoader, normalize_batch
from .cifar import CIFAR10, CIFAR100
from .fashion_mnist import FashionMNIST
from .folder import ImageFileDataset, ImageNet, TinyImageNet
from .idx import read_idx, write_idx
from .loader import (
    SeededDataLoader,
    SeededRandomSampler,
    batch_pipeline,
    build_loader,
    seed_worker,
    set_epoch,
)
from .mnist1d import MNIST1D, generate_mnist1d, load_mnist1d
from .registry import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    list_datasets,
    normalize_split,
    register_dataset,
)

_LAZY = {
    "StandardTransform": "transforms",
    "TwoViewDataset": "transforms",
    "build_transform": "transforms",
    "mld_transforms": "transforms",
    "CUTOUT_FILL": "randaugment",
    "Cutout": "randaugment",
    "RANDAUGMENT_OPS": "randaugment",
    "RandAugmentFixMatch": "randaugment",
    "cutout": "randaugment",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    transform: Callable[[Any], Any] | str | None = "default",
    **kwargs: Any,
):
    """Build a registered dataset.

    Args:
        name: a name from :func:`list_datasets`.
        root: where the data lives (see ``dataset_info(name).layout``); None uses the dataset's
            default location. Nothing is ever downloaded.
        split: ``"train"``, ``"test"`` or ``"val"`` (``"val"`` == ``"test"``, see
            :func:`normalize_split`).
        transform: ``"default"``: the standard pipeline of the paper's recipe for this dataset
            and split (:func:`build_transform`); ``"mld"``: on the train split a
            :class:`TwoViewDataset` giving ``(weak, strong, target)``, on the
            held-out split the standard test pipeline; ``None``: raw samples (PIL images, or
            tensors for MNIST-1D); or any callable applied to the raw sample.
        **kwargs: dataset-specific options (e.g. ``num_samples`` and ``seed`` for MNIST-1D,
            ``subset`` for Fashion-MNIST); unknown keywords raise ``TypeError``.

    Returns:
        A ``torch.utils.data.Dataset`` yielding ``(input, target)`` with ``.info``
        (:class:`DatasetInfo`), ``.classes`` and ``.targets``.
    """
    ctor = DATASETS.get(name)
    bind_kwargs(ctor, kwargs, f"dataset {name!r}")
    split = normalize_split(split)
    if isinstance(transform, str):
        # torchvision is imported only when a pipeline is requested.
        from .transforms import TwoViewDataset, build_transform, mld_transforms

        if transform == "mld" and split == "train":
            weak, strong = mld_transforms(name)
            base = ctor(root=root, split=split, transform=None, **kwargs)
            return TwoViewDataset(base, weak, strong)
        if transform not in ("default", "mld"):
            raise ValueError(
                f"unknown transform {transform!r}; pass 'default', 'mld', None or a callable"
            )
        transform = build_transform(name, split)
    elif transform is not None and not callable(transform):
        raise TypeError(
            "transform must be 'default', 'mld', None or a callable, got "
            f"{type(transform).__name__}"
        )
    return ctor(root=root, split=split, transform=transform, **kwargs)


__all__ = [
    "CIFAR10",
    "CIFAR100",
    "CUTOUT_FILL",
    "MNIST1D",
    "RANDAUGMENT_OPS",
    "ArrayImageDataset",
    "BatchAugment",
    "ClassificationDataset",
    "Cutout",
    "DatasetInfo",
    "FashionMNIST",
    "ImageFileDataset",
    "ImageNet",
    "InMemoryLoader",
    "RandAugmentFixMatch",
    "SeededDataLoader",
    "SeededRandomSampler",
    "StandardTransform",
    "TinyImageNet",
    "TwoViewDataset",
    "batch_pipeline",
    "build_dataset",
    "build_loader",
    "build_transform",
    "cifar",
    "cutout",
    "dataset_info",
    "fashion_mnist",
    "folder",
    "generate_mnist1d",
    "list_datasets",
    "load_mnist1d",
    "mld_transforms",
    "mnist1d",
    "normalize_batch",
    "normalize_split",
    "read_idx",
    "register_dataset",
    "seed_worker",
    "set_epoch",
    "write_idx",
]
