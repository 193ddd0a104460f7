"""The IDX reader/writer and Fashion-MNIST (fake files, and the Debian files when installed)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fakes import fake_fashion_arrays

from eakd.data import FashionMNIST, build_dataset, read_idx, write_idx
from eakd.data.fashion_mnist import FASHION_MNIST_ROOT


def test_read_idx_parses_a_hand_written_file(tmp_path):
    # magic 0x00000803 (ubyte, 3 dims), sizes 2 x 3 x 2 big-endian, then the bytes.
    data = bytes(range(12))
    (tmp_path / "a.idx").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 2) + data)
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 2)
    assert out[1, 2, 1] == 11 and out[0, 1, 0] == 2
    # big-endian int32, 1 dim, gzip-compressed
    raw = b"\x00\x00\x0c\x01" + struct.pack(">I", 3) + struct.pack(">3i", -1, 256, 70000)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    assert read_idx(tmp_path / "b.gz").tolist() == [-1, 256, 70000]


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    write_idx(tmp_path / name, arr)
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\0\0")
    out = read_idx(tmp_path / name)
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, arr)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_write_idx_rejects_unsupported_dtypes(tmp_path):
    with pytest.raises(TypeError, match=r"IDX cannot store int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", r"not an IDX file: magic bytes 00000701"),
        (b"\x01\x02\x08\x01", r"not an IDX file"),
        (b"", r"magic bytes \(empty\)"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", r"truncated header"),
        (
            b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02",
            r"holds 2 bytes but shape \(5,\) of uint8 needs 5",
        ),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", r"holds 2 bytes .* needs 1"),
        (b"\x1f\x8b\x08\x00garbage", r"corrupt gzip stream"),
    ],
)
def test_read_idx_errors(tmp_path, payload, match):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        read_idx(tmp_path / "bad")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"IDX file .*nope.* does not exist"):
        read_idx(tmp_path / "nope")


def test_fashion_mnist_from_idx_files(fashion_root):
    train = build_dataset("fashion_mnist", root=fashion_root, split="train", transform=None)
    images, labels = fake_fashion_arrays(20, 0)
    assert len(train) == 20 and train.targets == labels.tolist()
    img, y = train[3]
    assert img.mode == "L" and np.array_equal(np.asarray(img), images[3]) and y == 3
    assert train.classes[9] == "Ankle boot"
    x, _ = train.as_tensors()
    assert (
        x.shape == (20, 1, 28, 28)
        and x.dtype == torch.uint8
        and torch.equal(x[5, 0], torch.from_numpy(images[5]))
    )
    test = build_dataset("fashion_mnist", root=fashion_root, split="test")
    xt, _ = test[0]
    ref = (torch.from_numpy(fake_fashion_arrays(10, 1)[0][0]).float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(xt, ref[None])


def test_fashion_mnist_reads_uncompressed_files(fashion_root):
    for p in list(fashion_root.iterdir()):
        p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    assert len(FashionMNIST(fashion_root, split="test")) == 10


def test_fashion_mnist_subset_is_seeded(fashion_root):
    a = FashionMNIST(fashion_root, subset=7, seed=3)
    b = FashionMNIST(fashion_root, subset=7, seed=3)
    c = FashionMNIST(fashion_root, subset=7, seed=4)
    full = FashionMNIST(fashion_root)
    assert len(a) == 7 and np.array_equal(a.images, b.images) and a.targets == b.targets
    assert not np.array_equal(a.images, c.images)
    # every kept image is one of the originals, with its own label, in file order
    pos = [next(i for i in range(20) if np.array_equal(full.images[i], im)) for im in a.images]
    assert pos == sorted(pos) and a.targets == [full.targets[i] for i in pos]
    with pytest.raises(ValueError, match=r"subset must be in \[1, 20\]"):
        FashionMNIST(fashion_root, subset=21)


def test_fashion_mnist_missing_files_explain_apt(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"train-images-idx3-ubyte.*apt-get install dataset-fashion-mnist"
    ):
        build_dataset("fashion_mnist", root=tmp_path)


def test_fashion_mnist_wrong_shapes(fashion_root):
    write_idx(fashion_root / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \(N, 28, 28\), got uint8 \(10, 32, 32\).*apt-get"):
        FashionMNIST(fashion_root, split="test")
    write_idx(fashion_root / "t10k-images-idx3-ubyte.gz", np.zeros((9, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"9 t10k images but labels of shape \(10,\)"):
        FashionMNIST(fashion_root, split="test")


@pytest.mark.skipif(
    not (Path(FASHION_MNIST_ROOT) / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_ROOT} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_files():
    test = build_dataset("fashion_mnist", split="test", transform=None)
    assert len(test) == 10_000 and np.bincount(test.targets).tolist() == [1000] * 10
    train = FashionMNIST(split="train", subset=6000, seed=0)
    assert len(train) == 6000 and set(train.targets) == set(range(10))
    # The info's normalisation constants are the training-set statistics (full set: 0.2860).
    assert abs(train.images.mean() / 255 - train.info.mean[0]) < 0.01
