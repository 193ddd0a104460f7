"""MNIST-1D (Greydanus, 2020), generated locally with the ``mnist1d`` package and cached.

Only ``mnist1d.data.make_dataset`` is called, with every argument spelled out; the package's
``get_dataset`` (which downloads by default) is never used. Generated arrays are cached in an
``.npz`` file keyed by the arguments and the package version, written atomically, so later runs
load in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import types
import warnings
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_open
from .base import ClassificationDataset
from .registry import DatasetInfo, default_cache_dir, normalize_split, register_dataset

__all__ = ["MNIST1D", "MNIST1D_DEFAULTS", "MNIST1D_INFO", "generate_mnist1d", "load_mnist1d"]

MNIST1D_INFO = DatasetInfo(
    name="mnist1d",
    num_classes=10,
    input_shape=(1, 40),
    # make_dataset standardises the whole set to zero mean and unit variance.
    mean=(0.0,),
    std=(1.0,),
    in_memory=True,
    layout="generated locally; cached as <root>/mnist1d-<key>.npz (default root "
    "$EAKD_CACHE/mnist1d, $EAKD_CACHE defaulting to ~/.cache/eakd)",
    source="`pip install mnist1d` (or the eakd[vision] extra); the data is generated, "
    "nothing is downloaded",
)

# The generation arguments of mnist1d 0.0.2 (get_dataset_args), which produced the published
# MNIST-1D split (4000 train / 1000 test): logistic 32 %, MLP 68 %, CNN 94 % test accuracy.
MNIST1D_DEFAULTS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": (36, 60),
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}

_CACHE_FORMAT = 1


def generate_mnist1d(**args: Any) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` with explicit ``args`` (keys of :data:`MNIST1D_DEFAULTS`).

    Returns ``{"x": (Ntr, L) float64, "y": (Ntr,) int64, "x_test": (Nte, L), "y_test": (Nte,)}``
    with ``Ntr = int(10 * (num_samples // 10) * train_split)``. The global ``random`` and
    ``numpy.random`` states, which ``make_dataset`` reseeds, are restored afterwards.
    """
    try:
        from mnist1d.data import make_dataset
    except ImportError as e:
        raise ImportError(
            "MNIST-1D needs the mnist1d package: `pip install mnist1d` (or `pip install "
            "eakd[vision]`)"
        ) from e
    full = {**MNIST1D_DEFAULTS, **args}
    full["padding"] = list(full["padding"])
    # make_dataset reseeds and draws from the global RNGs; leave the caller's streams untouched.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(types.SimpleNamespace(**full))
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _package_version() -> str:
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        return "missing"


def load_mnist1d(
    cache_dir: str | os.PathLike[str] | None = None, cache: bool = True, **args: Any
) -> tuple[dict[str, np.ndarray], Path | None]:
    """Return the generated arrays (see :func:`generate_mnist1d`) and the cache file used.

    The cache key hashes every generation argument and the installed mnist1d version; a hit
    skips generation (and the import of mnist1d). With ``cache=False`` nothing is written.
    """
    unknown = set(args) - set(MNIST1D_DEFAULTS)
    if unknown:
        raise TypeError(
            f"unknown MNIST-1D argument(s) {sorted(unknown)}; valid: {', '.join(MNIST1D_DEFAULTS)}"
        )
    full = {**MNIST1D_DEFAULTS, **args}
    full["padding"] = [int(p) for p in full["padding"]]
    if int(full["num_samples"]) // 10 < 1:
        raise ValueError(
            f"num_samples must be at least 10 (one per class), got {full['num_samples']}"
        )
    n = 10 * (int(full["num_samples"]) // 10)
    n_train = int(n * float(full["train_split"]))
    if not 0 < n_train < n:
        raise ValueError(
            f"train_split={full['train_split']} with {n} samples leaves an empty split; use a "
            "value in (0, 1) and more samples"
        )
    if not cache:
        return generate_mnist1d(**full), None
    key_src = json.dumps(
        {**full, "format": _CACHE_FORMAT, "mnist1d": _package_version()}, sort_keys=True
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    folder = default_cache_dir() / "mnist1d" if cache_dir is None else Path(cache_dir).expanduser()
    path = folder / f"mnist1d-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in ("x", "y", "x_test", "y_test")}, path
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"regenerating MNIST-1D: unreadable cache {path} ({e})", stacklevel=2)
    data = generate_mnist1d(**full)
    with atomic_open(path) as f:
        np.savez(f, **data)
    return data, path


class MNIST1D(ClassificationDataset):
    """MNIST-1D: 1-D signals of length 40 (``final_seq_length``), 10 classes.

    Samples are ``(x, y)`` with ``x`` a float32 tensor of shape (1, L) (channels first, for
    ``Conv1d``), before ``transform``. With the defaults the split is 4000 train / 1000 test.

    Args:
        root: cache folder (None: ``$EAKD_CACHE/mnist1d``).
        split: "train", or "test"/"val".
        num_samples: total number of signals generated (rounded down to a multiple of 10).
        seed: generation seed; the same arguments always give the same data.
        cache: read/write the cache file.
        **generation: any other key of :data:`MNIST1D_DEFAULTS` (train_split, noise scales, ...).
    """

    info = MNIST1D_INFO

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        num_samples: int = 5000,
        seed: int = 42,
        cache: bool = True,
        **generation: Any,
    ) -> None:
        split = normalize_split(split)
        data, self.cache_path = load_mnist1d(
            root, cache=cache, num_samples=num_samples, seed=seed, **generation
        )
        x, y = (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])
        super().__init__(split, transform, [str(i) for i in range(10)], y.tolist())
        self.inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1)
        if self.inputs.shape[-1] != MNIST1D_INFO.input_shape[-1]:
            self.info = replace(MNIST1D_INFO, input_shape=(1, self.inputs.shape[-1]))

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x = self.inputs[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[index]

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``: float32 (N, 1, L) and int64 (N,)."""
        return self.inputs.clone(), torch.tensor(self.targets, dtype=torch.int64)


register_dataset(MNIST1D_INFO)(MNIST1D)
