"""COCO-format detection data: ``instances_*.json`` + an image folder, validated strictly.

The annotation file follows the COCO object-detection format (``images``, ``annotations``,
``categories``; boxes are ``[x, y, width, height]`` in pixels). Category ids (COCO's run
1..90 with gaps) are mapped to contiguous labels ``1..K`` in ascending id order; label 0 is
background, as torchvision's detectors expect. Nothing is downloaded: COCO 2017 must already
be on disk (https://cocodataset.org/#download: ``train2017/``, ``val2017/`` and
``annotations/instances_{train,val}2017.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["CocoDetection", "collate_detection", "load_coco_annotations"]

COCO_LAYOUT = (
    "expected a COCO-format layout: an annotation file such as "
    "annotations/instances_val2017.json and an image folder such as val2017/ holding each "
    "image's 'file_name'"
)


def load_coco_annotations(path: str | os.PathLike) -> dict[str, Any]:
    """Read a COCO annotation file, checking its top-level structure."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} not found; {COCO_LAYOUT}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a JSON object; {COCO_LAYOUT}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing the list {key!r}; {COCO_LAYOUT}")
    return data


def _require(entry: dict, keys: Sequence[str], where: str) -> None:
    for key in keys:
        if key not in entry:
            raise ValueError(f"{where} has no {key!r} field")


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset for torchvision's detectors.

    Items are ``(image, target)``: ``image`` a float tensor ``(3, H, W)`` in ``[0, 1]``,
    ``target`` a dict with ``boxes`` ``(N, 4)`` float32 (x1, y1, x2, y2), ``labels`` ``(N,)``
    int64 in ``1..K`` and ``image_id`` (the COCO id, an int).

    Validation at construction, each failure naming the file and the entry: an image listed
    but missing on disk (``FileNotFoundError``), an annotation of an unknown image or category
    id, a box outside its image by more than ``box_tolerance`` pixels, a malformed box, a
    duplicate id (``ValueError``). Boxes within the tolerance are clipped to the image;
    crowd annotations (``iscrowd=1``) and boxes of zero width or height are not trained on
    (COCO has a few); the evaluator reads them from the annotation file as COCO does.

    Args:
        images: the image folder.
        annotations: the ``instances_*.json`` file, or its already-parsed dict.
        train: random horizontal flips with probability ``hflip``.
        filter_empty: drop images without a usable box (training only, as Detectron2 does).
        contiguous_labels: map category ids to ``1..K`` (default). ``False`` uses each
            category id as its label (``K = max id``), the layout of torchvision's COCO
            detectors (91 outputs, unused ids included), so their checkpoints fit.
        box_tolerance: pixels a box may exceed its image by before it is an error.
        check_files: check that every image file exists.
    """

    def __init__(
        self,
        images: str | os.PathLike,
        annotations: str | os.PathLike | dict[str, Any],
        *,
        train: bool = False,
        hflip: float = 0.5,
        filter_empty: bool = False,
        box_tolerance: float = 1.0,
        contiguous_labels: bool = True,
        check_files: bool = True,
    ) -> None:
        self.root = os.fspath(images)
        if isinstance(annotations, dict):
            self.annotation_file = "<annotations>"
            data = annotations
        else:
            self.annotation_file = os.fspath(annotations)
            data = load_coco_annotations(self.annotation_file)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder {self.root!r} not found; {COCO_LAYOUT}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        self.coco = data
        self.train = bool(train)
        self.hflip = float(hflip)
        self.epoch = 0
        self.seed = 0
        src = self.annotation_file

        categories = sorted(data["categories"], key=lambda c: c.get("id", 0))
        cat_ids: list[int] = []
        for i, cat in enumerate(categories):
            _require(cat, ("id", "name"), f"{src}: categories[{i}]")
            if cat["id"] in cat_ids:
                raise ValueError(f"{src}: category id {cat['id']} appears twice")
            cat_ids.append(int(cat["id"]))
        if not cat_ids:
            raise ValueError(f"{src}: the 'categories' list is empty")
        names = {int(c["id"]): str(c["name"]) for c in categories}
        if contiguous_labels:
            #: label (1..K) -> COCO category id; index 0 is background
            self.label_to_category = [0, *cat_ids]
        else:
            if min(cat_ids) < 1:
                raise ValueError(f"{src}: category ids must be >= 1 to be used as labels")
            self.label_to_category = list(range(max(cat_ids) + 1))
        self.category_to_label = {c: i for i, c in enumerate(self.label_to_category) if c in names}
        self.class_names = [names.get(c, "N/A") for c in self.label_to_category[1:]]

        self.images: dict[int, dict[str, Any]] = {}
        for i, img in enumerate(data["images"]):
            where = f"{src}: images[{i}]"
            _require(img, ("id", "file_name", "width", "height"), where)
            if img["id"] in self.images:
                raise ValueError(f"{where}: image id {img['id']} appears twice")
            if check_files and not os.path.isfile(os.path.join(self.root, img["file_name"])):
                raise FileNotFoundError(
                    f"{where} (id {img['id']}): image file "
                    f"{os.path.join(self.root, img['file_name'])!r} is missing; {COCO_LAYOUT}"
                )
            self.images[int(img["id"])] = img

        boxes: dict[int, list[list[float]]] = {i: [] for i in self.images}
        labels: dict[int, list[int]] = {i: [] for i in self.images}
        self.num_ignored = 0
        seen: set[int] = set()
        for i, ann in enumerate(data["annotations"]):
            where = f"{src}: annotations[{i}] (id {ann.get('id')})"
            _require(ann, ("id", "image_id", "category_id", "bbox"), where)
            if ann["id"] in seen:
                raise ValueError(f"{where}: annotation id {ann['id']} appears twice")
            seen.add(ann["id"])
            img = self.images.get(ann["image_id"])
            if img is None:
                raise ValueError(f"{where}: unknown image_id {ann['image_id']}")
            if ann["category_id"] not in self.category_to_label:
                raise ValueError(
                    f"{where}: unknown category_id {ann['category_id']}; the file's categories "
                    f"are {cat_ids}"
                )
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise ValueError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            if w < 0 or h < 0:
                raise ValueError(f"{where}: bbox {bbox} has a negative width or height")
            width, height = float(img["width"]), float(img["height"])
            tol = box_tolerance
            if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
                raise ValueError(
                    f"{where}: bbox [x, y, w, h] = {bbox} lies outside its image "
                    f"{img['file_name']!r} of size {int(width)}x{int(height)} (W x H)"
                )
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, width), min(y + h, height)
            if ann.get("iscrowd", 0) or x2 <= x1 or y2 <= y1:
                self.num_ignored += 1
                continue
            boxes[img["id"]].append([x1, y1, x2, y2])
            labels[img["id"]].append(self.category_to_label[ann["category_id"]])

        ids = sorted(self.images)
        if filter_empty:
            ids = [i for i in ids if boxes[i]]
        if not ids:
            raise ValueError(f"{src}: no images{' with boxes' if filter_empty else ''} to use")
        self.ids = ids
        self._boxes = {i: torch.tensor(boxes[i], dtype=torch.float32).reshape(-1, 4) for i in ids}
        self._labels = {i: torch.tensor(labels[i], dtype=torch.int64) for i in ids}

    @property
    def num_classes(self) -> int:
        """Object classes ``K`` (without background)."""
        return len(self.label_to_category) - 1

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Flips are drawn from ``(seed, epoch, index)``, so a resumed run sees the same ones."""
        self.epoch, self.seed = int(epoch), int(seed)

    def read_image(self, image_id: int) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        info = self.images[image_id]
        path = os.path.join(self.root, info["file_name"])
        try:
            with Image.open(path) as im:
                image = pil_to_tensor(im.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path!r} is missing; {COCO_LAYOUT}") from None
        if image.shape[1:] != (int(info["height"]), int(info["width"])):
            raise ValueError(
                f"{path} is {image.shape[2]}x{image.shape[1]} (W x H) but "
                f"{self.annotation_file} says {info['width']}x{info['height']}"
            )
        return image.float().div_(255.0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image = self.read_image(image_id)
        boxes = self._boxes[image_id].clone()
        if self.train and self.hflip > 0:
            seed = (self.seed * 1_000_003 + self.epoch * 10_007 + index) % (2**63)
            g = torch.Generator().manual_seed(seed)
            if torch.rand((), generator=g).item() < self.hflip:
                image = image.flip(-1)
                width = image.shape[-1]
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        labels = self._labels[image_id].clone()
        return image, {"boxes": boxes, "labels": labels, "image_id": image_id}


def collate_detection(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list, list]:
    """Images of different sizes stay a list; the detector's transform batches them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
