"""Loss landscapes on a 2-D slice of parameter space (Li et al., NeurIPS 2018; EA-KD Figure 7).

``L(a, b) = loss(theta + a * d1 + b * d2)`` for two random directions ``d1, d2`` that are
*filter-normalised*: every filter (a slice along a weight's first dimension) of a direction is
rescaled to the norm of the same filter of ``theta``, so that the slice has the same scale for
networks of any width or weight norm. Biases and normalisation parameters (tensors of one
dimension) get no component, as in Li et al.'s default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["filter_normalized_direction", "loss_surface", "mean_loss"]


def _logits(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def filter_normalized_direction(
    model: nn.Module, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    r"""A random direction in ``model``'s parameter space, filter-normalised.

    For each parameter ``theta`` of two or more dimensions, ``d ~ N(0, I)`` and then, per
    filter ``i`` (index along dim 0): :math:`d_i \leftarrow d_i\,\lVert\theta_i\rVert /
    \lVert d_i\rVert`. One-dimensional parameters (biases, BatchNorm scales) get zeros.

    Args:
        model: the network (its ``parameters()`` order is the direction's order).
        generator: CPU generator for reproducible directions (the same seed gives the same
            raw draws for two models of one architecture).

    Returns:
        one tensor per parameter, with the parameter's shape, dtype and device.
    """
    out = []
    for p in model.parameters():
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        d = d.to(device=p.device)
        theta = p.detach().float()
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        t_norm = theta.flatten(1).norm(dim=1)
        scale = (t_norm / d_norm).view(-1, *([1] * (p.dim() - 1)))
        out.append((d * scale).to(p.dtype))
    return out


@torch.no_grad()
def mean_loss(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Mean per-sample loss of ``model`` over ``batches`` (cross-entropy by default).

    ``loss_fn(logits, target)`` must return the *summed* loss of the batch.
    """
    loss_fn = loss_fn or (lambda z, y: F.cross_entropy(z.float(), y, reduction="sum"))
    total, n = 0.0, 0
    for x, y in batches:
        total += float(loss_fn(_logits(model(x)), y))
        n += y.numel()
    if n == 0:
        raise ValueError("no samples to evaluate the loss on")
    return total / n


@torch.no_grad()
def loss_surface(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
    xs: Sequence[float],
    ys: Sequence[float] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """The loss on the plane ``theta + x * d1 + y * d2`` at every grid point.

    The model is evaluated in eval mode (BatchNorm uses its running statistics) and its
    parameters are restored afterwards, also on error.

    Args:
        model: the trained network (its parameters are ``theta``).
        batches: ``[(inputs, targets), ...]`` already on the model's device; kept fixed.
        directions: ``(d1, d2)``, e.g. from :func:`filter_normalized_direction`.
        xs, ys: coordinates along ``d1`` and ``d2`` (``ys`` defaults to ``xs``).
        loss_fn: summed loss of a batch, ``loss_fn(logits, target)``; cross-entropy by default.

    Returns:
        ``(len(ys), len(xs))`` array, ``surface[i, j]`` the mean loss at ``(xs[j], ys[i])``.
    """
    ys = xs if ys is None else ys
    params = list(model.parameters())
    d1, d2 = directions
    if len(d1) != len(params) or len(d2) != len(params):
        raise ValueError(
            f"directions have {len(d1)} and {len(d2)} tensors but the model has "
            f"{len(params)} parameters; build them with filter_normalized_direction(model)"
        )
    theta = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()
    surface = np.empty((len(ys), len(xs)))
    try:
        for i, b in enumerate(ys):
            for j, a in enumerate(xs):
                for p, t, u, v in zip(params, theta, d1, d2, strict=True):
                    p.copy_(t + float(a) * u + float(b) * v)
                surface[i, j] = mean_loss(model, batches, loss_fn)
    finally:
        for p, t in zip(params, theta, strict=True):
            p.copy_(t)
        model.train(was_training)
    return surface
