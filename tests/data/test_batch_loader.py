"""Batch-level tensor augmentation, the in-memory loader and build_loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from eakd.data import (
    BatchAugment,
    InMemoryLoader,
    SeededDataLoader,
    build_dataset,
    build_loader,
    normalize_batch,
    set_epoch,
)
from eakd.data.loader import ShardSampler


def _windows(x: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded sample x (C, *spatial) at offsets in [0, 2p]."""
    padded = F.pad(x, [p, p] * (x.ndim - 1))
    if x.ndim == 2:
        return [padded[:, i : i + x.shape[1]] for i in range(2 * p + 1)]
    h, w = x.shape[1:]
    return [padded[:, i : i + h, j : j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]


@pytest.mark.parametrize("shape", [(16, 3, 8, 10), (16, 2, 12)])
def test_crop_outputs_are_padded_windows(shape):
    x = torch.randint(1, 256, shape, dtype=torch.uint8)  # no zeros: padding is recognisable
    out = BatchAugment(crop_padding=2, hflip=False)(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(shape[0]):
        assert any(torch.equal(out[i], w) for w in _windows(x[i], 2))


def test_crop_offsets_are_uniform_over_the_whole_range():
    x = torch.arange(1, 7, dtype=torch.float32).view(1, 1, 6).expand(700, 1, 6).contiguous()
    out = BatchAugment(crop_padding=3, hflip=False)(x, torch.Generator().manual_seed(1))
    wins = _windows(x[0], 3)  # 7 distinct windows, one per offset
    offsets = [next(k for k, w in enumerate(wins) if torch.equal(o, w)) for o in out]
    counts = np.bincount(offsets, minlength=7)
    assert len(counts) == 7 and counts.min() > 70  # expected 100 each


def test_flip_gives_the_sample_or_its_mirror_both_seen():
    x = torch.randn(64, 3, 5, 7)
    out = BatchAugment(crop_padding=0, hflip=True)(x, torch.Generator().manual_seed(0))
    same = [torch.equal(o, s) for o, s in zip(out, x, strict=True)]
    mirror = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x, strict=True)]
    assert all(a or b for a, b in zip(same, mirror, strict=True))
    assert 16 < sum(mirror) < 48


def test_identity_and_determinism():
    x = torch.randn(8, 1, 6, 6)
    assert torch.equal(BatchAugment(crop_padding=None, hflip=False)(x), x)
    aug = BatchAugment(4, True)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"expected \(B, C, L\) or \(B, C, H, W\)"):
        aug(torch.zeros(3, 3))


def test_normalize_batch_matches_totensor_normalize():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(normalize_batch(x, mean, std), ref)
    assert normalize_batch(x).max() <= 1.0


def test_in_memory_test_batches_equal_the_per_sample_pipeline(fashion_root):
    ds = build_dataset("fashion_mnist", root=fashion_root, split="test")
    loader = build_loader(ds, batch_size=4, train=False)
    assert isinstance(loader, InMemoryLoader) and len(loader) == 3  # 10 samples, keep the last
    xs, ys = zip(*loader, strict=True)
    per_sample = torch.stack([ds[i][0] for i in range(len(ds))])
    torch.testing.assert_close(torch.cat(xs), per_sample)
    assert torch.cat(ys).tolist() == ds.targets


def test_in_memory_train_batches_are_augmented_pixels(fashion_root):
    ds = build_dataset("fashion_mnist", root=fashion_root, split="train")
    loader = build_loader(ds, batch_size=8, train=True, seed=0)
    assert len(loader) == 2 and loader.augment.crop_padding == 2 and loader.augment.hflip
    raw, _ = ds.as_tensors()
    mean, std = ds.info.mean[0], ds.info.std[0]
    for x, y in loader:
        pixels = torch.round((x * std + mean) * 255).to(torch.uint8)
        for img, label in zip(pixels, y, strict=True):
            cands = [i for i, t in enumerate(ds.targets) if t == label]
            views = [w for i in cands for s in (raw[i], raw[i].flip(-1)) for w in _windows(s, 2)]
            assert any(torch.equal(img, v) for v in views)


def test_in_memory_order_and_epochs(fashion_root):
    ds = build_dataset("fashion_mnist", root=fashion_root, split="train", transform=None)
    loader = InMemoryLoader(ds, batch_size=6, shuffle=True, drop_last=False, seed=1)
    assert len(loader) == 4
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == sorted(ds.targets)  # each sample once per epoch
    fresh = InMemoryLoader(ds, batch_size=6, shuffle=True, seed=1)
    set_epoch(fresh, 1)  # resuming at epoch 1 reproduces it exactly
    assert torch.equal(torch.cat([y for _, y in fresh]), epoch1)
    x0 = next(iter(InMemoryLoader(ds, batch_size=6, shuffle=True, seed=1)))[0]
    assert x0.dtype == torch.float32 and x0.max() <= 1.0  # transform=None: raw pixels in [0, 1]


