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
from typing import Any

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
    DatasetInfo,
    build_dataset,
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
