"""Per-sample transforms of the paper's recipes, driven by each dataset's :class:`DatasetInfo`.

* standard train: RandomCrop(size, padding) + RandomHorizontalFlip (CIFAR: 32/4, Fashion-MNIST:
  28/2), RandomRotation(20) + flip (Tiny-ImageNet, mdistiller's recipe; EA-KD's Tiny-ImageNet
  code, built on mdistiller, is unreleased) or RandomResizedCrop(224) + flip (ImageNet), then
  ToTensor and Normalize(mean, std);
* standard test: ToTensor + Normalize, after Resize(256) + CenterCrop(224) on ImageNet;
* MLD: the weak view is the standard train pipeline; the strong view inserts
  :class:`~eakd.data.randaugment.RandAugmentFixMatch` (2 ops + Cutout) before ToTensor.

MNIST-1D samples are already standardised tensors: its standard pipeline is the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset
from torchvision import transforms as T

from .randaugment import RandAugmentFixMatch
from .registry import DatasetInfo, dataset_info, normalize_split

__all__ = [
    "StandardTransform",
    "TwoViewDataset",
    "build_transform",
    "mld_transforms",
]

KINDS = ("standard", "mld_weak", "mld_strong")
_PASSTHROUGH = ("info", "classes", "targets", "num_classes", "split")


class StandardTransform(T.Compose):
    """The standard pipeline of one dataset and split (a ``Compose`` that remembers both).

    :func:`eakd.data.build_loader` recognises it and may replace it by the equivalent batched
    tensor pipeline for in-memory datasets.
    """

    def __init__(self, transforms: list[Callable[[Any], Any]], info: DatasetInfo, split: str):
        super().__init__(transforms)
        self.info, self.split = info, split

    def __repr__(self) -> str:
        ops = ", ".join(repr(t) for t in self.transforms)
        return f"StandardTransform({self.info.name!r}, {self.split!r}, [{ops}])"


def _geometry(info: DatasetInfo, split: str) -> list[Callable[[Any], Any]]:
    size = info.spatial_size
    if split == "train":
        ops: list[Callable[[Any], Any]] = []
        if info.resized_crop:
            ops.append(T.RandomResizedCrop(size))
        elif info.crop_padding:
            ops.append(T.RandomCrop(size, padding=info.crop_padding))
        if info.rotation:
            ops.append(T.RandomRotation(info.rotation))
        if info.hflip:
            ops.append(T.RandomHorizontalFlip())
        return ops
    if info.test_resize is not None:
        return [T.Resize(info.test_resize), T.CenterCrop(size)]
    return []


def build_transform(
    dataset: str | DatasetInfo, split: str = "train", kind: str = "standard"
) -> Callable[[Any], Any]:
    """The per-sample pipeline for a registered dataset (name or :class:`DatasetInfo`).

    Args:
        split: "train" or "test"/"val".
        kind: "standard"; "mld_weak" (== standard train); "mld_strong" (train geometry,
            RandAugmentFixMatch with 2 ops and Cutout 0.5, ToTensor, Normalize).

    Returns:
        PIL image -> float tensor (C, H, W) normalised with ``info.mean`` / ``info.std``.
    """
    info = dataset if isinstance(dataset, DatasetInfo) else dataset_info(dataset)
    split = normalize_split(split)
    if kind not in KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; valid: {', '.join(KINDS)}")
    if len(info.input_shape) != 3:
        if kind != "standard":
            raise ValueError(
                f"{kind} needs images; {info.name} samples have shape {info.input_shape}"
            )
        return StandardTransform([], info, split)
    tail = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if kind == "standard":
        return StandardTransform(_geometry(info, split) + tail, info, split)
    if split != "train":
        raise ValueError(f"{kind} is a training view; use kind='standard' for split {split!r}")
    if kind == "mld_weak":
        return T.Compose(_geometry(info, "train") + tail)
    return T.Compose([*_geometry(info, "train"), RandAugmentFixMatch(num_ops=2, cutout=0.5), *tail])


def mld_transforms(dataset: str | DatasetInfo) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(weak, strong)`` training views of MLD for a dataset."""
    weak = build_transform(dataset, "train", "mld_weak")
    return weak, build_transform(dataset, "train", "mld_strong")


class TwoViewDataset(Dataset):
    """Wrap a dataset of raw samples: ``ds[i] -> (weak(x), strong(x), target)`` (MLD's input).

    Both views come from the same raw sample; the wrapped dataset must have ``transform=None``.
    ``info``, ``classes`` and ``targets`` are those of the wrapped dataset.
    """

    def __init__(
        self,
        dataset: Dataset,
        weak: Callable[[Any], Any],
        strong: Callable[[Any], Any],
    ) -> None:
        if getattr(dataset, "transform", None) is not None:
            raise ValueError(
                "TwoViewDataset needs raw samples: build the wrapped dataset with transform=None"
            )
        self.dataset, self.weak, self.strong = dataset, weak, strong

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        x, target = self.dataset[index]
        return self.weak(x), self.strong(x), target

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes missing on the wrapper; "dataset" may be absent while
        # unpickling in a worker process.
        if name in _PASSTHROUGH and "dataset" in self.__dict__:
            return getattr(self.__dict__["dataset"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