def test_build_loader_picks_the_path(cifar100_root, fashion_root):
    cifar = build_dataset("cifar100", root=cifar100_root, split="train")
    assert isinstance(build_loader(cifar, 2, train=True), SeededDataLoader)
    assert isinstance(build_loader(cifar, 2, train=True, in_memory=True), InMemoryLoader)
    fm = build_dataset("fashion_mnist", root=fashion_root, transform=lambda im: torch.zeros(1))
    assert isinstance(build_loader(fm, 2, train=True), SeededDataLoader)
    with pytest.raises(ValueError, match=r"in_memory=True needs .* standard transform"):
        build_loader(fm, 2, train=True, in_memory=True)
    fm_std = build_dataset("fashion_mnist", root=fashion_root)
    assert isinstance(build_loader(fm_std, 2, train=True, in_memory=False), DataLoader)


def test_dataloader_train_drops_last_and_eval_keeps_order(cifar100_root):
    ds = build_dataset("cifar100", root=cifar100_root, split="train")
    train = build_loader(ds, batch_size=4, train=True, seed=0)
    assert len(train) == 1 and train.drop_last
    ev = build_loader(ds, batch_size=4, train=False)
    ys = torch.cat([y for _, y in ev]).tolist()
    assert ys == ds.targets and len(ev) == 2


def test_dataloader_order_depends_on_seed_and_epoch_only():
    ds = TensorDataset(torch.arange(20))

    def order(seed, epochs):
        loader = build_loader(ds, batch_size=5, train=True, seed=seed)
        out = None
        for _ in range(epochs):
            out = torch.cat([b[0] for b in loader]).tolist()
        return out, loader

    a0, _ = order(0, 1)
    a1, _ = order(0, 2)
    assert a0 != a1 and sorted(a0) == list(range(20))
    assert order(0, 1)[0] == a0 and order(1, 1)[0] != a0
    _, resumed = order(0, 0)
    resumed.set_epoch(1)
    assert torch.cat([b[0] for b in resumed]).tolist() == a1


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        # numpy's global stream is what third-party transforms use; seed_worker seeds it.
        return torch.rand(()) + float(np.random.rand()), i  # noqa: NPY002


def test_worker_seeding_is_deterministic():
    def run(seed):
        loader = build_loader(_Noisy(), batch_size=4, train=True, num_workers=2, seed=seed)
        return torch.cat([x for x, _ in loader])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_distributed_shards_are_disjoint():
    ds = TensorDataset(torch.arange(10))
    shards = []
    for rank in (0, 1):
        loader = build_loader(
            ds, 2, train=True, distributed=True, num_replicas=2, rank=rank, seed=3
        )
        assert isinstance(loader.sampler, DistributedSampler)
        shards.append(torch.cat([b[0] for b in loader]).tolist())
    assert set(shards[0]).isdisjoint(shards[1]) and len(shards[0]) == len(shards[1]) == 4
    mem = InMemoryLoader(
        (torch.arange(10).view(10, 1), torch.arange(10)),
        batch_size=5,
        sampler=DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=False),
    )
    assert torch.cat([y for _, y in mem]).tolist() == [1, 3, 5, 7, 9]


def test_distributed_without_process_group_is_explained():
    with pytest.raises(RuntimeError, match=r"init_process_group"):
        build_loader(TensorDataset(torch.arange(4)), 2, train=True, distributed=True)


def test_loader_argument_errors():
    ds = TensorDataset(torch.arange(4))
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        build_loader(ds, 0, train=True)
    with pytest.raises(ValueError, match=r"in_memory must be True, False or 'auto'"):
        build_loader(ds, 2, train=True, in_memory="yes")


def test_evaluation_shards_cover_each_sample_once():
    """DistributedSampler pads shards to equal length (duplicates in summed metrics); the
    evaluation loader's shards do not."""
    ds = TensorDataset(torch.arange(10))
    seen = []
    for rank in range(3):
        loader = build_loader(ds, 4, train=False, distributed=True, num_replicas=3, rank=rank)
        seen += [int(v) for (x,) in loader for v in x]
    assert sorted(seen) == list(range(10))
    assert [len(ShardSampler(10, 3, r)) for r in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 3\)"):
        ShardSampler(10, 3, 3)
