"""Detector construction over torchvision backbones, and checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from detection_helpers import batch, tiny_detector, tiny_model_config

from eakd.engines.detection import build_detector, load_detector_weights, num_detector_classes


@pytest.mark.parametrize(
    ("backbone", "changes", "levels"),
    [
        ("resnet18", {"returned_layers": [3, 4], "trainable_layers": 5}, 3),
        ("mobilenet_v2", {"backbone_kwargs": {"width_mult": 0.35}}, 3),
        ("mobilenet_v3_small", {}, 3),
    ],
)
def test_backbones_build_train_and_detect(backbone, changes, levels):
    torch.manual_seed(0)
    model = build_detector(tiny_model_config(backbone=backbone, **changes), num_classes=3)
    assert num_detector_classes(model) == 4
    images, targets = batch()
    feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert len(feats) == levels and all(f.shape[1] == 16 for f in feats.values())
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4


def test_frozen_layers_follow_trainable_layers():
    cfg = tiny_model_config(
        backbone="resnet18", returned_layers=[3, 4], trainable_layers=2, norm="frozen_bn"
    )
    model = build_detector(cfg, 3)
    trainable = {
        n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad
    }
    assert trainable == {"layer3", "layer4"}


def test_state_dict_keys_match_torchvision_fasterrcnn(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5)
    cfg = tiny_model_config(
        backbone="resnet50",
        returned_layers=None,
        anchor_sizes=None,
        fpn_channels=256,
        representation_size=1024,
        norm="bn",
        trainable_layers=3,
    )
    ours = build_detector(cfg, 4)
    assert set(ours.state_dict()) == set(reference.state_dict())
    # a torchvision-format file (BatchNorm) also loads into the FrozenBatchNorm variant
    path = tmp_path / "torchvision.pth"
    torch.save(reference.state_dict(), path)
    cfg.norm = "frozen_bn"
    frozen = build_detector(cfg, 4)
    load_detector_weights(frozen, path)
    key = "roi_heads.box_predictor.cls_score.weight"
    torch.testing.assert_close(frozen.state_dict()[key], reference.state_dict()[key])


def test_checkpoint_round_trip_with_prefixes(tmp_path):
    model = tiny_detector(seed=0)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    other = tiny_detector(seed=1)
    load_detector_weights(other, path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)


def test_checkpoint_errors_say_what_does_not_fit(tmp_path):
    path = tmp_path / "five.pt"
    torch.save(tiny_detector(num_classes=5).state_dict(), path)
    with pytest.raises(ValueError, match=r"predicts 6 classes .* but the model has 4"):
        load_detector_weights(tiny_detector(num_classes=3), path)
    wide = tmp_path / "wide.pt"
    torch.save({"model": tiny_detector(fpn_channels=24).state_dict()}, wide)
    with pytest.raises(ValueError, match=r"does not fit this detector"):
        load_detector_weights(tiny_detector(), wide)
    junk = tmp_path / "junk.pt"
    torch.save({"model": [1, 2]}, junk)
    with pytest.raises(ValueError, match=r"not a state dict|without a state dict"):
        load_detector_weights(tiny_detector(), junk)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint"):
        load_detector_weights(tiny_detector(), tmp_path / "absent.pt")


def test_bad_model_configs():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet19'"):
        build_detector(tiny_model_config(backbone="resnet19"), 3)
    with pytest.raises(ValueError, match=r"weights is not allowed"):
        build_detector(tiny_model_config(backbone_kwargs={"weights": "DEFAULT"}), 3)
    with pytest.raises(ValueError, match=r"anchor_sizes has 2 levels but"):
        build_detector(tiny_model_config(anchor_sizes=[[16], [32]]), 3)
    with pytest.raises(FileNotFoundError, match=r"teacher.checkpoint: no file"):
        tiny_model_config(checkpoint="/absent.pt").validate("teacher")
