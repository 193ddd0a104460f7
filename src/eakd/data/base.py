"""Shared dataset base classes: labelled samples plus metadata, and in-memory image arrays."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .registry import DatasetInfo, default_data_root, normalize_split

__all__ = ["ArrayImageDataset", "ClassificationDataset", "find_dataset_dir", "layout_errors"]


def find_dataset_dir(
    root: str | os.PathLike[str] | None,
    folder: str | None,
    required: Sequence[str],
    info: DatasetInfo,
) -> Path:
    """Return ``root`` or ``root/folder``, whichever holds every file in ``required``.

    Raises:
        FileNotFoundError: naming the missing files, the expected layout and how to get the data.
    """
    base = default_data_root() if root is None else Path(root).expanduser()
    candidates = [base] if folder is None or base.name == folder else [base, base / folder]
    for cand in candidates:
        if all((cand / r).exists() for r in required):
            return cand
    looked = candidates[-1]
    missing = [r for r in required if not (looked / r).exists()]
    raise FileNotFoundError(
        f"{info.name}: no dataset found at {str(base)!r} (missing {', '.join(missing)} in "
        f"{str(looked)!r}). Expected layout: {info.layout}. To get it: {info.source}. "
        "eakd never downloads data."
    )


@contextmanager
def layout_errors(info: DatasetInfo) -> Iterator[None]:
    """Re-raise a ``ValueError`` from reading files with the expected layout and the source."""
    try:
        yield
    except ValueError as e:
        raise ValueError(
            f"{info.name}: {e}. Expected layout: {info.layout}. To get it: {info.source}."
        ) from e


class ClassificationDataset(Dataset):
    """A labelled dataset: ``ds[i] -> (input, target)``.

    Attributes:
        info: the registered :class:`DatasetInfo`.
        split: ``"train"`` or ``"test"`` (``"val"`` is normalised to ``"test"``).
        classes: class names, index = label.
        targets: list of integer labels, one per sample.
        transform: callable applied to the raw sample, or None.
    """

    info: DatasetInfo

    def __init__(
        self,
        split: str,
        transform: Callable[[Any], Any] | None,
        classes: Sequence[str],
        targets: Sequence[int],
    ) -> None:
        self.split = normalize_split(split)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.transform = transform
        self.classes = list(classes)
        self.targets = [int(t) for t in targets]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, samples={len(self)}, "
            f"classes={self.num_classes}, transform={self.transform!r})"
        )


class ArrayImageDataset(ClassificationDataset):
    """Images held in one uint8 array; samples are PIL images passed through ``transform``.

    Args:
        images: uint8 array (N, H, W, 3) for RGB or (N, H, W) for grayscale.
        targets: N integer labels.

    :meth:`as_tensors` exposes the whole array for the batched path of
    :class:`eakd.data.InMemoryLoader` (no per-sample PIL work).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: Sequence[int],
        classes: Sequence[str],
        split: str,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"images must be a uint8 array (N, H, W[, 3]), got {images.dtype} {images.shape}"
            )
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        super().__init__(split, transform, classes, targets)
        self.images = images

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)``: uint8 (N, C, H, W) and int64 (N,), sharing no state with self."""
        x = torch.from_numpy(np.ascontiguousarray(self.images))
        x = x.unsqueeze(1).clone() if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(self.targets, dtype=torch.int64)
