"""MLD's strong augmentation: RandAugment in the FixMatch style, then Cutout.

Each call picks ``num_ops`` operations uniformly with replacement from the 14 below, applies
each with a magnitude drawn uniformly from its range (there is no global magnitude ``m``), then
paints a square of side ``U(0, 0.5) * width`` centred at a uniform random point with the colour
(125, 123, 114). The op list and ranges follow FixMatch (Sohn et al., NeurIPS 2020) as used by
MLD (Jin et al., CVPR 2023). Randomness comes from torch, so ``torch.manual_seed`` and the
per-worker seeds of ``DataLoader`` make it reproducible. Works on RGB and grayscale PIL images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, ImageEnhance, ImageOps

__all__ = ["CUTOUT_FILL", "RANDAUGMENT_OPS", "Cutout", "RandAugmentFixMatch", "cutout"]

CUTOUT_FILL = (125, 123, 114)

Op = Callable[[Image.Image, float, Any], Image.Image]


def _affine(img: Image.Image, coeffs: tuple[float, ...], fill: Any) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, fillcolor=fill)


# name -> (op(img, magnitude, geometry_fill), low, high); magnitudes are drawn from [low, high].
RANDAUGMENT_OPS: dict[str, tuple[Op, float, float]] = {
    "AutoContrast": (lambda img, v, f: ImageOps.autocontrast(img), 0.0, 1.0),
    "Brightness": (lambda img, v, f: ImageEnhance.Brightness(img).enhance(v), 0.05, 0.95),
    "Color": (lambda img, v, f: ImageEnhance.Color(img).enhance(v), 0.05, 0.95),
    "Contrast": (lambda img, v, f: ImageEnhance.Contrast(img).enhance(v), 0.05, 0.95),
    "Equalize": (lambda img, v, f: ImageOps.equalize(img), 0.0, 1.0),
    "Identity": (lambda img, v, f: img, 0.0, 1.0),
    # Bits kept: int() of U(4, 8), i.e. 4..7 (8 has probability zero).
    "Posterize": (lambda img, v, f: ImageOps.posterize(img, int(v)), 4.0, 8.0),
    "Rotate": (lambda img, v, f: img.rotate(v, fillcolor=f), -30.0, 30.0),
    "Sharpness": (lambda img, v, f: ImageEnhance.Sharpness(img).enhance(v), 0.05, 0.95),
    "ShearX": (lambda img, v, f: _affine(img, (1, v, 0, 0, 1, 0), f), -0.3, 0.3),
    "ShearY": (lambda img, v, f: _affine(img, (1, 0, 0, v, 1, 0), f), -0.3, 0.3),
    # Pixels >= threshold are inverted; a threshold of 256 leaves the image unchanged.
    "Solarize": (lambda img, v, f: ImageOps.solarize(img, v), 0.0, 256.0),
    "TranslateX": (lambda img, v, f: _affine(img, (1, 0, v * img.size[0], 0, 1, 0), f), -0.3, 0.3),
    "TranslateY": (lambda img, v, f: _affine(img, (1, 0, 0, 0, 1, v * img.size[1]), f), -0.3, 0.3),
}


def _fill_for(img: Image.Image, fill: int | Sequence[int]) -> Any:
    """``fill`` (an RGB triple or a gray level) in the pixel format of ``img``."""
    if isinstance(fill, int):
        fill = (fill, fill, fill)
    return Image.new("RGB", (1, 1), tuple(fill)).convert(img.mode).getpixel((0, 0))


def cutout(
    img: Image.Image,
    center: tuple[float, float],
    side: float,
    fill: int | Sequence[int] = CUTOUT_FILL,
) -> Image.Image:
    """Return a copy of ``img`` with the square of ``side`` pixels centred at ``center = (x, y)``
    painted with ``fill``; the square is clipped to the image.

    Covered pixels: columns ``[floor(max(0, x - side/2)), floor(min(W, x + side/2)))`` and the
    same for rows with ``y`` and H.
    """
    w, h = img.size
    x, y = center
    box = (
        int(max(0.0, x - side / 2)),
        int(max(0.0, y - side / 2)),
        int(min(float(w), x + side / 2)),
        int(min(float(h), y + side / 2)),
    )
    out = img.copy()
    if box[2] > box[0] and box[3] > box[1]:
        out.paste(_fill_for(img, fill), box)
    return out


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


class Cutout:
    """Paint a square of side ``U(0, max_fraction) * width`` at a uniform random centre."""

    def __init__(
        self,
        max_fraction: float = 0.5,
        fill: int | Sequence[int] = CUTOUT_FILL,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction, self.fill, self.generator = max_fraction, fill, generator

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        side = _uniform(0.0, self.max_fraction, self.generator) * w
        center = (_uniform(0.0, w, self.generator), _uniform(0.0, h, self.generator))
        return cutout(img, center, side, self.fill)

    def __repr__(self) -> str:
        return f"Cutout(max_fraction={self.max_fraction}, fill={self.fill})"


class RandAugmentFixMatch:
    """FixMatch-style RandAugment followed by Cutout, on PIL images.

    Args:
        num_ops: operations applied per image, drawn uniformly with replacement (MLD: 2).
        ops: subset of :data:`RANDAUGMENT_OPS` names to draw from (None: all 14).
        cutout: maximal Cutout side as a fraction of the width (MLD: 0.5); 0 disables it.
        cutout_fill: Cutout colour (MLD: (125, 123, 114)).
        geometry_fill: colour of the pixels exposed by Rotate/Shear/Translate (PIL's default,
            black).
        generator: torch generator for the draws (None: the global torch RNG).
    """

    def __init__(
        self,
        num_ops: int = 2,
        ops: Sequence[str] | None = None,
        cutout: float = 0.5,
        cutout_fill: int | Sequence[int] = CUTOUT_FILL,
        geometry_fill: int | Sequence[int] = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        names = list(RANDAUGMENT_OPS) if ops is None else list(ops)
        unknown = [n for n in names if n not in RANDAUGMENT_OPS]
        if unknown or not names:
            raise ValueError(
                f"unknown or empty ops {unknown or names}; valid: {', '.join(RANDAUGMENT_OPS)}"
            )
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        self.num_ops, self.ops = num_ops, names
        self.cutout = Cutout(cutout, cutout_fill, generator) if cutout > 0 else None
        self.geometry_fill = geometry_fill
        self.generator = generator

    def __call__(self, img: Image.Image) -> Image.Image:
        picks = torch.randint(len(self.ops), (self.num_ops,), generator=self.generator)
        for i in picks.tolist():
            op, low, high = RANDAUGMENT_OPS[self.ops[i]]
            img = op(img, _uniform(low, high, self.generator), _fill_for(img, self.geometry_fill))
        return self.cutout(img) if self.cutout is not None else img

    def __repr__(self) -> str:
        return f"RandAugmentFixMatch(num_ops={self.num_ops}, ops={self.ops}, cutout={self.cutout})"
