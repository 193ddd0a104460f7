"""MNIST-1D generation through the mnist1d package, seeding and the on-disk cache."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from eakd.data import MNIST1D, build_dataset, build_loader, generate_mnist1d
from eakd.data import mnist1d as mnist1d_module
from eakd.data.mnist1d import MNIST1D_DEFAULTS

mnist1d = pytest.importorskip("mnist1d", reason="MNIST-1D needs `pip install mnist1d`")


def test_generated_split_shapes_and_classes(tmp_path):
    train = build_dataset("mnist1d", root=tmp_path, split="train", num_samples=200, seed=1)
    test = build_dataset("mnist1d", root=tmp_path, split="test", num_samples=200, seed=1)
    assert (len(train), len(test)) == (160, 40)  # 20 per class, 80 / 20 split
    x, y = train[0]
    assert x.shape == (1, 40) and x.dtype == torch.float32 and isinstance(y, int)
    assert train.num_classes == 10 and train.info.input_shape == (1, 40)
    assert np.bincount(train.targets + test.targets).tolist() == [20] * 10
    both = torch.cat([train.inputs, test.inputs])
    # make_dataset standardises the whole set: mean 0, std 1 (the info's mean/std).
    assert abs(both.mean().item()) < 1e-4 and abs(both.std(unbiased=False).item() - 1) < 1e-4


def test_matches_the_package_with_its_default_arguments():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    assert {k: v for k, v in args.items() if k != "url"} == {
        **MNIST1D_DEFAULTS,
        "padding": list(MNIST1D_DEFAULTS["padding"]),
    }
    ref_args = get_dataset_args()
    ref_args.num_samples, ref_args.seed = 100, 5
    ref = make_dataset(ref_args)
    ours = generate_mnist1d(num_samples=100, seed=5)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(ours[key], ref[key])


def test_seed_determinism_without_touching_global_rngs():
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    a = generate_mnist1d(num_samples=50, seed=3)
    b = generate_mnist1d(num_samples=50, seed=3)
    c = generate_mnist1d(num_samples=50, seed=4)
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])
    assert not np.array_equal(a["x"], c["x"])
    assert random.getstate() == py_state
    np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002


def test_cache_hit_skips_generation(tmp_path, monkeypatch):
    first = MNIST1D(tmp_path, split="train", num_samples=60, seed=2)
    assert first.cache_path.parent == tmp_path and first.cache_path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_path.name]  # no temp files

    def boom(**_):
        raise AssertionError("generation must not run on a cache hit")

    monkeypatch.setattr(mnist1d_module, "generate_mnist1d", boom)
    again = MNIST1D(tmp_path, split="train", num_samples=60, seed=2)
    assert again.cache_path == first.cache_path and torch.equal(again.inputs, first.inputs)
    with pytest.raises(AssertionError, match="must not run"):
        MNIST1D(tmp_path, split="train", num_samples=60, seed=3)  # other args, other key


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EAKD_CACHE", str(tmp_path))
    ds = MNIST1D(split="test", num_samples=30, seed=0)
    assert ds.cache_path.parent == tmp_path / "mnist1d" and len(ds) == 6


def test_unreadable_cache_is_regenerated(tmp_path):
    ds = MNIST1D(tmp_path, num_samples=30, seed=0)
    ds.cache_path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="regenerating MNIST-1D"):
        again = MNIST1D(tmp_path, num_samples=30, seed=0)
    assert torch.equal(again.inputs, ds.inputs)


def test_generation_arguments_reach_the_package(tmp_path):
    ds = MNIST1D(tmp_path, num_samples=30, seed=0, final_seq_length=24, cache=False)
    assert ds.inputs.shape == (24, 1, 24) and ds.info.input_shape == (1, 24)
    assert ds.cache_path is None and not any(tmp_path.iterdir())


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"num_samples must be at least 10"):
        MNIST1D(tmp_path, num_samples=5)
    with pytest.raises(ValueError, match=r"leaves an empty split"):
        MNIST1D(tmp_path, num_samples=10, train_split=1.0)
    with pytest.raises(TypeError, match=r"unknown MNIST-1D argument.*'noise'.*valid: num_samples"):
        build_dataset("mnist1d", root=tmp_path, noise=0.1)


def test_in_memory_loader_is_the_default(tmp_path):
    ds = build_dataset("mnist1d", root=tmp_path, num_samples=100, seed=0)
    loader = build_loader(ds, batch_size=32, train=True, seed=0)
    batches = list(loader)
    assert type(loader).__name__ == "InMemoryLoader" and len(batches) == 2  # 80 // 32
    x, y = batches[0]
    assert x.shape == (32, 1, 40) and y.dtype == torch.int64
    # no augmentation for MNIST-1D: every row is one of the stored signals
    assert all(any(torch.equal(r, s) for s in ds.inputs) for r in x[:4])
