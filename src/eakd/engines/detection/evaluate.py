"""COCO box mAP with ``pycocotools`` (AP at IoU 0.50:0.95, AP50, AP75, APs/m/l)."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["METRICS", "coco_evaluate", "detections_to_coco", "predict"]

#: The first six numbers of ``COCOeval.stats`` for boxes, in percent.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError(
            "COCO evaluation needs pycocotools: pip install pycocotools "
            "(or pip install 'eakd[detection]')"
        ) from None
    return COCO, COCOeval


def detections_to_coco(
    outputs: Iterable[dict[str, torch.Tensor]],
    image_ids: Iterable[int],
    label_to_category: list[int],
) -> list[dict[str, Any]]:
    """torchvision detections (x1, y1, x2, y2; labels 1..K) -> COCO result entries (xywh)."""
    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for box, score, label in zip(
            xywh, out["scores"].tolist(), out["labels"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_category[int(label)]),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(float(score), 5),
                }
            )
    return results


def coco_evaluate(
    ground_truth: dict[str, Any], results: list[dict[str, Any]], image_ids: list[int] | None = None
) -> dict[str, float]:
    """Box mAP of ``results`` against a parsed COCO annotation dict.

    Args:
        ground_truth: the ``instances_*.json`` content (as :class:`CocoDetection.coco` holds it).
        results: COCO result entries ``{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}``.
        image_ids: restrict the evaluation to these images (default: all of the file's).

    Returns:
        :data:`METRICS` in percent (``AP`` is COCO's AP@[.50:.95]); all zero when there are no
        detections.
    """
    COCO, COCOeval = _pycocotools()
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    data = dict(ground_truth)
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where a size range has no ground truth; keep those as -100 -> nan
    return {
        name: (100.0 * float(v) if v >= 0 else float("nan"))
        for name, v in zip(METRICS, ev.stats[:6], strict=True)
    }


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: Iterable,
    device: torch.device,
    label_to_category: list[int],
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Run a detector in eval mode over ``loader`` (batches of ``(images, targets)``) and return
    COCO result entries. ``targets[i]["image_id"]`` identifies each image."""
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    try:
        for images, targets in loader:
            outputs = model([im.to(device, non_blocking=True) for im in images])
            ids = [int(t["image_id"]) for t in targets]
            results.extend(detections_to_coco(outputs, ids, label_to_category))
            if progress is not None:
                progress.update(1)
    finally:
        model.train(was_training)
    return results
