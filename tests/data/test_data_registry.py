"""The dataset registry, metadata and argument validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eakd.data import DatasetInfo, build_dataset, dataset_info, list_datasets, normalize_split


def test_every_dataset_is_registered():
    assert set(list_datasets()) >= {
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "imagenet",
        "mnist1d",
        "tiny_imagenet",
    }


@pytest.mark.parametrize(
    ("name", "classes", "shape"),
    [
        ("cifar100", 100, (3, 32, 32)),
        ("cifar10", 10, (3, 32, 32)),
        ("tiny_imagenet", 200, (3, 64, 64)),
        ("imagenet", 1000, (3, 224, 224)),
        ("mnist1d", 10, (1, 40)),
        ("fashion_mnist", 10, (1, 28, 28)),
    ],
)
def test_info_shapes_and_classes(name, classes, shape):
    info = dataset_info(name)
    assert isinstance(info, DatasetInfo)
    assert (info.num_classes, info.input_shape) == (classes, shape)
    assert info.in_channels == shape[0] == len(info.mean) == len(info.std)
    assert info.layout and info.source


def test_paper_normalisation_constants():
    # the mdistiller / CRD CIFAR-100 recipe and the common ImageNet recipe.
    c = dataset_info("cifar100")
    assert c.mean == (0.5071, 0.4867, 0.4408) and c.std == (0.2675, 0.2565, 0.2761)
    assert (c.crop_padding, c.hflip) == (4, True)
    i = dataset_info("imagenet")
    assert i.mean == (0.485, 0.456, 0.406) and i.std == (0.229, 0.224, 0.225)
    assert (i.resized_crop, i.test_resize) == (True, 256)
    t = dataset_info("tiny_imagenet")
    assert (t.crop_padding, t.rotation, t.hflip, t.spatial_size) == (None, 20.0, True, (64, 64))
    assert dataset_info("mnist1d").in_memory and dataset_info("fashion_mnist").in_memory


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"did you mean 'cifar100'"):
        build_dataset("cifar1000")


def test_unknown_keyword_names_the_valid_ones(tmp_path):
    with pytest.raises(TypeError, match=r"unknown keyword 'subsett'.*subset"):
        build_dataset("fashion_mnist", root=tmp_path, subsett=3)


@pytest.mark.parametrize(
    ("split", "expected"), [("train", "train"), ("test", "test"), ("val", "test")]
)
def test_split_aliases(split, expected):
    assert normalize_split(split) == expected


def test_bad_split_and_transform_are_rejected(fashion_root):
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*train, test, val"):
        build_dataset("fashion_mnist", root=fashion_root, split="valid")
    with pytest.raises(ValueError, match=r"unknown transform 'strong'"):
        build_dataset("fashion_mnist", root=fashion_root, transform="strong")
    with pytest.raises(TypeError, match=r"transform must be .* got int"):
        build_dataset("fashion_mnist", root=fashion_root, transform=3)


def test_import_stays_light():
    """Datasets and loaders import without torchvision or mnist1d (transforms load lazily)."""
    code = (
        "import sys, eakd.data as d; d.build_loader; d.list_datasets();"
        "bad = [m for m in ('torchvision', 'mnist1d', 'matplotlib') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
