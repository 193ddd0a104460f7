"""Tiny fake datasets written to tmp_path in each dataset's standard on-disk layout.

The fixtures in conftest.py call these writers; tests import the helpers from here."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eakd.data import write_idx

CLASS_COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR's plane order (1024 R, 1024 G, 1024 B)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_pickle(path: Path, obj: object, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    """<tmp>/cifar-100-python with 6 train and 4 test images; returns the parent folder."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n, seed in (("train", 6, 0), ("test", 4, 1)):
        rows = cifar_rows(n, seed)
        labels = [(7 * i + seed) % 100 for i in range(n)]
        # Python-2 style protocol for the train file, like the original archive.
        write_pickle(
            folder / name,
            {"data": rows, "fine_labels": labels, "coarse_labels": [0] * n},
            protocol=2 if name == "train" else pickle.HIGHEST_PROTOCOL,
        )
    write_pickle(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)]})
    return tmp_path


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", {"data": cifar_rows(2, i), "labels": [i, i + 1]})
    write_pickle(folder / "test_batch", {"data": cifar_rows(3, 9), "labels": [0, 9, 5]})
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return tmp_path


def solid_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    Image.new("RGB", size, colour).save(path)


TINY_WNIDS = ["n03", "n01", "n02"]  # deliberately unsorted in wnids.txt


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """tiny-imagenet-200 with 3 classes x 2 train images and 4 val images (64x64 JPEGs).

    Images of class wnid w are filled with CLASS_COLOURS[sorted(TINY_WNIDS).index(w)].
    """
    base = tmp_path / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    order = sorted(TINY_WNIDS)
    for w in TINY_WNIDS:
        img_dir = base / "train" / w / "images"
        img_dir.mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for k in range(2):
            solid_image(img_dir / f"{w}_{k}.JPEG", CLASS_COLOURS[order.index(w)], (64, 64))
    lines = []
    for k, w in enumerate(["n02", "n03", "n01", "n02"]):
        solid_image(
            base / "val" / "images" / f"val_{k}.JPEG", CLASS_COLOURS[order.index(w)], (64, 64)
        )
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


IMAGENET_WNIDS = ["n001", "n002", "n003"]


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    """ImageFolder tree: train has 3 classes x 2 images, val 3 classes x 1 image (48x40)."""
    for split, per_class in (("train", 2), ("val", 1)):
        for label, w in enumerate(IMAGENET_WNIDS):
            d = tmp_path / split / w
            d.mkdir(parents=True)
            for k in range(per_class):
                solid_image(d / f"{w}_{k}.JPEG", CLASS_COLOURS[label], (48, 40))
    (tmp_path / "train" / "n001" / "notes.txt").write_text("not an image")
    return tmp_path


def fake_fashion_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    """The four Fashion-MNIST IDX files (20 train, 10 test images), gzip-compressed."""
    for prefix, n, seed in (("train", 20, 0), ("t10k", 10, 1)):
        images, labels = fake_fashion_arrays(n, seed)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path
