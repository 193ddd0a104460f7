"""A model that expects other inputs than the dataset gives: resize and re-normalise on the fly.

A 224-px transformer teacher distilling into a 64-px Tiny-ImageNet student sees the same batch
as the student, resized to its own input size and normalised with its own mean and std::

    from eakd.models import InputAdapter, build_model
    vit = build_model("timm:vit_base_patch16_224", num_classes=200, checkpoint="vit_tin.pth")
    teacher = InputAdapter(vit, 224, mean=(0.5,) * 3, std=(0.5,) * 3,
                           data_mean=(0.4802, 0.4481, 0.3975), data_std=(0.2302, 0.2265, 0.2262))
    logits, feats = teacher(x64)   # vit saw x64 at 224 px, normalised as in its pre-training

In a classification config it is the model's ``input`` section (:class:`InputSpec`); the
dataset's own normalisation comes from its :class:`eakd.data.DatasetInfo`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["INTERPOLATIONS", "InputAdapter", "InputSpec"]

#: Resampling modes (those of timm's and torchvision's pretrained configs).
INTERPOLATIONS = ("bilinear", "bicubic")


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else size
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in hw)
    ):
        raise ValueError(f"input size must be an int or [height, width], got {size!r}")
    hw = tuple(hw)
    if min(hw) < 1:
        raise ValueError(f"input size must be positive, got {size!r}")
    return hw  # type: ignore[return-value]


def _stats(mean: Sequence[float], std: Sequence[float], what: str) -> tuple[list, list]:
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if not mean or len(mean) != len(std):
        raise ValueError(
            f"{what} mean and std need one value per channel, got {len(mean)} and {len(std)}"
        )
    if min(std) <= 0:
        raise ValueError(f"{what} std must be > 0, got {std}")
    return mean, std


@dataclass
class InputSpec:
    """The input a model expects, when it is not the dataset's (the ``input`` section of a
    model in a classification config).

    Attributes:
        size: the model's input size, ``224`` or ``[height, width]``.
        mean, std: the model's own per-channel normalisation (of pixels in [0, 1]), as its
            pre-training used it (timm: ``model.pretrained_cfg["mean"]`` / ``["std"]``).
        interpolation: ``bicubic`` or ``bilinear``, as the model's pretrained config says.
        antialias: resample as PIL does (``antialias=True``; for bicubic also PIL's kernel,
            ``a = -0.5``); ``False`` uses PyTorch's plain kernels (bicubic ``a = -0.75``).
        clamp: clamp the resized pixels to [0, 1], as resizing an 8-bit image does (bicubic
            overshoots at edges).
    """

    size: int | tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    antialias: bool = True
    clamp: bool = True

    def __post_init__(self) -> None:
        _size(self.size)
        _stats(self.mean, self.std, "input")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}"
            )


class InputAdapter(nn.Module):
    r"""Feeds ``model`` the batch resized to its input size and normalised its own way.

    For a batch ``x`` (N, C, h, w) normalised with the dataset's per-channel ``(mu_d, sigma_d)``,
    the model receives

    .. math::
        x' = \frac{\mathrm{clamp}_{[0,1]}\big(\mathrm{resize}_{H \times W}(x\,\sigma_d + \mu_d)
        \big) - \mu_t}{\sigma_t}

    per channel: the pixels are recovered, resampled to ``size`` = (H, W) (``interpolation``,
    ``antialias``; the whole image, no crop, so the model sees what the student sees), clamped
    as an 8-bit image would be (``clamp``), and normalised with the model's ``(mu_t, sigma_t)``.
    At ``(h, w) == (H, W)`` there is no resampling, only the re-normalisation.

    ``forward`` returns whatever ``model`` returns (``logits`` or ``(logits, feats)``); the
    state dict is the model's under a ``model.`` prefix, which
    :func:`eakd.models.load_checkpoint` reads in both directions. Only logit-based methods use
    such a model: feature methods need stage features at the student's resolution.

    Args:
        model: the wrapped network.
        size: its input size, an int or ``(H, W)``.
        mean, std: its normalisation, one value per channel.
        data_mean, data_std: the normalisation the incoming batch carries (the dataset's).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        antialias: PIL-style resampling (see :class:`InputSpec`).
        clamp: clamp the resized pixels to [0, 1].
    """

    def __init__(
        self,
        model: nn.Module,
        size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        data_mean: Sequence[float],
        data_std: Sequence[float],
        *,
        interpolation: str = "bicubic",
        antialias: bool = True,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}"
            )
        self.model = model
        self.size = _size(size)
        mean, std = _stats(mean, std, "model")
        data_mean, data_std = _stats(data_mean, data_std, "data")
        if len(mean) != len(data_mean):
            raise ValueError(
                f"the model's normalisation has {len(mean)} channels, the data's {len(data_mean)}"
            )
        self.interpolation = interpolation
        self.antialias = antialias
        self.clamp = clamp
        self.num_classes: int | None = getattr(model, "num_classes", None)

        def stat(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

        # Not persistent: the state dict stays the wrapped model's.
        self.register_buffer("mean", stat(mean), persistent=False)
        self.register_buffer("std", stat(std), persistent=False)
        self.register_buffer("data_mean", stat(data_mean), persistent=False)
        self.register_buffer("data_std", stat(data_std), persistent=False)

    @classmethod
    def from_spec(
        cls,
        model: nn.Module,
        spec: InputSpec,
        data_mean: Sequence[float],
        data_std: Sequence[float],
    ) -> InputAdapter:
        """The adapter an :class:`InputSpec` describes, for data normalised with
        ``(data_mean, data_std)``."""
        return cls(
            model,
            spec.size,
            spec.mean,
            spec.std,
            data_mean,
            data_std,
            interpolation=spec.interpolation,
            antialias=spec.antialias,
            clamp=spec.clamp,
        )

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, h, w) in the data's normalisation -> (N, C, H, W) in the model's."""
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"expected images (N, {self.mean.shape[1]}, H, W) normalised for the data, got "
                f"shape {tuple(x.shape)}"
            )
        pixels = x * self.data_std.to(x.dtype) + self.data_mean.to(x.dtype)
        if tuple(x.shape[-2:]) != self.size:
            pixels = F.interpolate(
                pixels,
                size=self.size,
                mode=self.interpolation,
                align_corners=False,
                antialias=self.antialias,
            )
        if self.clamp:
            pixels = pixels.clamp(0.0, 1.0)
        return (pixels - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(self.adapt(x))

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, interpolation={self.interpolation!r}, "
            f"antialias={self.antialias}, clamp={self.clamp}"
        )
