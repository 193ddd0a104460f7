"""Faster R-CNN with FPN on any torchvision classification backbone, and checkpoint loading.

The detector is torchvision's :class:`~torchvision.models.detection.FasterRCNN` built around a
:class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`, so its ``state_dict``
keys are those of torchvision's own ``fasterrcnn_*_fpn`` models (``backbone.body.*``,
``backbone.fpn.*``, ``rpn.*``, ``roi_heads.box_head.fc6/fc7``, ``roi_heads.box_predictor.*``).
Nothing is downloaded: weights come only from local checkpoint paths.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "BACKBONES",
    "ModelConfig",
    "build_detector",
    "load_detector_weights",
    "num_detector_classes",
    "read_state_dict",
]

RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)
MOBILENETS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")
#: Backbone names accepted by :func:`build_detector` (torchvision classification models).
BACKBONES = RESNETS + MOBILENETS
NORMS = ("bn", "frozen_bn", "gn")


@dataclass
class ModelConfig:
    """A Faster R-CNN FPN detector. Defaults are torchvision's (COCO, 800-1333 px images).

    Attributes:
        backbone: a torchvision classifier name, one of :data:`BACKBONES`.
        backbone_kwargs: extra keywords for that constructor (e.g. ``width_mult`` for MobileNets).
        checkpoint: a full detector checkpoint (``{"model": state_dict}``, a raw state dict, or
            a trainer checkpoint with ``module.``/``student.`` prefixes). Required for a teacher.
        backbone_checkpoint: classification weights of the backbone (e.g. torchvision's
            ImageNet ``resnet18-*.pth``), loaded before the FPN is attached.
        norm: ``bn`` (trainable BatchNorm, for training from scratch), ``frozen_bn``
            (torchvision's and Detectron2's choice with pretrained backbones) or ``gn``.
        trainable_layers: backbone stages left trainable (ResNet: 0-5; MobileNet: 0-#stages).
        returned_layers: backbone stages fed to the FPN (ResNet: 1-4; MobileNet: stage
            indices); ``None`` means torchvision's default.
        fpn_channels: FPN width (256 in the paper's setting).
        anchor_sizes: one list of anchor sizes per FPN level (``None``: torchvision's default).
        min_size, max_size: the resize of :class:`GeneralizedRCNNTransform`; several
            ``min_size`` values give multi-scale training (one drawn per batch).
        representation_size: width of the two-FC box head.
        stride_in_1x1: MSRA-style ResNet bottlenecks (Detectron2's model-zoo backbones): a
            stage's stride on the first block's 1x1 conv instead of its 3x3.
        roi_align_aligned: RoIAlign with the half-pixel offset and an adaptive sampling grid
            (Detectron2's ``ROIAlignV2`` box pooler, ``POOLER_SAMPLING_RATIO: 0``).
            Both are needed for a Detectron2 model-zoo ``checkpoint`` (``model_final_*.pkl``),
            which is converted on load (see :mod:`eakd.engines.detection.detectron2`).
    """

    backbone: str = "resnet50"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    backbone_checkpoint: str | None = None
    norm: str = "bn"
    trainable_layers: int | None = None
    returned_layers: list[int] | None = None
    fpn_channels: int = 256
    anchor_sizes: list[list[int]] | None = None
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    representation_size: int = 1024
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    stride_in_1x1: bool = False
    roi_align_aligned: bool = False

    def validate(self, what: str = "model", check_files: bool = True) -> None:
        """Raise ``ValueError`` naming the field for a value that cannot build a detector
        (``FileNotFoundError`` for a checkpoint path that does not exist)."""
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"{what}.backbone: unknown backbone {self.backbone!r}; "
                f"valid: {', '.join(BACKBONES)}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"{what}.norm must be one of {NORMS}, got {self.norm!r}")
        if not self.min_size or any(s <= 0 for s in self.min_size) or self.max_size <= 0:
            raise ValueError(f"{what}.min_size / max_size must be positive sizes")
        if self.fpn_channels <= 0 or self.representation_size <= 0:
            raise ValueError(f"{what}.fpn_channels and representation_size must be positive")
        if not 0 < self.box_positive_fraction <= 1:
            raise ValueError(f"{what}.box_positive_fraction must be in (0, 1]")
        for name in ("checkpoint", "backbone_checkpoint"):
            path = getattr(self, name)
            if check_files and path is not None and not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{what}.{name}: no file at {path!r}; give the path of a local checkpoint "
                    "(weights are never downloaded)"
                )


def _norm_layer(norm: str):
    from torchvision.ops.misc import FrozenBatchNorm2d

    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    # 32 groups where the width allows (ResNets), fewer for MobileNet's narrow stages
    return lambda c: nn.GroupNorm(math.gcd(32, c), c)


def _classifier(cfg: ModelConfig) -> nn.Module:
    import torchvision

    kwargs = dict(cfg.backbone_kwargs)
    if "weights" in kwargs:
        raise ValueError(
            "backbone_kwargs.weights is not allowed (nothing is downloaded); give local weights "
            "with backbone_checkpoint"
        )
    ctor = getattr(torchvision.models, cfg.backbone)
    try:
        net = ctor(weights=None, norm_layer=_norm_layer(cfg.norm), **kwargs)
    except TypeError as exc:
        raise TypeError(f"backbone_kwargs {kwargs} do not fit {cfg.backbone}: {exc}") from None
    if cfg.backbone_checkpoint is not None:
        state = _strip_prefixes(read_state_dict(cfg.backbone_checkpoint))
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensor shapes differ
            raise ValueError(
                f"{cfg.backbone_checkpoint} does not fit {cfg.backbone}: {exc}"
            ) from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"{cfg.backbone_checkpoint} is not a {cfg.backbone} classification checkpoint: "
                f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
    return net


def _resnet_fpn(cfg: ModelConfig, net: nn.Module):
    trainable = 3 if cfg.trainable_layers is None else cfg.trainable_layers
    if not 0 <= trainable <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5] for {cfg.backbone}, got {trainable}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        train.append("bn1")
    for name, p in net.named_parameters():
        if not any(name.startswith(t) for t in train):
            p.requires_grad_(False)
    returned = cfg.returned_layers or [1, 2, 3, 4]
    if min(returned) < 1 or max(returned) > 4:
        raise ValueError(f"returned_layers must be in [1, 4] for {cfg.backbone}, got {returned}")
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned)}
    width = net.inplanes // 8  # channels of layer1's output for this family
    in_channels = [width * 2 ** (k - 1) for k in returned]
    return net, return_layers, in_channels


def _mobilenet_fpn(cfg: ModelConfig, net: nn.Module):
    features = net.features
    # the strided blocks start the stages; the first and last blocks close them
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
    stages.append(len(features) - 1)
    n = len(stages)
    trainable = 3 if cfg.trainable_layers is None else cfg.trainable_layers
    if not 0 <= trainable <= n:
        raise ValueError(f"trainable_layers must be in [0, {n}] for {cfg.backbone}")
    freeze_before = len(features) if trainable == 0 else stages[n - trainable]
    for block in features[:freeze_before]:
        for p in block.parameters():
            p.requires_grad_(False)
    returned = cfg.returned_layers or [n - 2, n - 1]
    if min(returned) < 0 or max(returned) >= n:
        raise ValueError(f"returned_layers must be in [0, {n - 1}] for {cfg.backbone}")
    return_layers = {str(stages[k]): str(i) for i, k in enumerate(returned)}
    in_channels = [features[stages[k]].out_channels for k in returned]
    return features, return_layers, in_channels


def build_detector(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build an untrained (or checkpoint-initialised) Faster R-CNN FPN detector.

    Args:
        cfg: the architecture (see :class:`ModelConfig`).
        num_classes: object classes ``K``, without background; the box predictor has ``K + 1``
            outputs with background at index 0 (torchvision's convention).

    Returns:
        A :class:`torchvision.models.detection.FasterRCNN`. ``cfg.checkpoint``, when given, is
        loaded strictly (see :func:`load_detector_weights`).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    cfg.validate()
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (without background), got {num_classes}")
    net = _classifier(cfg)
    if cfg.stride_in_1x1:
        _move_stride_to_1x1(net, cfg.backbone)
    if cfg.backbone in RESNETS:
        body, return_layers, in_channels = _resnet_fpn(cfg, net)
        default_anchors = [[32], [64], [128], [256], [512]]
    else:
        body, return_layers, in_channels = _mobilenet_fpn(cfg, net)
        default_anchors = [[32, 64, 128, 256, 512]] * (len(return_layers) + 1)
    backbone = BackboneWithFPN(
        body, return_layers, in_channels, cfg.fpn_channels, extra_blocks=LastLevelMaxPool()
    )
    levels = len(return_layers) + 1  # + the max-pooled extra level
    anchors = cfg.anchor_sizes or default_anchors
    if len(anchors) != levels:
        raise ValueError(
            f"anchor_sizes has {len(anchors)} levels but the {cfg.backbone} FPN has {levels} "
            f"(returned layers + 1 pooled level); give one list of sizes per level"
        )
    ratios = tuple(float(r) for r in cfg.aspect_ratios)
    generator = AnchorGenerator(tuple(tuple(a) for a in anchors), (ratios,) * levels)
    resolution = 7  # RoIAlign 7x7, as in the paper's Detectron2 setting
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=tuple(cfg.min_size),
        max_size=cfg.max_size,
        rpn_anchor_generator=generator,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_head=TwoMLPHead(cfg.fpn_channels * resolution**2, cfg.representation_size),
        box_predictor=FastRCNNPredictor(cfg.representation_size, num_classes + 1),
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_positive_fraction=cfg.box_positive_fraction,
    )
    if cfg.roi_align_aligned:
        from .detectron2 import AlignedMultiScaleRoIAlign

        # Detectron2's box pooler: ROIAlignV2 with an adaptive sampling grid (ratio 0)
        pool = model.roi_heads.box_roi_pool
        model.roi_heads.box_roi_pool = AlignedMultiScaleRoIAlign(
            pool.featmap_names, pool.output_size, sampling_ratio=0
        )
    if cfg.checkpoint is not None:
        load_detector_weights(model, cfg.checkpoint)
    return model


def _move_stride_to_1x1(net: nn.Module, name: str) -> None:
    """MSRA-style bottlenecks: the stride of each stage's first block on its 1x1 conv."""
    layers = [getattr(net, f"layer{k}", None) for k in (2, 3, 4)]
    if name not in RESNETS or any(
        layer is None or not hasattr(layer[0], "conv3") for layer in layers
    ):
        raise ValueError(
            f"stride_in_1x1 applies to bottleneck ResNets (resnet50/101/152, resnext, "
            f"wide_resnet), not {name}"
        )
    for layer in layers:
        block = layer[0]
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def num_detector_classes(model: nn.Module) -> int:
    """Outputs of the box classifier (object classes + background)."""
    return int(model.roi_heads.box_predictor.cls_score.out_features)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: ``{"model": sd}``, ``{"state_dict": sd}``, a raw state dict
    (read as :func:`eakd.models.read_state_dict` reads classification checkpoints)."""
    from ...models.checkpoint import read_state_dict as read

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {os.fspath(path)!r}")
    return read(path)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "student.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_detector_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a detector checkpoint strictly, with errors that say what does not fit.

    Accepts the formats of :func:`read_state_dict` and the ``module.``/``student.`` prefixes of
    trainer checkpoints. BatchNorm's ``num_batches_tracked`` may be absent (FrozenBatchNorm
    checkpoints). A box predictor of another class count raises ``ValueError`` naming both counts.
    """
    state = _detectron2_or_plain(model, path)
    key = "roi_heads.box_predictor.cls_score.weight"
    if key in state:
        have, want = state[key].shape[0], num_detector_classes(model)
        if have != want:
            raise ValueError(
                f"{path} predicts {have} classes (incl. background) but the model has {want}: "
                "the checkpoint was trained on a dataset with another class count"
            )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes differ
        raise ValueError(
            f"{path} does not fit this detector: {exc}; check the backbone name, "
            "fpn_channels, representation_size and returned_layers"
        ) from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this detector ({len(missing)} missing, {len(unexpected)} "
            f"unexpected keys; first missing {missing[:5]}, first unexpected {unexpected[:5]}): "
            "check the backbone name, fpn_channels, representation_size and returned_layers"
        )


def _detectron2_or_plain(model: nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict in this engine's layout: Detectron2 files (a model-zoo
    ``.pkl``, or Detectron2 key names) are converted, after checking that ``model`` was built
    with Detectron2's conventions."""
    from . import detectron2

    if os.fspath(path).endswith(".pkl"):
        state = detectron2.read_detectron2_weights(path)
    else:
        state = _strip_prefixes(read_state_dict(path))
    if not detectron2.is_detectron2_state(state):
        return state
    body = model.backbone.body
    block = getattr(body, "layer2", [None])[0]
    aligned = isinstance(model.roi_heads.box_roi_pool, detectron2.AlignedMultiScaleRoIAlign)
    msra = block is not None and hasattr(block, "conv3") and block.conv1.stride == (2, 2)
    if not (aligned and msra):
        raise ValueError(
            f"{path} is a Detectron2 checkpoint: build this model with stride_in_1x1: true and "
            "roi_align_aligned: true (Detectron2's MSRA ResNet and ROIAlignV2) to load it"
        )
    return detectron2.convert_detectron2_state(state, tuple(model.transform.image_std))
