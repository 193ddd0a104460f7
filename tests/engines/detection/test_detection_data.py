"""The generated dataset, the COCO loader's validation, and COCO mAP round trips."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from eakd.engines.detection import (
    CocoDetection,
    coco_evaluate,
    collate_detection,
    detections_to_coco,
    make_shapes_dataset,
    render_scene,
)
from eakd.engines.detection.synthetic import BG_HIGH, BG_LOW, SHAPES


def fake_items():
    """Fashion-MNIST-like 28x28 grey items (a filled ellipse and a bar) for two classes."""
    yy, xx = np.mgrid[0:28, 0:28]
    ellipse = (((xx - 14) / 10) ** 2 + ((yy - 14) / 6) ** 2 <= 1) * 220
    bar = ((abs(xx - 14) <= 3) & (yy >= 2) & (yy <= 25)) * 180
    return {1: ellipse.astype(np.uint8)[None], 5: bar.astype(np.uint8)[None]}


@pytest.mark.parametrize("items", [None, "fake"])
def test_generated_boxes_are_the_exact_extent_of_the_drawn_pixels(items):
    rng = np.random.default_rng(0)
    pool = fake_items() if items else None
    labels = set()
    for _ in range(40):
        image, background, objects = render_scene(rng, 64, 4, (10, 28), pool)
        assert background.min() >= BG_LOW and background.max() <= BG_HIGH
        drawn = (image != background).any(-1)
        inside = np.zeros_like(drawn)
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            region = drawn[y1:y2, x1:x2]
            # every edge row/column of the box holds a drawn pixel: the box is tight
            assert region[0].any() and region[-1].any()
            assert region[:, 0].any() and region[:, -1].any()
            assert obj.area == int(region.sum())
            inside[y1:y2, x1:x2] = True
            labels.add(obj.label)
        assert not (drawn & ~inside).any(), "pixels drawn outside every box"
    expected = len(SHAPES) + (2 if items else 0)
    assert labels == set(range(expected))


def test_boxes_of_different_objects_never_overlap():
    rng = np.random.default_rng(1)
    for _ in range(30):
        _, _, objects = render_scene(rng, 64, 6, (10, 24))
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                assert (
                    a.box[2] <= b.box[0]
                    or b.box[2] <= a.box[0]
                    or a.box[3] <= b.box[1]
                    or b.box[3] <= a.box[1]
                )


def test_the_written_dataset_loads_back_with_the_same_boxes(shapes, tmp_path):
    ds = CocoDetection(shapes["val_images"], shapes["val_annotations"])
    coco = json.load(open(shapes["val_annotations"]))
    assert len(ds) == 8 and ds.num_classes == len(SHAPES) and ds.class_names == list(SHAPES)
    image, target = ds[0]
    assert (
        image.shape == (3, 64, 64)
        and image.dtype == torch.float32
        and 0 <= image.min() <= image.max() <= 1
    )
    anns = [a for a in coco["annotations"] if a["image_id"] == target["image_id"]]
    xyxy = torch.tensor(
        [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(target["boxes"], xyxy)
    # same seed, same files
    again = make_shapes_dataset(tmp_path, 16, 8, 64, object_size=(12, 28), fashion_mnist=False)
    assert json.load(open(again["val_annotations"])) == coco


def test_category_ids_map_to_contiguous_labels_and_back(shapes, tmp_path):
    data = json.load(open(shapes["val_annotations"]))
    old_to_new = {1: 3, 2: 7, 3: 11, 4: 90}
    for c in data["categories"]:
        c["id"] = old_to_new[c["id"]]
    for a in data["annotations"]:
        a["category_id"] = old_to_new[a["category_id"]]
    ds = CocoDetection(shapes["val_images"], data)
    assert ds.label_to_category == [0, 3, 7, 11, 90]
    _, target = ds[0]
    cats = {a["category_id"] for a in data["annotations"] if a["image_id"] == target["image_id"]}
    assert {ds.label_to_category[int(v)] for v in target["labels"]} == cats


def test_horizontal_flip_moves_the_boxes_with_the_pixels(shapes):
    plain = CocoDetection(shapes["train_images"], shapes["train_annotations"])
    flipped = CocoDetection(
        shapes["train_images"], shapes["train_annotations"], train=True, hflip=1.0
    )
    (im, t), (fim, ft) = plain[0], flipped[0]
    torch.testing.assert_close(fim, im.flip(-1))
    expected = t["boxes"].clone()
    expected[:, [0, 2]] = 64 - t["boxes"][:, [2, 0]]
    torch.testing.assert_close(ft["boxes"], expected)
    # flips are a function of (seed, epoch, index): repeatable, and they vary
    half = CocoDetection(shapes["train_images"], shapes["train_annotations"], train=True, hflip=0.5)
    draws = [torch.equal(half[i][0], plain[i][0]) for i in range(len(half))]
    assert draws == [torch.equal(half[i][0], plain[i][0]) for i in range(len(half))]
    assert 0 < sum(draws) < len(draws)


def test_perfect_predictions_score_ap_100_and_worse_ones_less(shapes):
    ds = CocoDetection(shapes["val_images"], shapes["val_annotations"])
    images, targets = collate_detection([ds[i] for i in range(len(ds))])
    assert len(images) == len(targets) == len(ds)
    outputs = [
        {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
        for t in targets
    ]
    ids = [t["image_id"] for t in targets]
    perfect = coco_evaluate(ds.coco, detections_to_coco(outputs, ids, ds.label_to_category))
    assert perfect["AP"] == pytest.approx(100.0) and perfect["AP50"] == pytest.approx(100.0)
    assert perfect["AP75"] == pytest.approx(100.0)
    shifted = [{**o, "boxes": o["boxes"] + 4.0} for o in outputs]
    worse = coco_evaluate(ds.coco, detections_to_coco(shifted, ids, ds.label_to_category))
    assert worse["AP"] < 90.0
    assert coco_evaluate(ds.coco, [])["AP"] == 0.0


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def broken(shapes, tmp_path):
    """A writable copy of the val split, and a function writing a modified annotation file."""
    images = tmp_path / "images"
    shutil.copytree(shapes["val_images"], images)
    data = json.load(open(shapes["val_annotations"]))

    def write(change) -> str:
        d = json.loads(json.dumps(data))
        change(d)
        path = tmp_path / "instances_bad.json"
        path.write_text(json.dumps(d))
        return str(path)

    return str(images), write


def test_box_outside_the_image_names_the_entry(broken):
    images, write = broken

    def change(d):
        d["annotations"][2]["bbox"] = [50, 10, 30, 20]

    path = write(change)
    with pytest.raises(
        ValueError, match=r"instances_bad\.json: annotations\[2\] \(id 3\).*outside its image"
    ) as e:
        CocoDetection(images, path)
    assert "64x64" in str(e.value)


def test_box_within_tolerance_is_clipped(broken):
    images, write = broken

    def change(d):
        d["annotations"][0]["bbox"] = [-0.5, 0, 10, 64.5]

    ds = CocoDetection(images, write(change))
    boxes = torch.cat([ds[i][1]["boxes"] for i in range(len(ds))])
    assert boxes.min() >= 0 and boxes.max() <= 64


def test_unknown_category_id_names_the_entry(broken):
    images, write = broken

    def change(d):
        d["annotations"][1]["category_id"] = 77

    with pytest.raises(ValueError, match=r"annotations\[1\] \(id 2\): unknown category_id 77"):
        CocoDetection(images, write(change))


def test_missing_image_names_the_file(broken):
    images, write = broken
    path = write(lambda d: None)
    os.remove(os.path.join(images, "000003.png"))
    with pytest.raises(FileNotFoundError, match=r"images\[3\] \(id 4\).*000003\.png.* is missing"):
        CocoDetection(images, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["annotations"][0].update(image_id=999), "unknown image_id 999"),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            r"bbox must be \[x, y, width, height\]",
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "negative width or height"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] has no 'file_name' field"),
        (lambda d: d.pop("categories"), "missing the list 'categories'"),
        (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears twice"),
    ],
)
def test_malformed_annotation_files(broken, change, message):
    images, write = broken
    with pytest.raises(ValueError, match=message):
        CocoDetection(images, write(change))


def test_missing_paths_name_the_layout(shapes, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"annotation file .* not found; expected a COCO-format layout"
    ):
        CocoDetection(shapes["val_images"], tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=r"image folder .* not found"):
        CocoDetection(tmp_path / "nope", shapes["val_annotations"])


def test_image_size_disagreeing_with_the_annotation_is_an_error(broken):
    images, write = broken

    def change(d):
        d["images"][0]["width"] = 80
        d["images"][0]["height"] = 80

    ds = CocoDetection(images, write(change))
    with pytest.raises(ValueError, match=r"000000.png is 64x64 .* says 80x80"):
        ds[0]
