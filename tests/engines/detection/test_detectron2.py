"""Detectron2 model-zoo weights: the file reader, the key and convention conversion, the MSRA
stride placement and the aligned RoIAlign."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from eakd.engines.detection import ModelConfig, build_detector
from eakd.engines.detection.detectron2 import (
    IMAGENET_STD,
    AlignedMultiScaleRoIAlign,
    convert_detectron2_state,
    read_detectron2_weights,
)

D2_MEAN_BGR = (103.53, 116.28, 123.675)  # Detectron2's MSRA pixel mean (std 1), BGR order


def msra_config(**changes) -> ModelConfig:
    base = {
        "backbone": "resnet50",
        "norm": "frozen_bn",
        "stride_in_1x1": True,
        "roi_align_aligned": True,
        "fpn_channels": 32,
        "representation_size": 64,
        "min_size": [96],
        "max_size": 96,
        "rpn_pre_nms_top_n_test": 60,
        "rpn_post_nms_top_n_test": 30,
        "box_score_thresh": 0.0,
    }
    return ModelConfig(**{**base, **changes})


def to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Write a torchvision-layout state in Detectron2's names and conventions, from
    Detectron2's documented layout (the inverse of the conversion under test)."""
    out = {}
    for key, value in state.items():
        v = value.detach().clone()
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("backbone.body."):
            rest = key[len("backbone.body.") :]
            if rest.startswith("conv1."):
                name = "stem.conv1.weight"
                std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
                v = (v / (255.0 * std)).flip(1)  # RGB, normalised -> BGR, [0, 255]
            elif rest.startswith("bn1."):
                name = "stem.conv1.norm." + rest[4:]
            else:
                layer, block, part, param = rest.split(".", 3)
                stage = int(layer[-1]) + 1
                if part == "downsample":
                    idx, param = param.split(".", 1)
                    sub = "shortcut" if idx == "0" else "shortcut.norm"
                else:
                    sub = part.replace("bn", "conv") + ".norm" if part.startswith("bn") else part
                name = f"res{stage}.{block}.{sub}.{param}"
            out["backbone.bottom_up." + name] = v
        elif key.startswith("backbone.fpn."):
            _, _, blocks, level, _, param = key.split(".")
            kind = "lateral" if blocks == "inner_blocks" else "output"
            out[f"backbone.fpn_{kind}{int(level) + 2}.{param}"] = v
        elif key.startswith("rpn.head."):
            names = {
                "conv": "conv",
                "cls_logits": "objectness_logits",
                "bbox_pred": "anchor_deltas",
            }
            part = key.split(".")[2]
            out[f"proposal_generator.rpn_head.{names[part]}.{key.rsplit('.', 1)[1]}"] = v
        elif key.startswith("roi_heads.box_head.fc"):
            fc, param = key.split(".")[2:]
            out[f"roi_heads.box_head.fc{int(fc[2:]) - 5}.{param}"] = v
        elif key.startswith("roi_heads.box_predictor.cls_score"):
            out[key] = torch.cat([v[1:], v[:1]])  # background last
        elif key.startswith("roi_heads.box_predictor.bbox_pred"):
            out[key] = v[4:]  # no background deltas
        else:
            raise AssertionError(key)
    return {k: v.numpy() for k, v in out.items()}


def write_zoo_file(path, state) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"model": to_detectron2(state), "__author__": "Detectron2 Model Zoo"}, fh)


@pytest.fixture(scope="module")
def msra_teacher():
    torch.manual_seed(0)
    model = build_detector(msra_config(), num_classes=3).eval()
    with torch.no_grad():  # background box deltas do not exist in Detectron2: make them 0
        model.roi_heads.box_predictor.bbox_pred.weight[:4].zero_()
        model.roi_heads.box_predictor.bbox_pred.bias[:4].zero_()
    return model


