"""Tiny-ImageNet and ImageNet (ImageFolder) from fake trees of JPEG files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from data_fakes import CLASS_COLOURS, IMAGENET_WNIDS, TINY_WNIDS

from eakd.data import ImageNet, TinyImageNet, build_dataset


def _colour(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(0)


def _assert_labels_match_colours(ds):
    for i in range(len(ds)):
        img, label = ds[i]
        # JPEG is lossy; solid colours survive within a few levels.
        np.testing.assert_allclose(_colour(img), CLASS_COLOURS[label], atol=6)


def test_tiny_imagenet_train_uses_sorted_wnids(tiny_root):
    ds = build_dataset("tiny_imagenet", root=tiny_root, split="train", transform=None)
    assert ds.classes == sorted(TINY_WNIDS) and len(ds) == 6
    assert sorted(ds.targets) == [0, 0, 1, 1, 2, 2]
    assert ds[0][0].size == (64, 64) and ds[0][0].mode == "RGB"
    _assert_labels_match_colours(ds)


def test_tiny_imagenet_val_reads_the_annotations(tiny_root):
    ds = build_dataset("tiny_imagenet", root=tiny_root, split="val", transform=None)
    # val_k.JPEG -> n02, n03, n01, n02 -> sorted index 1, 2, 0, 1
    assert ds.targets == [1, 2, 0, 1] and ds.split == "test"
    _assert_labels_match_colours(ds)


def test_tiny_imagenet_accepts_the_folder_itself_and_sorted_val(tiny_root):
    base = tiny_root / "tiny-imagenet-200"
    val = base / "val"
    for k, w in enumerate(["n02", "n03", "n01", "n02"]):
        (val / w).mkdir(exist_ok=True)
        shutil.move(val / "images" / f"val_{k}.JPEG", val / w / f"val_{k}.JPEG")
    (val / "val_annotations.txt").unlink()
    ds = TinyImageNet(base, split="test")
    assert sorted(ds.targets) == [0, 1, 1, 2]
    _assert_labels_match_colours(ds)


def test_tiny_imagenet_default_transforms(tiny_root):
    train = build_dataset("tiny_imagenet", root=tiny_root, split="train")
    test = build_dataset("tiny_imagenet", root=tiny_root, split="test")
    assert train[0][0].shape == test[0][0].shape == (3, 64, 64)
    x = test[0][0]
    mean = torch.tensor(test.info.mean).view(3, 1, 1)
    std = torch.tensor(test.info.std).view(3, 1, 1)
    assert torch.all((x * std + mean >= -1e-6) & (x * std + mean <= 1 + 1e-6))
    # mdistiller's training recipe: RandomRotation(20) + flip, no padded crop
    ops = [type(t).__name__ for t in train.transform.transforms]
    assert ops == ["RandomRotation", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert list(train.transform.transforms[0].degrees) == [-20.0, 20.0]


def test_tiny_imagenet_missing_annotations(tiny_root):
    (tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(ValueError, match=r"val_annotations.txt is missing.*Expected layout"):
        build_dataset("tiny_imagenet", root=tiny_root, split="val")


def test_tiny_imagenet_unknown_wnid_and_missing_file(tiny_root):
    ann = tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"wnid 'n99' is not in wnids.txt"):
        build_dataset("tiny_imagenet", root=tiny_root, split="val")
    ann.write_text("val_77.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_77.JPEG does not exist"):
        build_dataset("tiny_imagenet", root=tiny_root, split="val")


def test_tiny_imagenet_missing_class_folder(tiny_root):
    shutil.rmtree(tiny_root / "tiny-imagenet-200" / "train" / "n02")
    with pytest.raises(ValueError, match=r"class folder .*n02 is missing"):
        build_dataset("tiny_imagenet", root=tiny_root)


def test_tiny_imagenet_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"wnids.txt.*tiny-imagenet-200.zip"):
        build_dataset("tiny_imagenet", root=tmp_path)


def test_imagenet_image_folder_layout(imagenet_root):
    train = build_dataset("imagenet", root=imagenet_root, split="train", transform=None)
    val = build_dataset("imagenet", root=imagenet_root, split="val", transform=None)
    assert train.classes == val.classes == IMAGENET_WNIDS
    assert len(train) == 6 and len(val) == 3  # notes.txt is not an image
    assert val.targets == [0, 1, 2]
    _assert_labels_match_colours(train)
    _assert_labels_match_colours(val)


def test_imagenet_val_is_checked_against_the_train_classes(imagenet_root):
    shutil.rmtree(imagenet_root / "val" / "n001")  # labels would silently shift by one
    with pytest.raises(ValueError, match=r"class folder .*val/n001 is missing"):
        ImageNet(imagenet_root, split="val")


def test_imagenet_val_only_uses_its_own_folders(imagenet_root):
    shutil.rmtree(imagenet_root / "train")
    val = ImageNet(imagenet_root, split="val")
    assert val.classes == IMAGENET_WNIDS and val.targets == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match=r"missing train"):
        ImageNet(imagenet_root, split="train")


def test_imagenet_default_transforms_give_224(imagenet_root):
    train = build_dataset("imagenet", root=imagenet_root, split="train")
    val = build_dataset("imagenet", root=imagenet_root, split="val")
    assert train[0][0].shape == val[0][0].shape == (3, 224, 224)
    x = val[2][0]  # solid blue, 10/255 in R -> normalised with ImageNet statistics
    np.testing.assert_allclose(
        x.mean((1, 2)).numpy(),
        (np.array(CLASS_COLOURS[2]) / 255 - np.array(val.info.mean)) / np.array(val.info.std),
        atol=0.1,
    )


def test_imagenet_flat_val_folder_is_explained(imagenet_root):
    shutil.rmtree(imagenet_root / "train")
    val = imagenet_root / "val"
    for w in IMAGENET_WNIDS:
        for f in (val / w).iterdir():
            f.rename(val / f.name)
        (val / w).rmdir()
    with pytest.raises(ValueError, match=r"holds 3 images directly.*one sub-folder per class"):
        build_dataset("imagenet", root=imagenet_root, split="val")


def test_imagenet_missing_root(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"missing train.*ImageFolder layout.*image-net.org"
    ):
        build_dataset("imagenet", root=tmp_path / "none")
