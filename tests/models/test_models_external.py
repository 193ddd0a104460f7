"""External ``torchvision:`` / ``timm:`` models behind the forward contract, and import hygiene."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from eakd.models import ExternalModel, build_model, load_checkpoint


def test_importing_the_zoo_imports_no_vision_package():
    code = (
        "import sys, eakd, eakd.models; "
        "bad = [m for m in ('torchvision', 'timm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torchvision_model_is_wrapped():
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10).eval()
    assert isinstance(model, ExternalModel) and model.num_classes == 10
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, feats = model(x)
        inner = model.model
        h = inner.layer4(inner.layer3(inner.layer2(inner.layer1(inner.maxpool(
            inner.relu(inner.bn1(inner.conv1(x)))
        )))))  # fmt: skip
    assert logits.shape == (2, 10)
    assert feats["feats"] == [] and feats["preact_feats"] == []
    torch.testing.assert_close(feats["pooled_feat"], h.mean((2, 3)))
    assert model.get_classifier() is inner.fc
    # The head is not registered twice: the keys are the wrapped model's, prefixed once.
    assert set(model.state_dict()) == {f"model.{k}" for k in inner.state_dict()}
    with pytest.raises(NotImplementedError, match="zoo model"):
        model.get_feat_modules()


def test_external_checkpoint_in_both_layouts(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2(num_classes=5)
    plain = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), plain)
    model = build_model("torchvision:mobilenet_v2", num_classes=5, checkpoint=plain)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.model.state_dict()[k], v, rtol=0, atol=0)
    wrapped = tmp_path / "wrapped.pth"
    torch.save(model.state_dict(), wrapped)  # keys "model.*"
    again = load_checkpoint("torchvision:mobilenet_v2", wrapped)  # 5 classes read from the file
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0)
    # The torchvision file also loads into the zoo's feature-rich twin.
    twin = load_checkpoint("imagenet_mobilenet_v2", plain)
    torch.testing.assert_close(twin.features[0][0].weight, ref.features[0][0].weight)


def test_external_errors(monkeypatch):
    pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match=r"never downloaded.*checkpoint=PATH"):
        build_model("torchvision:resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        build_model("torchvision:resnet19")
    with pytest.raises(ValueError, match="look like 'torchvision:resnet50'"):
        build_model("torchvision:")

    real = importlib.import_module

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ModuleNotFoundError("No module named 'timm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_timm)
    with pytest.raises(ImportError, match=r"needs the 'timm' package.*pip install timm"):
        build_model("timm:resnet18")


def test_timm_model_is_wrapped():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    # A pretrained tag in the name is fine: nothing is downloaded either way.
    model = build_model("timm:resnet18.a1_in1k", num_classes=3).eval()
    inner = model.model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, feats = model(x)
        pooled = inner.forward_head(inner.forward_features(x), pre_logits=True)
        expected = inner(x)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(feats["pooled_feat"], pooled)
    assert model.get_classifier() is inner.get_classifier()


def tiny_net(num_classes: int = 10, width: int = 4) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))


def test_user_model_by_import_path():
    model = build_model(f"{__name__}:tiny_net", num_classes=3, width=2)
    assert isinstance(model, torch.nn.Sequential) and model[1].out_features == 3
    with pytest.raises(TypeError, match="unknown keyword 'depth'"):
        build_model(f"{__name__}:tiny_net", depth=2)
    with pytest.raises(ImportError, match="cannot import module 'no_such_pkg.nets'.*PYTHONPATH"):
        build_model("no_such_pkg.nets:Net")
    with pytest.raises(ValueError, match="has no callable 'missing'"):
        build_model(f"{__name__}:missing")
    with pytest.raises(ValueError, match="neither a registered model"):
        build_model("not a/path:Net")
