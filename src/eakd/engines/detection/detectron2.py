"""Detectron2 model-zoo Faster R-CNN FPN weights in this engine's torchvision layout.

The paper's detection teachers (R101-FPN for R18/R50 students, R50-FPN for MobileNetV2) are
Detectron2 model-zoo files (``model_final_*.pkl``). They differ from torchvision's Faster R-CNN
in key names and in four conventions, each handled here or by a :class:`ModelConfig` switch:

* **Input.** Detectron2's MSRA backbones read BGR pixels in ``[0, 255]`` minus the per-channel
  mean ``(103.53, 116.28, 123.675)``, with std 1. That mean is exactly 255 x torchvision's
  ImageNet mean, so the student's normalised RGB input ``x_s = (x - m) / s`` relates to the
  teacher's by ``x_d2 = 255 s * x_s`` per channel (no offset): the conversion reverses the stem
  conv's input channels and scales them by ``255 s``, which is exact, zero padding included.
  The teacher then reads the student's preprocessed batch, as the distiller requires.
* **Stride placement.** MSRA ResNets put a stage's stride on the first bottleneck's 1x1 conv
  (``ModelConfig.stride_in_1x1: true``); torchvision puts it on the 3x3.
* **RoIAlign.** Detectron2's ``ROIAlignV2`` samples with the half-pixel offset and an
  adaptive grid, sampling ratio 0 (``ModelConfig.roi_align_aligned: true``).
* **Classes.** Detectron2 puts background last (index K) and has class-specific box deltas for
  the K object classes only; torchvision puts background first. The classifier rows are
  rotated and zero deltas are inserted for background. Detectron2 numbers COCO's categories
  in ascending id order, as this engine's ``contiguous_labels`` do.

What remains different: torchvision rounds its cell anchors to whole pixels (Detectron2 keeps
them fractional), and both resize images with slightly different interpolation, so the
converted teacher's detections match Detectron2's closely but not bit for bit.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import LevelMapper

__all__ = [
    "AlignedMultiScaleRoIAlign",
    "convert_detectron2_state",
    "is_detectron2_state",
    "read_detectron2_weights",
]

#: torchvision's ImageNet normalisation, which the students (and so the teacher) read.
IMAGENET_STD = (0.229, 0.224, 0.225)

_D2_PREFIX = "backbone.bottom_up."


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the model-zoo file format (a dict of numpy arrays) and nothing else: no other
    class is constructed, so a tampered file cannot run code."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a Detectron2 model-zoo file holds only "
                "numpy arrays"
            )
        return super().find_class(module, name)


def read_detectron2_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict of a Detectron2 checkpoint: a model-zoo ``.pkl`` (``{"model": {name:
    ndarray}}``, read without running pickled code) or a ``.pth`` saved by Detectron2's
    trainer (``{"model": state_dict}``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no Detectron2 checkpoint at {path!r}")
    if path.endswith(".pkl"):
        with open(path, "rb") as fh:
            data = _ArrayUnpickler(io.BufferedReader(fh), encoding="latin1").load()
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict (expected {{'model': {{name: array}}}})")
    return {k: torch.as_tensor(v) for k, v in state.items() if not isinstance(v, str)}


def is_detectron2_state(state: dict[str, Any]) -> bool:
    """Whether ``state`` uses Detectron2's Faster R-CNN key names."""
    return any(k.startswith(_D2_PREFIX) for k in state)


def _backbone_key(key: str) -> str | None:
    """``backbone.bottom_up.*`` (Detectron2 ResNet) -> ``backbone.body.*`` (torchvision)."""
    rest = key[len(_D2_PREFIX) :]
    m = re.fullmatch(r"stem\.conv1\.(weight|norm\.(\w+))", rest)
    if m:
        return "backbone.body." + ("conv1.weight" if m.group(2) is None else f"bn1.{m.group(2)}")
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv\d|shortcut)\.(weight|norm\.(\w+))", rest)
    if not m:
        return None
    stage, block, layer, _, norm = m.groups()
    base = f"backbone.body.layer{int(stage) - 1}.{block}."
    if layer == "shortcut":
        return base + ("downsample.0.weight" if norm is None else f"downsample.1.{norm}")
    j = layer[-1]
    return base + (f"conv{j}.weight" if norm is None else f"bn{j}.{norm}")


