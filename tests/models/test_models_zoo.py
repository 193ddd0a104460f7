"""Every registered model through the same contract tests, plus the reference layouts."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eakd.models import (
    MDISTILLER_IMAGENET_NAMES,
    MODELS,
    FeatureModel,
    build_model,
    list_models,
    model_family,
)

NUM_CLASSES = 7
# The zoo's own models (other test modules may register models of their own).
ALL = [n for n in list_models() if MODELS.get(n).__module__.startswith("eakd.models.")]

# Names of mdistiller's / EA-KD's CIFAR model dict (teachers and students).
MDISTILLER_CIFAR = [
    "resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13", "wrn_28_4",
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet8x4", "ResNet18",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "vgg8", "vgg11", "vgg16", "vgg19", "MobileNetV2",
    "ShuffleV1", "ShuffleV2",
]  # fmt: skip


@functools.cache
def built(name: str) -> FeatureModel:
    torch.manual_seed(0)
    extra = {"dropout": 0.0} if name == "imagenet_mobilenet_v2" else {}
    return build_model(name, num_classes=NUM_CLASSES, **extra)


# Small inputs keep the deep models cheap; the stage sizes scale with the input.
INPUT = {"ResNet34": 16, "ResNet101": 16}


def input_size(name: str) -> int:
    return INPUT.get(name, 32)


def expected_sizes(name: str) -> list[int]:
    """Spatial size of each feats entry (the stage strides of each family)."""
    strides = {
        "imagenet_": [2, 4, 8, 16, 32],
        "resnet": [1, 1, 2, 4],
        "wrn": [1, 1, 2, 4],
        "ResNet": [1, 1, 2, 4, 8],
        "vgg": [1, 2, 4, 8, 8],
        "MobileNetV2": [2, 2, 4, 8, 16],
        "Shuffle": [1, 2, 4, 8],
    }
    prefix = next(p for p in strides if name.startswith(p))
    return [input_size(name) // s for s in strides[prefix]]


def test_registry_holds_the_reference_names():
    assert set(MDISTILLER_CIFAR) <= set(list_models("cifar"))
    assert set(MDISTILLER_IMAGENET_NAMES.values()) == set(list_models("imagenet"))
    assert sorted(list_models("cifar") + list_models("imagenet") + list_models("demo")) == (
        list_models()
    )
    assert set(list_models("demo")) == {f"cnn{d}d_w{w}" for d in (1, 2) for w in (4, 8, 16)}
    assert len(ALL) == 33


def test_registry_errors():
    with pytest.raises(ValueError, match="did you mean 'resnet8x4'"):
        build_model("resnet8x5")
    with pytest.raises(TypeError, match=r"unknown keyword 'widen'.*num_classes"):
        build_model("resnet8", widen=2)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("resnet8", num_classes=0)
    with pytest.raises(ValueError, match="unknown model family 'tiny'"):
        list_models("tiny")
    with pytest.raises(TypeError, match="must be a string"):
        build_model(3)


def test_default_class_counts_and_alias():
    assert build_model("resnet8").num_classes == 100
    assert build_model("imagenet_mobilenet_v2", width_mult=0.35).num_classes == 1000
    alias = build_model("mobile_half", num_classes=10)
    assert type(alias).__name__ == "MobileNetV2" and alias.num_classes == 10
    assert model_family("mobile_half") == "cifar" and model_family("timm:resnet18") == "external"


RELU_STAGES = ("resnet", "ResNet", "vgg", "Shuffle", "imagenet_resnet")
LINEAR_STAGES = ("MobileNetV2", "imagenet_mobilenet_v2")


@pytest.mark.parametrize("name", ALL)
def test_forward_contract(name):
    model = built(name).train()
    size = input_size(name)
    x = torch.randn(2, 3, size, size)
    logits, feats = model(x)
    channels = model.get_stage_channels()
    assert logits.shape == (2, NUM_CLASSES)
    assert set(feats) == {"feats", "preact_feats", "pooled_feat"}
    assert len(feats["feats"]) == len(feats["preact_feats"]) == len(channels) == model.num_stages
    for f, pre, c, s in zip(
        feats["feats"], feats["preact_feats"], channels, expected_sizes(name), strict=True
    ):
        assert f.shape == pre.shape == (2, c, s, s)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == NUM_CLASSES
    assert feats["pooled_feat"].shape == (2, head.in_features)

    # Pre-activations: the stage outputs before their final ReLU (linear for MobileNets).
    for f, pre in zip(feats["feats"][1:], feats["preact_feats"][1:], strict=True):
        if name.startswith(RELU_STAGES):
            assert (pre < 0).any()
            torch.testing.assert_close(f, F.relu(pre), rtol=0, atol=0)
        elif name in LINEAR_STAGES:
            assert f is pre and (f < 0).any()

    # Every parameter takes part in the forward (no dead or duplicated modules).
    if sum(p.numel() for p in model.parameters()) < 3_000_000:
        loss = logits.sum() + sum(f.mean() for f in feats["feats"] + feats["preact_feats"])
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())

    # Running the stages one by one (train mode: same batch statistics) gives the same tensors.
    with torch.no_grad():
        h = x
        for i, ref in enumerate(feats["feats"]):
            h = model.forward_stage(i, h)
            torch.testing.assert_close(h, ref.detach(), rtol=0, atol=0)
        out, pooled = model.forward_head(h)
    torch.testing.assert_close(out, logits.detach(), rtol=0, atol=0)
    torch.testing.assert_close(pooled, feats["pooled_feat"].detach(), rtol=0, atol=0)
    if name.startswith(("resnet", "ResNet", "vgg", "ShuffleV1", "imagenet_resnet")):
        # The head reads the last stage output directly: pooled = its global average.
        torch.testing.assert_close(pooled, feats["feats"][-1].detach().mean((2, 3)))
    with pytest.raises(IndexError, match=r"stages 0\.\."):
        model.forward_stage(model.num_stages, h)


@pytest.mark.parametrize("name", ALL)
def test_feature_helpers(name):
    model = built(name)
    params = {id(p) for p in model.parameters()}
    feat_modules = model.get_feat_modules()
    assert isinstance(feat_modules, nn.ModuleList) and len(feat_modules) > 0
    assert {id(p) for p in feat_modules.parameters()} <= params
    if name.startswith("Shuffle"):
        with pytest.raises(NotImplementedError, match="no BatchNorm directly before"):
            model.get_bn_before_relu()
        return
    bns = model.get_bn_before_relu()
    assert len(bns) == model.num_stages - 1
    for bn, c in zip(bns, model.get_stage_channels()[1:], strict=True):
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == c
        assert id(bn.weight) in params


# Parameter counts at 100 classes, in millions, as tabulated by CRD (Tian et al., ICLR 2020) and
# DKD (Zhao et al., CVPR 2022).
PARAMS_M = {
    "resnet20": 0.28, "resnet32": 0.47, "resnet56": 0.86, "resnet110": 1.73,
    "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_16_2": 0.70, "wrn_40_1": 0.57,
    "wrn_40_2": 2.25, "vgg8": 3.96, "vgg13": 9.46, "ResNet50": 23.71,
    "MobileNetV2": 0.81, "ShuffleV1": 0.95, "ShuffleV2": 1.36,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_parameter_counts_match_the_papers(name):
    with torch.device("meta"):
        model = build_model(name, num_classes=100)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - PARAMS_M[name]) <= 0.0075, count


# (name, key, shape) facts of the CRD / mdistiller checkpoints' key layouts (at 100 classes).
KEYS = [
    ("resnet8x4", "conv1.weight", (32, 3, 3, 3)),
    ("resnet8x4", "layer1.0.conv1.weight", (64, 32, 3, 3)),
    ("resnet8x4", "layer1.0.downsample.0.weight", (64, 32, 1, 1)),
    ("resnet8x4", "layer3.0.downsample.1.running_var", (256,)),
    ("resnet8x4", "fc.weight", (100, 256)),
    ("resnet56", "layer3.8.bn2.num_batches_tracked", ()),
    ("ResNet50", "layer1.0.shortcut.0.weight", (256, 64, 1, 1)),
    ("ResNet50", "layer4.2.conv3.weight", (2048, 512, 1, 1)),
    ("ResNet50", "linear.weight", (100, 2048)),
    ("ResNet18", "layer2.0.shortcut.1.weight", (128,)),
    ("wrn_40_2", "block1.layer.0.convShortcut.weight", (32, 16, 1, 1)),
    ("wrn_40_2", "block3.layer.5.conv2.weight", (128, 128, 3, 3)),
    ("wrn_40_2", "bn1.running_mean", (128,)),
    ("wrn_40_2", "fc.weight", (100, 128)),
    ("vgg13", "block0.0.weight", (64, 3, 3, 3)),
    ("vgg13", "block0.0.bias", (64,)),
    ("vgg13", "block0.1.running_mean", (64,)),
    ("vgg13", "block0.3.weight", (64, 64, 3, 3)),
    ("vgg13", "block0.4.weight", (64,)),
    ("vgg13", "block4.4.bias", (512,)),
    ("vgg13", "classifier.weight", (100, 512)),
    ("vgg8", "block4.1.weight", (512,)),
    ("MobileNetV2", "conv1.0.weight", (16, 3, 3, 3)),
    ("MobileNetV2", "blocks.0.0.conv.0.weight", (16, 16, 1, 1)),
    ("MobileNetV2", "blocks.1.0.conv.3.weight", (48, 1, 3, 3)),
    ("MobileNetV2", "blocks.6.0.conv.7.running_var", (160,)),
    ("MobileNetV2", "conv2.0.weight", (1280, 160, 1, 1)),
    ("MobileNetV2", "classifier.0.weight", (100, 1280)),
    ("ShuffleV1", "conv1.weight", (24, 3, 1, 1)),
    ("ShuffleV1", "layer1.0.conv1.weight", (54, 24, 1, 1)),
    ("ShuffleV1", "layer1.0.conv3.weight", (216, 18, 1, 1)),
    ("ShuffleV1", "layer2.7.bn3.weight", (480,)),
    ("ShuffleV1", "linear.weight", (100, 960)),
    ("ShuffleV2", "layer1.0.conv1.weight", (24, 1, 3, 3)),
    ("ShuffleV2", "layer1.0.conv5.weight", (58, 58, 1, 1)),
    ("ShuffleV2", "layer2.7.conv3.weight", (116, 116, 1, 1)),
    ("ShuffleV2", "conv2.weight", (1024, 464, 1, 1)),
    ("ShuffleV2", "bn2.weight", (1024,)),
    ("ShuffleV2", "linear.weight", (100, 1024)),
]
ABSENT = [
    ("resnet56", "layer1.0.downsample.0.weight"),  # 16 -> 16 at stride 1: identity shortcut
    ("ResNet18", "layer1.0.shortcut.0.weight"),
    ("wrn_40_2", "block1.layer.1.convShortcut.weight"),
    ("wrn_16_1", "block1.layer.0.convShortcut.weight"),
    ("vgg13", "block0.2.weight"),  # ReLUs hold no parameters; the block's last one is dropped
    ("vgg13", "block0.5.weight"),
]


@functools.cache
def meta_state(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_model(name, num_classes=100)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("name", "key", "shape"), KEYS)
def test_reference_keys(name, key, shape):
    assert meta_state(name).get(key) == shape


@pytest.mark.parametrize(("name", "key"), ABSENT)
def test_reference_keys_absent(name, key):
    assert key not in meta_state(name)


def test_layouts_carry_no_foreign_keys():
    # Every key of a reference checkpoint is a BN buffer or a parameter of a named module.
    for name in ("resnet32x4", "wrn_40_2", "vgg13", "ResNet50"):
        keys = meta_state(name)
        assert not [k for k in keys if k.startswith(("stem.", "head.", "_"))]
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        n_params = sum(1 for k in keys if not k.endswith(buffers))
        with torch.device("meta"):
            model = build_model(name, num_classes=100)
        assert n_params == len(list(model.parameters()))


def test_wrn_preacts_use_the_next_batchnorm_once():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    single = build_model("wrn_16_2", num_classes=10)
    double = build_model("wrn_16_2", num_classes=10, double_bn_update=True)
    double.load_state_dict(single.state_dict())
    bns = lambda m: m.get_bn_before_relu()  # noqa: E731
    _, fs = single.train()(x)
    _, fd = double.train()(x)
    for a, b in zip(fs["preact_feats"], fd["preact_feats"], strict=True):
        torch.testing.assert_close(a, b)
    momentum = bns(single)[0].momentum
    for bn_s, bn_d, f in zip(bns(single), bns(double), fs["feats"][1:], strict=True):
        assert bn_s.num_batches_tracked.item() == 1
        assert bn_d.num_batches_tracked.item() == 2
        mean = f.detach().mean((0, 2, 3))
        torch.testing.assert_close(bn_s.running_mean, momentum * mean)
        torch.testing.assert_close(bn_d.running_mean, (1 - (1 - momentum) ** 2) * mean)
    # In eval mode the pre-activations are those BatchNorms applied to the stage outputs.
    single.eval()
    with torch.no_grad():
        _, fe = single(x)
        for bn, f, pre in zip(bns(single), fe["feats"][1:], fe["preact_feats"][1:], strict=True):
            torch.testing.assert_close(pre, bn(f))


@pytest.mark.parametrize("name", ["ResNet18", "vgg8", "MobileNetV2", "ShuffleV2", "wrn_16_2"])
def test_cifar_models_run_at_tiny_imagenet_size(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, NUM_CLASSES)
    if name == "vgg8":
        # The reference VGG adds a max-pool before block4 at 64 px, so the last map is 4x4 again.
        assert [f.shape[-1] for f in feats["feats"]] == [64, 32, 16, 8, 4]


def test_resnetv2_zero_init_residual_makes_blocks_identity():
    model = build_model("ResNet18", num_classes=10, zero_init_residual=True).eval()
    block = model.layer1[0]
    x = torch.rand(1, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