def test_zoo_file_converts_to_the_same_detector(msra_teacher, tmp_path):
    path = tmp_path / "model_final_test.pkl"
    write_zoo_file(path, msra_teacher.state_dict())
    torch.manual_seed(1)
    loaded = build_detector(msra_config(checkpoint=str(path)), num_classes=3).eval()
    for key, value in msra_teacher.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=1e-6, atol=1e-6)
    images = [torch.rand(3, 96, 80, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        a, b = msra_teacher(images)[0], loaded(images)[0]
    torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)


def test_stem_conversion_reads_normalised_rgb_exactly():
    """conv(W_d2, BGR*255 - mean) == conv(converted W, (RGB - m) / s), padding included."""
    torch.manual_seed(3)
    w_d2 = torch.randn(8, 3, 7, 7)
    rgb = torch.rand(1, 3, 20, 20)
    bgr255 = rgb.flip(1) * 255 - torch.tensor(D2_MEAN_BGR).view(1, 3, 1, 1)
    m = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    state = {"backbone.bottom_up.stem.conv1.weight": w_d2}
    w = convert_detectron2_state(state)["backbone.body.conv1.weight"]
    ref = torch.nn.functional.conv2d(bgr255.double(), w_d2.double(), stride=2, padding=3)
    ours = torch.nn.functional.conv2d(((rgb - m) / s).double(), w.double(), stride=2, padding=3)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-3)


def test_classes_rotate_background_to_the_front():
    state = {
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(4, 3, 7, 7),
        "roi_heads.box_predictor.cls_score.weight": torch.arange(3.0).view(3, 1),
        "roi_heads.box_predictor.cls_score.bias": torch.tensor([10.0, 11.0, 12.0]),
        "roi_heads.box_predictor.bbox_pred.weight": torch.ones(8, 1),
        "roi_heads.box_predictor.bbox_pred.bias": torch.ones(8),
    }
    out = convert_detectron2_state(state)
    assert out["roi_heads.box_predictor.cls_score.bias"].tolist() == [12.0, 10.0, 11.0]
    assert out["roi_heads.box_predictor.bbox_pred.bias"].tolist() == [0] * 4 + [1] * 8


def test_msra_stride_sits_on_the_1x1_conv():
    torch.manual_seed(0)
    model = build_detector(msra_config(roi_align_aligned=False), num_classes=2)
    body = model.backbone.body
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(body, name)[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    feats = model.backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats.values()] == [16, 8, 4, 2, 1]
    with pytest.raises(ValueError, match="bottleneck ResNets .* not resnet18"):
        build_detector(msra_config(backbone="resnet18"), num_classes=2)


def test_aligned_pooler_levels_match_torchvision_and_offset_is_half_pixel():
    g = torch.Generator().manual_seed(4)
    feats = {str(i): torch.rand(2, 4, 64 // 2**i, 64 // 2**i, generator=g) for i in range(4)}
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0], [0.0, 0.0, 250.0, 250.0]]),
             torch.tensor([[5.0, 5.0, 9.0, 12.0]])]  # fmt: skip
    shapes = [(256, 256), (256, 256)]
    names = ["0", "1", "2", "3"]
    ours = AlignedMultiScaleRoIAlign(names, 7, 2)
    theirs = MultiScaleRoIAlign(names, 7, 2)
    out = ours(feats, boxes, shapes)
    ref_unaligned = theirs(feats, boxes, shapes)
    assert theirs.scales == ours.scales
    levels = theirs.map_levels(boxes)
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
    for r in range(len(rois)):
        lvl = int(levels[r])
        feat, scale = feats[names[lvl]], theirs.scales[lvl]
        expect = roi_align(feat, rois[r : r + 1], 7, scale, 2, aligned=True)
        torch.testing.assert_close(out[r : r + 1], expect)
        unaligned = roi_align(feat, rois[r : r + 1], 7, scale, 2, aligned=False)
        torch.testing.assert_close(ref_unaligned[r : r + 1], unaligned)
    assert not torch.allclose(out, ref_unaligned)


def test_detectron2_checkpoint_needs_the_detectron2_conventions(msra_teacher, tmp_path):
    path = tmp_path / "model_final_test.pkl"
    write_zoo_file(path, msra_teacher.state_dict())
    cfg = msra_config(checkpoint=str(path), roi_align_aligned=False)
    with pytest.raises(ValueError, match="stride_in_1x1: true and roi_align_aligned: true"):
        build_detector(cfg, num_classes=3)


def test_reader_refuses_code_in_the_pickle(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"x": Boom()}}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        read_detectron2_weights(path)
    with pytest.raises(FileNotFoundError, match="no Detectron2 checkpoint"):
        read_detectron2_weights(tmp_path / "missing.pkl")


def test_unknown_detectron2_keys_are_named():
    state = {
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(4, 3, 7, 7),
        "roi_heads.mask_head.mask_fcn1.weight": torch.zeros(1),
    }
    with pytest.raises(ValueError, match="mask_head.mask_fcn1.weight"):
        convert_detectron2_state(state)
