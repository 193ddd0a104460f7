"""A generated detection dataset with exact boxes, written in COCO format.

Coloured geometric shapes (and, when the Debian package ``dataset-fashion-mnist`` is
installed, Fashion-MNIST items) are pasted on textured backgrounds. Colours are random and
independent of the class, so only the shape tells the class. Objects never overlap or touch
(a gap of at least 2 pixels), and every box is the tight bounding box of the pixels drawn for
its object: background pixels stay in ``[50, 200]`` per channel while every object pixel has
at least one channel outside that range, so drawn pixels always differ from the background.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "SHAPES",
    "SceneObject",
    "fashion_mnist_items",
    "make_shapes_dataset",
    "render_scene",
]

SHAPES = ("circle", "square", "triangle", "cross")
#: Fashion-MNIST classes used, by their index in the dataset (distinct silhouettes)
FASHION_CLASSES = {1: "trouser", 5: "sandal", 8: "bag"}
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
BG_LOW, BG_HIGH = 50, 200
GAP = 2


@dataclass
class SceneObject:
    """One pasted object: its class index into the category list and exact pixel box."""

    label: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 with x2/y2 exclusive
    area: int


def fashion_mnist_items(root: str = FASHION_MNIST_DIR, split: str = "train") -> dict[int, Any]:
    """Fashion-MNIST images of :data:`FASHION_CLASSES` from the IDX files, by class index.

    Returns ``{class_index: uint8 array (N, 28, 28)}``. Raises ``FileNotFoundError`` naming the
    expected files (Debian: ``apt-get install dataset-fashion-mnist``).
    """
    prefix = "train" if split == "train" else "t10k"
    images_path = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")
    for path in (images_path, labels_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: Fashion-MNIST is read from IDX files in {root} "
                "(Debian/Ubuntu: apt-get install dataset-fashion-mnist)"
            )
    with gzip.open(images_path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051:
        raise ValueError(f"{images_path} is not an IDX image file (magic {magic})")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    with gzip.open(labels_path, "rb") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return {c: images[labels == c] for c in FASHION_CLASSES}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(80, 170, size=3)
    # low-frequency blotches, a random stripe pattern and pixel noise
    coarse = rng.normal(0, 18, size=(size // 16 + 2, size // 16 + 2, 3))
    blotch = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 20)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    stripes = stripes[..., None] * rng.uniform(4, 14, size=3)
    noise = rng.normal(0, 6, size=(size, size, 3))
    bg = base + blotch + stripes + noise
    return np.clip(np.rint(bg), BG_LOW, BG_HIGH).astype(np.uint8)


def _colour(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    c = rng.uniform(0, 255, size=3)
    # one channel far outside the background range, so object pixels never blend in
    k = int(rng.integers(3))
    c[k] = rng.uniform(230, 255) if rng.random() < 0.5 else rng.uniform(0, 20)
    return c, k


def _shape_mask(rng: np.random.Generator, shape: str, s: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    c = (s - 1) / 2
    theta = rng.uniform(0, 2 * math.pi)

    def rotated(points):
        cos, sin = math.cos(theta), math.sin(theta)
        return [(c + x * cos - y * sin, c + x * sin + y * cos) for x, y in points]

    r = (s - 1) / 2
    if shape == "circle":
        draw.ellipse([0, 0, s - 1, s - 1], fill=255)
    elif shape == "square":
        h = r / math.sqrt(2)
        draw.polygon(rotated([(-h, -h), (h, -h), (h, h), (-h, h)]), fill=255)
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
        draw.polygon(rotated(pts), fill=255)
    elif shape == "cross":
        a, b = r / math.sqrt(2) * 1.1, r * 0.22
        for pts in ([(-a, -b), (a, -b), (a, b), (-a, b)], [(-b, -a), (b, -a), (b, a), (-b, a)]):
            draw.polygon(rotated(pts), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(canvas) > 127


def _item_alpha(item: np.ndarray, s: int) -> np.ndarray:
    from PIL import Image

    alpha = np.asarray(Image.fromarray(item).resize((s, s), Image.BILINEAR), dtype=np.float64)
    alpha = alpha / 255.0
    # faint pixels are dropped entirely so every drawn pixel differs visibly from the background
    return np.where(alpha >= 0.3, alpha, 0.0)


def render_scene(
    rng: np.random.Generator,
    size: int = 128,
    max_objects: int = 4,
    object_size: tuple[int, int] = (16, 48),
    items: dict[int, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[SceneObject]]:
    """Render one image.

    Labels index :data:`SHAPES` first, then the ``items`` classes in sorted order.

    Returns:
        ``(image, background, objects)``: uint8 ``(size, size, 3)`` arrays with and without the
        objects, and the pasted objects with their exact boxes.
    """
    background = _background(rng, size)
    image = background.astype(np.float64)
    item_classes = sorted(items) if items else []
    num_classes = len(SHAPES) + len(item_classes)
    placed: list[tuple[int, int, int, int]] = []
    objects: list[SceneObject] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(num_classes))
        s = int(rng.integers(object_size[0], object_size[1] + 1))
        for _attempt in range(20):
            x, y = (int(v) for v in rng.integers(0, size - s + 1, size=2))
            if all(
                x >= bx2 + GAP or x + s + GAP <= bx1 or y >= by2 + GAP or y + s + GAP <= by1
                for bx1, by1, bx2, by2 in placed
            ):
                break
        else:
            continue
        colour, k = _colour(rng)
        if label < len(SHAPES):
            mask = _shape_mask(rng, SHAPES[label], s)
            alpha = mask.astype(np.float64)
            pixels = colour + rng.normal(0, 4, size=(s, s, 3))
            pixels[..., k] = colour[k]  # the distinguishing channel stays noise-free
        else:
            pool = items[item_classes[label - len(SHAPES)]]
            alpha = _item_alpha(pool[int(rng.integers(len(pool)))], s)
            if rng.random() < 0.5:
                alpha = alpha[:, ::-1]
            mask = alpha > 0
            pixels = np.broadcast_to(colour, (s, s, 3))
        if not mask.any():
            continue
        region = image[y : y + s, x : x + s]
        a = alpha[..., None]
        region[:] = np.where(mask[..., None], a * pixels + (1 - a) * region, region)
        ys, xs = np.nonzero(mask)
        box = (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
        placed.append((x, y, x + s, y + s))
        objects.append(SceneObject(label, box, int(mask.sum())))
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out, background, objects


def _write_split(
    root: str,
    split: str,
    count: int,
    rng: np.random.Generator,
    size: int,
    max_objects: int,
    object_size: tuple[int, int],
    items: dict[int, Any] | None,
    categories: list[dict[str, Any]],
) -> str:
    from PIL import Image

    folder = os.path.join(root, split)
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        image, _, objects = render_scene(rng, size, max_objects, object_size, items)
        name = f"{i:06d}.png"
        Image.fromarray(image).save(os.path.join(folder, name))
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": categories[obj.label]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": obj.area,
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {"description": f"eakd generated shapes ({split})", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    path = os.path.join(root, "annotations", f"instances_{split}.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


def make_shapes_dataset(
    root: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    max_objects: int = 4,
    object_size: tuple[int, int] = (16, 48),
    fashion_mnist: bool | str | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Generate the dataset under ``root`` in COCO format.

    Layout: ``root/train/*.png``, ``root/val/*.png``,
    ``root/annotations/instances_{train,val}.json``. Category ids are 1..K (shapes first).

    Args:
        fashion_mnist: ``None`` adds Fashion-MNIST items when :data:`FASHION_MNIST_DIR` exists;
            ``True`` requires them; ``False`` uses shapes only; a string is the IDX folder.
        seed: the generator's seed; the same arguments give the same files.

    Returns:
        Paths: ``train_images``, ``train_annotations``, ``val_images``, ``val_annotations``.
    """
    root = os.fspath(root)
    lo, hi = object_size
    if not 4 <= lo <= hi <= image_size:
        raise ValueError(
            f"object_size must satisfy 4 <= min <= max <= image_size, got {object_size}"
        )
    if num_train < 1 or num_val < 1 or max_objects < 1:
        raise ValueError("num_train, num_val and max_objects must be >= 1")
    folder = fashion_mnist if isinstance(fashion_mnist, str) else FASHION_MNIST_DIR
    use_items = os.path.isdir(folder) if fashion_mnist is None else bool(fashion_mnist)
    train_items = fashion_mnist_items(folder, "train") if use_items else None
    val_items = fashion_mnist_items(folder, "test") if use_items else None
    names = list(SHAPES)
    if use_items:
        names += [FASHION_CLASSES[c] for c in sorted(FASHION_CLASSES)]
    categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]
    rng = np.random.default_rng(seed)
    args = (image_size, max_objects, (lo, hi))
    train = _write_split(root, "train", num_train, rng, *args, train_items, categories)
    val = _write_split(root, "val", num_val, rng, *args, val_items, categories)
    return {
        "train_images": os.path.join(root, "train"),
        "train_annotations": train,
        "val_images": os.path.join(root, "val"),
        "val_annotations": val,
    }
