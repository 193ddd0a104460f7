"""InputAdapter: the batch a model sees is the data's, resized to its size and normalised its way.

References: a constant image stays that colour (resampling weights sum to 1), a float64 separable
bilinear resize written out here, and PIL's resize of the 8-bit image (what timm's pretrained
pipelines use), each followed by the model's own normalisation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from eakd.config import ConfigError, from_dict
from eakd.data import dataset_info
from eakd.models import InputAdapter, InputSpec, build_model, load_checkpoint

TINY = dataset_info("tiny_imagenet")
DATA_MEAN, DATA_STD = TINY.mean, TINY.std  # (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
VIT_MEAN, VIT_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IN_MEAN, IN_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IN_STATS = (IN_MEAN, IN_STD)


def col(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)


def normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    return (pixels - col(mean).to(pixels.dtype)) / col(std).to(pixels.dtype)


def smooth_image(h: int = 64, w: int = 64) -> np.ndarray:
    """An 8-bit RGB image of low-frequency patterns inside [0.15, 0.85] (no clipping anywhere)."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    img = np.stack(
        [
            0.5 + 0.35 * np.sin(2 * np.pi * (1.5 * xx + 0.5 * yy)),
            0.5 + 0.35 * np.cos(4 * np.pi * yy),
            0.2 + 0.6 * xx * yy,
        ],
        -1,
    )
    return np.round(img * 255).astype(np.uint8)


def to_batch(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) normalised with Tiny-ImageNet's statistics (ToTensor +
    Normalize, as the student's pipeline does)."""
    pixels = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].double() / 255
    return normalise(pixels, DATA_MEAN, DATA_STD).float()


def adapter(size, mean=VIT_MEAN, std=VIT_STD, model=None, **kw) -> InputAdapter:
    return InputAdapter(model or nn.Identity(), size, mean, std, DATA_MEAN, DATA_STD, **kw)


def bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with half-pixel centres (upsampling)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[i, i0] += 1.0 - frac
        m[i, i1] += frac
    return m


# -- the formula ---------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, 32, (100, 80)])
@pytest.mark.parametrize("antialias", [True, False])
def test_a_constant_image_becomes_that_colour_in_the_models_normalisation(
    interpolation, size, antialias
):
    colour = (0.2, 0.55, 0.9)
    pixels = col(colour).expand(2, 3, 64, 64)
    x = normalise(pixels, DATA_MEAN, DATA_STD).float()
    out = adapter(size, IN_MEAN, IN_STD, interpolation=interpolation, antialias=antialias)(x)
    hw = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, 3, *hw)
    expected = normalise(col(colour), IN_MEAN, IN_STD).float().expand_as(out)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [224, (100, 80)])
def test_bilinear_upsampling_is_resize_then_normalise(size):
    """Against a float64 separable bilinear resize of the recovered pixels, then the model's
    normalisation: (A P B^T - mu_t) / sigma_t per channel."""
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    x = normalise(pixels, DATA_MEAN, DATA_STD)
    h, w = (size, size) if isinstance(size, int) else size
    out = adapter(size, IN_MEAN, IN_STD, interpolation="bilinear").double()(x)
    resized = bilinear_matrix(h, 64) @ pixels @ bilinear_matrix(w, 64).T
    expected = normalise(resized, IN_MEAN, IN_STD)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("interpolation", "pil_mode"), [("bicubic", 3), ("bilinear", 2)])
@pytest.mark.parametrize("size", [224, 32, (100, 80)])
def test_matches_pil_resize_of_the_image_then_the_models_normalisation(
    interpolation, pil_mode, size
):
    """What the model saw in pre-training: PIL resizes the 8-bit image (timm's pipelines), then
    ToTensor and Normalize(mean_t, std_t). PIL rounds to 8 bits, hence the 1.5/255 tolerance."""
    image_mod = pytest.importorskip("PIL.Image")
    img = smooth_image()
    h, w = (size, size) if isinstance(size, int) else size
    ref_img = np.asarray(image_mod.fromarray(img).resize((w, h), pil_mode))
    ref_pixels = torch.from_numpy(ref_img.copy()).permute(2, 0, 1)[None].double() / 255
    ref = normalise(ref_pixels, *IN_STATS)
    out = adapter(size, *IN_STATS, interpolation=interpolation)(to_batch(img))
    err = ((out.double() - ref) * col(IN_STD)).abs().max().item() * 255  # in 8-bit levels
    assert err <= 1.5
    if size == 32:  # downsampling: PyTorch's plain kernels alias, PIL's do not
        plain = adapter(size, *IN_STATS, interpolation=interpolation, antialias=False)
        err_plain = ((plain(to_batch(img)).double() - ref) * col(IN_STD)).abs().max() * 255
        assert err_plain > 2.0


def test_at_the_models_size_only_the_normalisation_changes():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    out = adapter(32, IN_MEAN, IN_STD)(x)
    pixels = (x.double() * col(DATA_STD) + col(DATA_MEAN)).clamp(0, 1)
    torch.testing.assert_close(out.double(), normalise(pixels, IN_MEAN, IN_STD), atol=1e-6, rtol=0)
    # swapping the two normalisations is not the same map
    swapped = InputAdapter(nn.Identity(), 32, DATA_MEAN, DATA_STD, IN_MEAN, IN_STD)(x)
    assert (swapped - out).abs().max() > 0.05


