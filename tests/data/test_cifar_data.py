"""CIFAR-100 / CIFAR-10 from fake pickle archives."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from data_fakes import cifar_rows, write_pickle
from PIL import Image

from eakd.data import CIFAR100, TwoViewDataset, build_dataset


def test_cifar100_reads_images_labels_and_classes(cifar100_root):
    ds = build_dataset("cifar100", root=cifar100_root, split="train", transform=None)
    assert len(ds) == 6 and ds.num_classes == 100 and ds.classes[7] == "class07"
    assert ds.targets == [0, 7, 14, 21, 28, 35]
    rows = cifar_rows(6, 0)
    img, label = ds[2]
    assert isinstance(img, Image.Image) and img.size == (32, 32) and img.mode == "RGB"
    assert label == 14
    arr = np.asarray(img)
    # Pixel (y, x) channel c sits at row index c * 1024 + y * 32 + x.
    for y, x, c in [(0, 0, 0), (5, 17, 1), (31, 31, 2), (12, 3, 2)]:
        assert arr[y, x, c] == rows[2, c * 1024 + y * 32 + x]
    test = build_dataset("cifar100", root=cifar100_root, split="val", transform=None)
    assert len(test) == 4 and test.split == "test" and test.targets == [1, 8, 15, 22]


def test_root_may_be_the_archive_folder_itself(cifar100_root):
    a = CIFAR100(cifar100_root / "cifar-100-python", split="test")
    b = CIFAR100(cifar100_root, split="test")
    assert np.array_equal(a.images, b.images)


def test_default_root_comes_from_the_environment(cifar100_root, monkeypatch):
    monkeypatch.setenv("EAKD_DATA", str(cifar100_root))
    assert len(build_dataset("cifar100", split="test")) == 4


def test_as_tensors_is_channels_first_uint8(cifar100_root):
    ds = CIFAR100(cifar100_root, split="train")
    x, y = ds.as_tensors()
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x[3].permute(1, 2, 0), torch.from_numpy(np.array(ds[3][0])))
    assert y.tolist() == ds.targets


def test_default_test_transform_is_totensor_then_normalize(cifar100_root):
    ds = build_dataset("cifar100", root=cifar100_root, split="test")
    x, _ = ds[1]
    raw = torch.from_numpy(np.asarray(ds.images[1])).permute(2, 0, 1).float() / 255
    mean = torch.tensor(ds.info.mean).view(3, 1, 1)
    std = torch.tensor(ds.info.std).view(3, 1, 1)
    torch.testing.assert_close(x, (raw - mean) / std)


def test_default_train_transform_crops_and_flips(cifar100_root):
    ds = build_dataset("cifar100", root=cifar100_root, split="train")
    torch.manual_seed(0)
    outs = [ds[0][0] for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)
    assert len({o.sum().item() for o in outs}) > 1  # random augmentation differs between calls


def test_mld_transform_gives_weak_strong_target(cifar100_root):
    ds = build_dataset("cifar100", root=cifar100_root, split="train", transform="mld")
    assert isinstance(ds, TwoViewDataset) and len(ds) == 6 and ds.num_classes == 100
    weak, strong, y = ds[1]
    assert weak.shape == strong.shape == (3, 32, 32) and y == 7
    test = build_dataset("cifar100", root=cifar100_root, split="test", transform="mld")
    assert test[0][0].shape == (3, 32, 32) and len(test[0]) == 2


def test_two_view_dataset_needs_raw_samples(cifar100_root):
    ds = build_dataset("cifar100", root=cifar100_root, split="train")
    with pytest.raises(ValueError, match="transform=None"):
        TwoViewDataset(ds, lambda x: x, lambda x: x)


def test_cifar10_concatenates_the_five_batches(cifar10_root):
    train = build_dataset("cifar10", root=cifar10_root, split="train", transform=None)
    assert len(train) == 10 and train.targets == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert np.array_equal(
        np.asarray(train[4][0]), cifar_rows(2, 3)[0].reshape(3, 32, 32).transpose(1, 2, 0)
    )
    test = build_dataset("cifar10", root=cifar10_root, split="test", transform=None)
    assert test.targets == [0, 9, 5] and test.classes[9] == "c9"


def test_missing_data_names_layout_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("cifar100", root=tmp_path / "nowhere")
    msg = str(e.value)
    assert "cifar-100-python" in msg and "meta" in msg and "cs.toronto.edu" in msg
    assert "never downloads" in msg


def test_missing_meta_file_is_reported(cifar100_root):
    os.remove(cifar100_root / "cifar-100-python" / "meta")
    with pytest.raises(FileNotFoundError, match=r"missing meta"):
        build_dataset("cifar100", root=cifar100_root)


def test_wrong_array_shape_is_a_layout_error(cifar100_root):
    write_pickle(
        cifar100_root / "cifar-100-python" / "train",
        {"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]},
    )
    with pytest.raises(
        ValueError, match=r"uint8 of shape \(N, 3072\).*Expected layout.*cifar-100-python.*toronto"
    ):
        build_dataset("cifar100", root=cifar100_root)


def test_labels_out_of_range_are_rejected(cifar100_root):
    write_pickle(
        cifar100_root / "cifar-100-python" / "test",
        {"data": cifar_rows(1, 0), "fine_labels": [100]},
    )
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 100\)"):
        build_dataset("cifar100", root=cifar100_root, split="test")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_foreign_pickles_cannot_run_code(cifar100_root):
    with (cifar100_root / "cifar-100-python" / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": _Evil()}, f)
    with pytest.raises(ValueError, match=r"refusing to load"):
        build_dataset("cifar100", root=cifar100_root)
