"""ImageNet models against torchvision: identical keys, and identical outputs on shared weights."""

from __future__ import annotations

import pytest
import torch

from eakd.models import build_model

torchvision = pytest.importorskip("torchvision")

PAIRS = [
    ("imagenet_resnet18", "resnet18"),
    ("imagenet_resnet34", "resnet34"),
    ("imagenet_resnet50", "resnet50"),
    ("imagenet_resnet101", "resnet101"),
    ("imagenet_mobilenet_v2", "mobilenet_v2"),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_state_dict_keys_and_shapes_equal_torchvision(ours, theirs):
    with torch.device("meta"):
        a = build_model(ours, num_classes=10).state_dict()
        b = getattr(torchvision.models, theirs)(num_classes=10).state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in b)


@pytest.mark.parametrize(("ours", "theirs"), [PAIRS[0], PAIRS[2], PAIRS[4]])
def test_outputs_equal_torchvision_with_its_weights(ours, theirs):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, theirs)(num_classes=10).eval()
    model = build_model(ours, num_classes=10).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 48, 80)  # not a multiple of 32, not square: adaptive pooling
    with torch.no_grad():
        logits, feats = model(x)
        expected = ref(x)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        feats["pooled_feat"] @ ref_head(ref).weight.T + ref_head(ref).bias, expected
    )


def ref_head(ref: torch.nn.Module) -> torch.nn.Linear:
    return ref.fc if hasattr(ref, "fc") else ref.classifier[-1]


def test_resnet_stem_feature_is_before_the_max_pool():
    torch.manual_seed(0)
    model = build_model("imagenet_resnet18", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, feats = model(x)
        stem = model.bn1(model.conv1(x))
    torch.testing.assert_close(feats["preact_feats"][0], stem)
    torch.testing.assert_close(feats["feats"][0], stem.relu())
    assert feats["feats"][0].shape[-1] == 32 and feats["feats"][1].shape[-1] == 16
