"""Shape and contract tests for the demo CNNs (MNIST-1D signals, Fashion-MNIST images)."""

from __future__ import annotations

import pytest
import torch

from eakd.models.demo import DEMO_MODELS, DemoCNN, DemoCNN1d, DemoCNN2d


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("width", [4, 8, 32])
@pytest.mark.parametrize("num_classes", [10, 7])
def test_1d_shapes_and_feature_contract(width, num_classes):
    model = DemoCNN1d(num_classes=num_classes, width=width).eval()
    logits, feats = model(torch.randn(5, 1, 40))
    assert logits.shape == (5, num_classes)
    assert set(feats) == {"feats", "preact_feats", "pooled_feat"}
    # stem, then three stages at lengths 40, 20, 10 with widths w, 2w, 4w
    expected = [(5, width, 40), (5, width, 40), (5, 2 * width, 20), (5, 4 * width, 10)]
    assert [tuple(f.shape) for f in feats["feats"]] == expected
    assert [tuple(f.shape) for f in feats["preact_feats"]] == expected
    assert feats["pooled_feat"].shape == (5, 4 * width)
    # the classifier reads the pooled feature, which is the mean of the last stage
    torch.testing.assert_close(feats["pooled_feat"], feats["feats"][-1].mean(-1))
    torch.testing.assert_close(logits, model.fc(feats["pooled_feat"]))
    # stage outputs are the ReLU of their pre-activations, which do go negative
    for out, pre in zip(feats["feats"][1:], feats["preact_feats"][1:], strict=True):
        torch.testing.assert_close(out, pre.relu())
        assert (pre < 0).any()


def test_1d_accepts_unbatched_channel_dim():
    model = DemoCNN1d(width=4).eval()
    x = torch.randn(3, 40)
    torch.testing.assert_close(model(x)[0], model(x.unsqueeze(1))[0])


@pytest.mark.parametrize("width", [4, 16])
def test_2d_shapes(width):
    model = DemoCNN2d(num_classes=10, width=width).eval()
    logits, feats = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    shapes = [tuple(f.shape) for f in feats["feats"]]
    # stride-2 stem, then stages at 14x14, 7x7 and (ceil-free max-pool) 3x3
    assert shapes == [
        (2, width, 14, 14),
        (2, width, 14, 14),
        (2, 2 * width, 7, 7),
        (2, 4 * width, 3, 3),
    ]
    torch.testing.assert_close(feats["pooled_feat"], feats["feats"][-1].mean((-2, -1)))


def test_2d_full_resolution_stem():
    model = DemoCNN2d(width=4, stem_stride=1).eval()
    _, feats = model(torch.randn(1, 1, 28, 28))
    assert [f.shape[-1] for f in feats["feats"]] == [28, 28, 14, 7]


@pytest.mark.parametrize("name", sorted(DEMO_MODELS))
def test_named_configurations(name):
    cls, kwargs = DEMO_MODELS[name]
    model = cls(num_classes=10, **kwargs).eval()
    assert model.num_classes == 10
    assert name.endswith(f"_w{kwargs['width']}")
    x = torch.randn(2, 40) if name.startswith("cnn1d") else torch.randn(2, 1, 28, 28)
    logits, feats = model(x)
    assert logits.shape == (2, 10)
    assert feats["pooled_feat"].shape == (2, 4 * kwargs["width"])


def test_num_stages_and_in_channels():
    model = DemoCNN(num_classes=3, dim=2, width=4, num_stages=2, in_channels=3).eval()
    logits, feats = model(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 3)
    assert len(feats["feats"]) == 3
    assert feats["pooled_feat"].shape == (2, 8)


def test_width_scales_parameters_quadratically():
    # the convolutions dominate: doubling the width roughly quadruples the parameters
    small, large = _param_count(DemoCNN1d(width=8)), _param_count(DemoCNN1d(width=16))
    assert 3.5 < large / small < 4.1


def test_gradients_reach_every_parameter():
    model = DemoCNN1d(width=4)
    logits, _ = model(torch.randn(4, 40))
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 3}, "dim must be 1"),
        ({"width": 0}, "width must be a positive int"),
        ({"num_classes": 2.5}, "num_classes must be a positive int"),
        ({"stem_kernel": 4}, "stem_kernel must be a positive odd int"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemoCNN(**kwargs)


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (DemoCNN1d(width=4), torch.randn(2, 1, 28, 28)),
        (DemoCNN1d(width=4), torch.randn(2, 3, 40)),
        (DemoCNN2d(width=4), torch.randn(2, 28, 28)),
    ],
)
def test_bad_input_shape_names_the_expected_layout(model, x):
    with pytest.raises(ValueError, match=r"expects input of shape \(N, C"):
        model(x)
