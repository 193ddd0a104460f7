"""CIFAR-100 and CIFAR-10 from the standard python-pickle archives (never downloaded).

The files are read with a restricted unpickler that only accepts the numpy array types those
archives contain, so a foreign pickle cannot run code.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayImageDataset, find_dataset_dir, layout_errors
from .registry import DatasetInfo, normalize_split, register_dataset

__all__ = [
    "CIFAR10",
    "CIFAR10_INFO",
    "CIFAR100",
    "CIFAR100_INFO",
    "load_cifar_pickle",
]

CIFAR100_INFO = DatasetInfo(
    name="cifar100",
    num_classes=100,
    input_shape=(3, 32, 32),
    mean=(0.5071, 0.4867, 0.4408),
    std=(0.2675, 0.2565, 0.2761),
    crop_padding=4,
    hflip=True,
    layout="<root>/cifar-100-python/{train,test,meta} (python pickle version); "
    "root may also be the cifar-100-python folder itself",
    source="download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "on a machine with network access and extract it with `tar xzf cifar-100-python.tar.gz -C "
    "<root>`",
)

CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    num_classes=10,
    input_shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    crop_padding=4,
    hflip=True,
    layout="<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (python pickle "
    "version); root may also be the cifar-10-batches-py folder itself",
    source="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "on a machine with network access and extract it with `tar xzf cifar-10-python.tar.gz -C "
    "<root>`",
)

# (module, name) pairs a CIFAR pickle legitimately references: numpy arrays and their dtypes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR archive holds only dicts, lists and "
                "numpy arrays"
            )
        if module.startswith("numpy.core."):
            # numpy >= 2 moved numpy.core to numpy._core; importing the old name warns.
            try:
                return getattr(importlib.import_module("numpy._core" + module[10:]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def load_cifar_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one CIFAR pickle file as a dict with ``str`` keys (Python 2 and 3 archives)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a readable CIFAR pickle file: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _decode_names(names: Sequence[Any]) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_batches(
    files: Sequence[Path], label_key: str, num_classes: int
) -> tuple[np.ndarray, list[int]]:
    images, labels = [], []
    for path in files:
        entry = load_cifar_pickle(path)
        if "data" not in entry or label_key not in entry:
            raise ValueError(
                f"{path} lacks the 'data' / {label_key!r} entries of a CIFAR batch "
                f"(found keys: {', '.join(sorted(map(str, entry)))})"
            )
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(
                f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
            )
        lab = [int(v) for v in entry[label_key]]
        if len(lab) != len(data):
            raise ValueError(f"{path}: {len(data)} images but {len(lab)} labels")
        if lab and not 0 <= min(lab) <= max(lab) < num_classes:
            raise ValueError(f"{path}: labels must lie in [0, {num_classes}), got {min(lab)}..")
        # Rows store the R, G and B planes of a 32x32 image one after another.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(lab)
    return np.ascontiguousarray(np.concatenate(images)), labels


class CIFAR100(ArrayImageDataset):
    """CIFAR-100 (fine labels): 50 000 train / 10 000 test RGB images of 32x32, 100 classes.

    Samples are ``(PIL.Image, int)`` before ``transform``; ``as_tensors()`` gives the whole
    split as uint8 (N, 3, 32, 32).
    """

    info = CIFAR100_INFO

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        split = normalize_split(split)
        folder = find_dataset_dir(root, "cifar-100-python", ("train", "test", "meta"), self.info)
        with layout_errors(self.info):
            images, labels = _read_batches([folder / split], "fine_labels", self.info.num_classes)
            meta = load_cifar_pickle(folder / "meta")
            if "fine_label_names" not in meta:
                raise ValueError(f"{folder / 'meta'} lacks 'fine_label_names'")
            classes = _decode_names(meta["fine_label_names"])
            if len(classes) != self.info.num_classes:
                raise ValueError(f"{folder / 'meta'} lists {len(classes)} classes, expected 100")
        super().__init__(images, labels, classes, split, transform)
        self.root = folder


class CIFAR10(ArrayImageDataset):
    """CIFAR-10: 50 000 train / 10 000 test RGB images of 32x32, 10 classes."""

    info = CIFAR10_INFO
    _train_files = tuple(f"data_batch_{i}" for i in range(1, 6))

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        split = normalize_split(split)
        required = (*self._train_files, "test_batch", "batches.meta")
        folder = find_dataset_dir(root, "cifar-10-batches-py", required, self.info)
        names = self._train_files if split == "train" else ("test_batch",)
        with layout_errors(self.info):
            images, labels = _read_batches([folder / n for n in names], "labels", 10)
            meta = load_cifar_pickle(folder / "batches.meta")
            if "label_names" not in meta:
                raise ValueError(f"{folder / 'batches.meta'} lacks 'label_names'")
        super().__init__(images, labels, _decode_names(meta["label_names"]), split, transform)
        self.root = folder


register_dataset(CIFAR100_INFO)(CIFAR100)
register_dataset(CIFAR10_INFO)(CIFAR10)