def _head_key(key: str) -> str | None:
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)\.(weight|bias)", key)
    if m:
        kind, level, p = m.groups()
        blocks = "inner_blocks" if kind == "lateral" else "layer_blocks"
        return f"backbone.fpn.{blocks}.{int(level) - 2}.0.{p}"
    rpn = {
        "conv": "rpn.head.conv.0.0",
        "objectness_logits": "rpn.head.cls_logits",
        "anchor_deltas": "rpn.head.bbox_pred",
    }
    m = re.fullmatch(r"proposal_generator\.rpn_head\.(\w+)\.(weight|bias)", key)
    if m and m.group(1) in rpn:
        return f"{rpn[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.box_head\.fc([12])\.(weight|bias)", key)
    if m:
        return f"roi_heads.box_head.fc{5 + int(m.group(1))}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", key)
    if m:
        return f"roi_heads.box_predictor.{m.group(1)}.{m.group(2)}"
    return None


def convert_detectron2_state(
    state: dict[str, Tensor], image_std: tuple[float, float, float] = IMAGENET_STD
) -> dict[str, Tensor]:
    """Detectron2 Faster R-CNN (ResNet FPN, ``StandardRPNHead``, two-FC box head) weights ->
    this engine's torchvision layout, for a model built with ``stride_in_1x1`` and
    ``roi_align_aligned`` and normalising with ``image_std`` (see the module docstring).

    Raises ``ValueError`` for keys it cannot place (another architecture, e.g. a Cascade or
    mask head), naming them.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in ("pixel_mean", "pixel_std") or key.endswith("num_batches_tracked"):
            continue
        new = _backbone_key(key) if key.startswith(_D2_PREFIX) else _head_key(key)
        if new is None:
            unknown.append(key)
            continue
        out[new] = value.float()
    if unknown:
        raise ValueError(
            f"{len(unknown)} Detectron2 keys have no place in a torchvision Faster R-CNN FPN "
            f"(first: {unknown[:5]}); only ResNet-FPN Faster R-CNN checkpoints convert"
        )
    stem = "backbone.body.conv1.weight"
    if stem not in out:
        raise ValueError("not a Detectron2 ResNet checkpoint: no backbone.bottom_up.stem.conv1")
    # BGR [0, 255] minus mean  ==  255 * std * (normalised RGB): reverse and scale the inputs
    scale = torch.tensor([255.0 * s for s in image_std]).view(1, 3, 1, 1)
    out[stem] = out[stem].flip(1) * scale
    cls_w, cls_b = (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
    )
    box_w, box_b = (
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
    )
    if cls_w in out:  # background last -> first
        out[cls_w] = torch.cat([out[cls_w][-1:], out[cls_w][:-1]])
        out[cls_b] = torch.cat([out[cls_b][-1:], out[cls_b][:-1]])
        k = out[cls_w].shape[0] - 1
        if box_w in out and out[box_w].shape[0] == 4 * k:  # no background deltas: add zeros
            out[box_w] = torch.cat([out[box_w].new_zeros(4, out[box_w].shape[1]), out[box_w]])
            out[box_b] = torch.cat([out[box_b].new_zeros(4), out[box_b]])
    return out


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """:class:`torchvision.ops.MultiScaleRoIAlign` with ``aligned=True`` (the half-pixel
    offset of Detectron2's ``ROIAlignV2``); levels are assigned as torchvision does
    (canonical box 224 px at level 4, Detectron2's rule)."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        feats = [v for k, v in x.items() if k in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            height = max(max(s[0] for s in image_shapes), 1)
            self.scales = [2.0 ** round(math.log2(f.shape[-2] / height)) for f in feats]
            self.map_levels = LevelMapper(
                int(-math.log2(self.scales[0])),
                int(-math.log2(self.scales[-1])),
                canonical_scale=self.canonical_scale,
                canonical_level=self.canonical_level,
            )
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)]
        )
        if len(feats) > 1:
            levels = self.map_levels(boxes)
        else:
            levels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], *self.output_size))
        for level, (feat, scale) in enumerate(zip(feats, self.scales, strict=True)):
            idx = torch.where(levels == level)[0]
            pooled = roi_align(
                feat,
                rois[idx],
                self.output_size,
                spatial_scale=scale,
                sampling_ratio=self.sampling_ratio,
                aligned=True,
            )
            out[idx] = pooled.to(out.dtype)
        return out
