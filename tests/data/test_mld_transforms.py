"""MLD's weak/strong views: RandAugment-FixMatch ops, Cutout, pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from eakd.data import (
    CUTOUT_FILL,
    RANDAUGMENT_OPS,
    RandAugmentFixMatch,
    build_transform,
    cutout,
    mld_transforms,
)


def _image(size=(32, 32), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)


def test_op_table_matches_the_spec():
    expected = {
        "AutoContrast": None,
        "Brightness": (0.05, 0.95),
        "Color": (0.05, 0.95),
        "Contrast": (0.05, 0.95),
        "Equalize": None,
        "Identity": None,
        "Posterize": (4, 8),
        "Rotate": (-30, 30),
        "Sharpness": (0.05, 0.95),
        "ShearX": (-0.3, 0.3),
        "ShearY": (-0.3, 0.3),
        "Solarize": (0, 256),
        "TranslateX": (-0.3, 0.3),
        "TranslateY": (-0.3, 0.3),
    }
    assert set(RANDAUGMENT_OPS) == set(expected)
    for name, rng in expected.items():
        if rng is not None:
            assert RANDAUGMENT_OPS[name][1:] == pytest.approx(rng), name


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("name", sorted(RANDAUGMENT_OPS))
def test_each_op_keeps_size_and_mode(name, mode):
    op, low, high = RANDAUGMENT_OPS[name]
    img = _image(mode=mode)
    fill = 0 if mode == "L" else (0, 0, 0)
    for v in (low, high, (low + high) / 2):
        out = op(img, v, fill)
        assert out.size == img.size and out.mode == mode


def test_magnitudes_are_drawn_from_the_range():
    # Brightness on a constant 200 image scales it by v in [0.05, 0.95].
    img = Image.new("RGB", (8, 8), (200, 200, 200))
    aug = RandAugmentFixMatch(num_ops=1, ops=["Brightness"], cutout=0)
    torch.manual_seed(0)
    levels = [np.asarray(aug(img))[0, 0, 0] for _ in range(200)]
    assert 10 <= min(levels) < 30 and 170 < max(levels) <= 190


def test_geometric_ops_fill_exposed_pixels():
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    op = RANDAUGMENT_OPS["TranslateX"][0]
    out = np.asarray(op(img, 0.25, (0, 0, 0)))  # shift by 8 px: 8 columns become fill
    assert (out[:, :8] == 0).sum() + (out[:, -8:] == 0).sum() == 32 * 8 * 3


def test_two_ops_uniform_with_replacement_and_uniform_magnitudes(monkeypatch):
    calls: list[tuple[str, float]] = []
    for name in ("Rotate", "Solarize", "Identity"):
        op, low, high = RANDAUGMENT_OPS[name]

        def spy(img, v, fill, name=name, op=op):
            calls.append((name, v))
            return op(img, v, fill)

        monkeypatch.setitem(RANDAUGMENT_OPS, name, (spy, low, high))
    aug = RandAugmentFixMatch(num_ops=2, ops=["Rotate", "Solarize", "Identity"], cutout=0)
    torch.manual_seed(0)
    img = _image(size=(8, 8))
    n = 600
    for _ in range(n):
        aug(img)
    assert len(calls) == 2 * n
    pairs = [(calls[2 * i][0], calls[2 * i + 1][0]) for i in range(n)]
    same = sum(a == b for a, b in pairs) / n
    assert 0.25 < same < 0.42  # with replacement: 1/3 of pairs repeat an op
    counts = {k: sum(c[0] == k for c in calls) / (2 * n) for k in ("Rotate", "Solarize")}
    assert all(0.28 < v < 0.39 for v in counts.values())
    angles = np.array([v for k, v in calls if k == "Rotate"])
    assert angles.min() >= -30 and angles.max() <= 30 and abs(angles.mean()) < 3
    assert angles.min() < -25 and angles.max() > 25


def test_cutout_paints_a_clipped_square():
    img = _image(seed=1)
    out = np.asarray(cutout(img, center=(10.5, 20.0), side=8.0))
    src = np.asarray(img)
    mask = np.zeros((32, 32), bool)
    mask[16:24, 6:14] = True  # x in [6.5, 14.5) -> cols 6..13, y in [16, 24) -> rows 16..23
    assert (out[mask] == CUTOUT_FILL).all() and np.array_equal(out[~mask], src[~mask])
    corner = np.asarray(cutout(img, center=(1.0, 31.0), side=10.0))
    changed = (corner != src).any(-1)
    assert changed[26:, :6].all() and changed.sum() == 6 * 6  # clipped to cols 0..5, rows 26..31


def test_cutout_on_grayscale_uses_the_gray_level_of_the_fill():
    out = np.asarray(cutout(_image(mode="L"), center=(16, 16), side=4))
    gray = Image.new("RGB", (1, 1), CUTOUT_FILL).convert("L").getpixel((0, 0))
    assert (out[14:18, 14:18] == gray).all()


def test_strong_view_cutout_region_holds_the_fill_colour():
    aug = RandAugmentFixMatch(num_ops=2, ops=["Identity"], cutout=0.5)
    img = Image.new("RGB", (32, 32), (0, 0, 0))
    torch.manual_seed(0)
    sides = []
    for _ in range(100):
        out = np.asarray(aug(img))
        changed = (out != 0).any(-1)
        if changed.any():
            rows, cols = np.where(changed)
            box = out[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert (box == CUTOUT_FILL).all()  # one filled rectangle, nothing else changed
            assert rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16
            sides.append(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)
    assert len(sides) > 80 and max(sides) >= 12 and min(sides) <= 4


def test_strong_pipeline_structure():
    strong = build_transform("cifar100", "train", "mld_strong")
    kinds = [type(t) for t in strong.transforms]
    assert kinds == [
        T.RandomCrop,
        T.RandomHorizontalFlip,
        RandAugmentFixMatch,
        T.ToTensor,
        T.Normalize,
    ]
    ra = strong.transforms[2]
    assert ra.num_ops == 2 and ra.cutout.max_fraction == 0.5 and ra.cutout.fill == (125, 123, 114)
    assert len(ra.ops) == 14
    assert strong.transforms[0].padding == 4 and strong.transforms[4].mean == (
        0.5071,
        0.4867,
        0.4408,
    )


@pytest.mark.parametrize(
    ("name", "size", "mode", "shape"),
    [
        ("cifar100", (32, 32), "RGB", (3, 32, 32)),
        ("tiny_imagenet", (64, 64), "RGB", (3, 64, 64)),
        ("imagenet", (80, 60), "RGB", (3, 224, 224)),
        ("fashion_mnist", (28, 28), "L", (1, 28, 28)),
    ],
)
def test_views_are_seeded_and_shaped(name, size, mode, shape):
    weak, strong = mld_transforms(name)
    img = _image(size, mode)
    torch.manual_seed(5)
    a = (weak(img), strong(img))
    torch.manual_seed(5)
    b = (weak(img), strong(img))
    assert a[0].shape == a[1].shape == shape
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(6)
    assert not torch.equal(strong(img), a[1])


def test_seeded_generator_gives_reproducible_strong_augmentation():
    img = _image()
    outs = [
        np.asarray(RandAugmentFixMatch(generator=torch.Generator().manual_seed(9))(img))
        for _ in range(2)
    ]
    assert np.array_equal(outs[0], outs[1])


def test_transform_kind_errors():
    with pytest.raises(ValueError, match=r"unknown transform kind 'mld'"):
        build_transform("cifar100", "train", "mld")
    with pytest.raises(ValueError, match=r"training view"):
        build_transform("cifar100", "test", "mld_strong")
    with pytest.raises(ValueError, match=r"needs images; mnist1d"):
        mld_transforms("mnist1d")
    with pytest.raises(ValueError, match=r"unknown or empty ops"):
        RandAugmentFixMatch(ops=["Blur"])


def test_imagenet_standard_pipelines():
    train = build_transform("imagenet", "train")
    test = build_transform("imagenet", "test")
    assert [type(t) for t in train.transforms] == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    assert [type(t) for t in test.transforms][:2] == [T.Resize, T.CenterCrop]
    assert test.transforms[0].size == 256 and tuple(test.transforms[1].size) == (224, 224)
