"""Fashion-MNIST from local IDX files (the Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ArrayImageDataset, layout_errors
from .idx import read_idx
from .registry import DatasetInfo, normalize_split, register_dataset

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_INFO", "FASHION_MNIST_ROOT", "FashionMNIST"]

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FASHION_MNIST_INFO = DatasetInfo(
    name="fashion_mnist",
    num_classes=10,
    input_shape=(1, 28, 28),
    # Statistics of the 60 000 training images, pixels in [0, 1].
    mean=(0.2860,),
    std=(0.3530,),
    crop_padding=2,
    hflip=True,
    in_memory=True,
    layout="<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (IDX format); "
    f"default root {FASHION_MNIST_ROOT}",
    source="`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) installs the files in "
    f"{FASHION_MNIST_ROOT}; or copy the four files of github.com/zalandoresearch/fashion-mnist "
    "into <root>",
)

_PREFIX = {"train": "train", "test": "t10k"}


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    info = FASHION_MNIST_INFO
    raise FileNotFoundError(
        f"fashion_mnist: {root / stem}[.gz] not found. Expected layout: {info.layout}. "
        f"To get it: {info.source}. eakd never downloads data."
    )


class FashionMNIST(ArrayImageDataset):
    """Fashion-MNIST: 60 000 train / 10 000 test grayscale 28x28 images, 10 classes.

    Samples are ``(PIL.Image mode "L", int)`` before ``transform``; ``as_tensors()`` gives uint8
    (N, 1, 28, 28) for the batched in-memory path.

    Args:
        root: folder with the four IDX files; None uses /usr/share/datasets/fashion-mnist.
        split: "train", or "test"/"val" (the t10k files).
        subset: keep a random subset of this many samples (None: all), drawn with ``seed``;
            the kept samples stay in file order.
        seed: seed of the subset draw.
    """

    info = FASHION_MNIST_INFO

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        subset: int | None = None,
        seed: int = 0,
    ) -> None:
        split = normalize_split(split)
        base = FASHION_MNIST_ROOT if root is None else Path(root).expanduser()
        prefix = _PREFIX[split]
        with layout_errors(self.info):
            images = read_idx(_find(base, f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(_find(base, f"{prefix}-labels-idx1-ubyte"))
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
                raise ValueError(
                    f"{prefix} images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}"
                )
            if labels.ndim != 1 or len(labels) != len(images):
                raise ValueError(
                    f"{len(images)} {prefix} images but labels of shape {labels.shape}"
                )
            if len(labels) and labels.max() >= 10:
                raise ValueError(f"labels must lie in [0, 10), found {labels.max()}")
        if subset is not None:
            if not 0 < subset <= len(images):
                raise ValueError(f"subset must be in [1, {len(images)}], got {subset}")
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(images), generator=g)[:subset].sort().values.numpy()
            images, labels = images[keep], labels[keep]
        super().__init__(
            np.ascontiguousarray(images), labels.tolist(), FASHION_MNIST_CLASSES, split, transform
        )
        self.root = base


register_dataset(FASHION_MNIST_INFO)(FashionMNIST)
