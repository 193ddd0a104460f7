"""Datasets of image files on disk: ImageNet (ImageFolder layout) and Tiny-ImageNet."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .base import ClassificationDataset, find_dataset_dir, layout_errors
from .registry import DatasetInfo, normalize_split, register_dataset

__all__ = [
    "IMAGENET_INFO",
    "IMAGE_EXTENSIONS",
    "TINY_IMAGENET_INFO",
    "ImageFileDataset",
    "ImageNet",
    "TinyImageNet",
    "scan_class_folders",
]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")

IMAGENET_INFO = DatasetInfo(
    name="imagenet",
    num_classes=1000,
    input_shape=(3, 224, 224),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    hflip=True,
    resized_crop=True,
    test_resize=256,
    layout="<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (ImageFolder layout: one "
    "folder per class in both splits)",
    source="obtain ILSVRC-2012 from https://image-net.org (registration required), extract the "
    "train tarballs into train/<wnid>/ and sort the validation images into val/<wnid>/ using the "
    "devkit's ground-truth labels",
)

TINY_IMAGENET_INFO = DatasetInfo(
    name="tiny_imagenet",
    num_classes=200,
    input_shape=(3, 64, 64),
    mean=(0.4802, 0.4481, 0.3975),
    std=(0.2302, 0.2265, 0.2262),
    rotation=20.0,  # mdistiller's Tiny-ImageNet training recipe: RandomRotation(20) + flip
    hflip=True,
    layout="<root>/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
    "val/val_annotations.txt}; root may also be the tiny-imagenet-200 folder itself, and "
    "val/<wnid>/[images/]*.JPEG is accepted instead of val/images + val_annotations.txt",
    source="download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip "
    "on a machine with network access and unzip it into <root>",
)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(directory: Path) -> list[Path]:
    with os.scandir(directory) as it:
        return sorted(Path(e.path) for e in it if e.is_file() and _is_image(e.name))


def _subdirs(directory: Path) -> list[str]:
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(
    directory: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    images_subdir: str | None = None,
) -> tuple[list[tuple[Path, int]], list[str]]:
    """List ``(path, label)`` for ``directory/<class>/[images_subdir/]*.<image ext>``.

    Args:
        directory: the split folder.
        classes: class folder names in label order; None uses the sorted sub-folders (the
            ``torchvision.datasets.ImageFolder`` convention, so checkpoints trained with it agree).
        images_subdir: an extra level inside each class folder (Tiny-ImageNet's ``images``).

    Raises:
        ValueError: no class folders, a listed class folder is missing, or a class has no images.
    """
    directory = Path(directory)
    if classes is None:
        classes = _subdirs(directory)
        if not classes:
            loose = _list_images(directory)
            hint = (
                f" it holds {len(loose)} images directly; sort them into one sub-folder per class"
                if loose
                else ""
            )
            raise ValueError(f"{directory} has no class sub-folders;{hint}")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = directory / name
        if images_subdir is not None and (folder / images_subdir).is_dir():
            folder = folder / images_subdir
        if not folder.is_dir():
            raise ValueError(f"class folder {folder} is missing")
        files = _list_images(folder)
        if not files:
            raise ValueError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        samples.extend((f, label) for f in files)
    return samples, list(classes)


class ImageFileDataset(ClassificationDataset):
    """``(path, label)`` pairs read as RGB PIL images, then passed through ``transform``."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        split: str,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(split, transform, classes, [t for _, t in samples])
        self.samples = [(Path(p), int(t)) for p, t in samples]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        with Image.open(path) as img:
            # Some Tiny-ImageNet/ImageNet files are grayscale or CMYK.
            sample = img.convert("RGB")
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, target


class ImageNet(ImageFileDataset):
    """ILSVRC-2012 in ImageFolder layout: ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``.

    Labels follow the sorted class folders of ``train`` (of ``val`` when only ``val`` exists).
    """

    info = IMAGENET_INFO

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        split = normalize_split(split)
        sub = "train" if split == "train" else "val"
        base = find_dataset_dir(root, None, (sub,), self.info)
        classes = _subdirs(base / "train") if (base / "train").is_dir() else None
        with layout_errors(self.info):
            samples, classes = scan_class_folders(base / sub, classes or None)
        super().__init__(samples, classes, split, transform)
        self.root = base


class TinyImageNet(ImageFileDataset):
    """Tiny-ImageNet-200: 100 000 train / 10 000 val RGB images of 64x64, 200 classes.

    Labels index the sorted wnids of ``wnids.txt`` (the order ``ImageFolder`` gives the train
    folder). The unlabeled ``test`` folder of the archive is never used: ``split="test"`` and
    ``"val"`` both read ``val``.
    """

    info = TINY_IMAGENET_INFO

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        split = normalize_split(split)
        sub = "train" if split == "train" else "val"
        base = find_dataset_dir(root, "tiny-imagenet-200", ("wnids.txt", sub), self.info)
        wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()})
        with layout_errors(self.info):
            if not wnids:
                raise ValueError(f"{base / 'wnids.txt'} lists no classes")
            if split == "train":
                samples, _ = scan_class_folders(base / "train", wnids, images_subdir="images")
            else:
                samples = self._val_samples(base / "val", wnids)
        super().__init__(samples, wnids, split, transform)
        self.root = base

    @staticmethod
    def _val_samples(val: Path, wnids: list[str]) -> list[tuple[Path, int]]:
        ann = val / "val_annotations.txt"
        if not ann.exists():
            if (val / wnids[0]).is_dir():  # already sorted into class folders
                return scan_class_folders(val, wnids, images_subdir="images")[0]
            raise ValueError(f"{ann} is missing")
        index = {w: i for i, w in enumerate(wnids)}
        present = set(os.listdir(val / "images")) if (val / "images").is_dir() else set()
        samples = []
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise ValueError(f"{ann}:{lineno}: expected '<file>\\t<wnid>\\t...', got {line!r}")
            fname, wnid = fields[0], fields[1]
            if wnid not in index:
                raise ValueError(f"{ann}:{lineno}: wnid {wnid!r} is not in wnids.txt")
            if fname not in present:
                raise ValueError(f"{ann}:{lineno}: {val / 'images' / fname} does not exist")
            samples.append((val / "images" / fname, index[wnid]))
        if not samples:
            raise ValueError(f"{ann} lists no images")
        return samples


register_dataset(IMAGENET_INFO)(ImageNet)
register_dataset(TINY_IMAGENET_INFO)(TinyImageNet)