def test_clamp_limits_bicubic_overshoot_to_the_pixel_range():
    """A black/white edge upsampled bicubically overshoots below 0 and above 1; ``clamp`` cuts
    exactly that, as an 8-bit image would."""
    pixels = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    pixels[..., 8:] = 1.0
    x = normalise(pixels, DATA_MEAN, DATA_STD).float()
    raw = adapter(64, VIT_MEAN, VIT_STD, clamp=False)(x).double() * 0.5 + 0.5
    clamped = adapter(64, VIT_MEAN, VIT_STD)(x).double() * 0.5 + 0.5
    assert raw.min() < -0.02 and raw.max() > 1.02
    torch.testing.assert_close(clamped, raw.clamp(0, 1), rtol=0, atol=1e-6)


# -- the wrapper ---------------------------------------------------------------------------------
class Recorder(nn.Module):
    def __init__(self, tuple_output: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 5)
        self.num_classes = 5
        self.seen: list[torch.Tensor] = []
        self.tuple_output = tuple_output

    def forward(self, x):
        self.seen.append(x)
        logits = self.lin(x.mean((2, 3)))
        return (logits, {"pooled_feat": x.mean((2, 3))}) if self.tuple_output else logits


@pytest.mark.parametrize("tuple_output", [False, True])
def test_the_model_gets_the_adapted_batch_and_its_output_is_returned(tuple_output):
    inner = Recorder(tuple_output)
    wrapped = adapter((48, 40), model=inner)
    x = torch.randn(2, 3, 64, 64)
    out = wrapped(x)
    assert len(inner.seen) == 1 and inner.seen[0].shape == (2, 3, 48, 40)
    torch.testing.assert_close(inner.seen[0], wrapped.adapt(x), rtol=0, atol=0)
    logits = out[0] if tuple_output else out
    torch.testing.assert_close(logits, inner.lin(wrapped.adapt(x).mean((2, 3))))
    assert wrapped.num_classes == 5
    # the state dict is the model's (under "model."); the statistics are not saved
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in inner.state_dict()}
    # the statistics follow dtype / device moves
    assert wrapped.double().adapt(x.double()).dtype == torch.float64


def test_from_spec_builds_the_same_adapter():
    spec = InputSpec(size=(40, 48), mean=IN_MEAN, std=IN_STD, interpolation="bilinear")
    a = InputAdapter.from_spec(nn.Identity(), spec, DATA_MEAN, DATA_STD)
    b = InputAdapter(
        nn.Identity(), (40, 48), IN_MEAN, IN_STD, DATA_MEAN, DATA_STD, interpolation="bilinear"
    )
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert a.size == (40, 48) and "bilinear" in repr(a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": (0.5, 0.5)}, "one value per channel, got 2 and 3"),
        ({"std": (0.5, 0.0, 0.5)}, r"model std must be > 0"),
        ({"data_std": (0.2, -1.0, 0.2)}, r"data std must be > 0"),
        ({"data_mean": (0.5,), "data_std": (0.5,)}, "3 channels, the data's 1"),
        ({"size": 0}, "must be positive"),
        ({"size": (224,)}, r"an int or \[height, width\]"),
        ({"size": 224.0}, r"an int or \[height, width\]"),
        ({"interpolation": "nearest"}, r"one of \['bilinear', 'bicubic'\]"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    args = {
        "size": 224,
        "mean": VIT_MEAN,
        "std": VIT_STD,
        "data_mean": DATA_MEAN,
        "data_std": DATA_STD,
    }
    interpolation = kwargs.pop("interpolation", "bicubic")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        InputAdapter(nn.Identity(), interpolation=interpolation, **args)


def test_a_batch_that_is_not_images_of_the_data_is_refused():
    a = adapter(32)
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\).*\(2, 1, 64, 64\)"):
        a(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"got shape \(3, 64, 64\)"):
        a(torch.randn(3, 64, 64))


def test_input_spec_is_bound_strictly_from_config_data():
    spec = from_dict(InputSpec, {"size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    assert spec.size == 224 and spec.mean == (0.5, 0.5, 0.5)
    assert (spec.interpolation, spec.antialias, spec.clamp) == ("bicubic", True, True)
    assert from_dict(InputSpec, {"size": [256, 192], "mean": [0], "std": [1]}).size == (256, 192)
    with pytest.raises(ConfigError, match=r"input\.mean is required"):
        from_dict(InputSpec, {"size": 224, "std": [0.5]}, "input")
    with pytest.raises(ConfigError, match=r"unknown key 'szie'.*did you mean 'size'"):
        from_dict(InputSpec, {"szie": 224, "mean": [0.5], "std": [0.5]}, "input")
    with pytest.raises(ConfigError, match=r"input\.interpolation must be one of"):
        bad = {"size": 224, "mean": [0.5], "std": [0.5], "interpolation": "area"}
        from_dict(InputSpec, bad, "input")
    with pytest.raises(ConfigError, match="one value per channel, got 3 and 1"):
        from_dict(InputSpec, {"size": 224, "mean": [0.5] * 3, "std": [0.5]})


def test_checkpoints_load_into_the_wrapped_model_in_either_layout(tmp_path):
    torch.manual_seed(0)
    ref = build_model("resnet8", num_classes=10)
    plain = tmp_path / "plain.pth"
    torch.save({"model": ref.state_dict()}, plain)
    wrapped = adapter(32, model=build_model("resnet8", num_classes=10))
    load_checkpoint(wrapped, plain)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(wrapped.model.state_dict()[k], v, rtol=0, atol=0)
    own = tmp_path / "wrapped.pth"
    torch.save(wrapped.state_dict(), own)  # keys "model.*"
    again = load_checkpoint("resnet8", own)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)
