"""Curriculum Temperature KD (Li et al., "Curriculum Temperature for Knowledge Distillation",
AAAI 2023), global-temperature version."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.reduction import reduce
from ..base import DistillationLoss
from ..registry import register_loss
from .dkd import dkd_per_item
from .kd import kd_per_item

__all__ = ["CTKDLoss", "GlobalTemperature", "cosine_lambda", "ctkd_loss", "gradient_reversal"]


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def gradient_reversal(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the backward multiplies the gradient by ``scale`` (``lambda`` in CTKD,
    negative so the temperature ascends the loss the student descends)."""
    return _GradientReversal.apply(x, float(scale))


def cosine_lambda(
    epoch: int, lambda_max: float = 0.0, lambda_min: float = -1.0, num_epochs: int = 10
) -> float:
    r"""CTKD's cosine curriculum (epochs count from 1):

    .. math:: \lambda_e = \lambda_{min} + (\lambda_{max} - \lambda_{min})
              \frac{1 + \cos(\pi \min(e, L) / L)}{2}

    With the defaults ``|lambda|`` grows 0.024 (epoch 1) -> 0.5 (epoch 5) -> 1 (epoch >= 10).
    """
    if num_epochs <= 0:
        raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
    e = min(max(epoch, 0), num_epochs)
    return lambda_min + (lambda_max - lambda_min) * (1.0 + math.cos(math.pi * e / num_epochs)) / 2


class GlobalTemperature(nn.Module):
    r"""A learnable global temperature ``tau = tau_start + tau_range * sigmoid(GRL(theta))``.

    ``theta`` starts at ``init`` (1.0: ``tau`` about 15.6 with the defaults). The parameter is
    meant to sit in the student's optimiser (same SGD, weight decay included, as in CTKD).
    """

    def __init__(self, init: float = 1.0, tau_start: float = 1.0, tau_range: float = 20.0):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(init)))
        self.tau_start, self.tau_range = float(tau_start), float(tau_range)

    def forward(self, lambda_: float) -> torch.Tensor:
        theta = gradient_reversal(self.theta, lambda_)
        return self.tau_start + self.tau_range * torch.sigmoid(theta)


def ctkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    temperature: torch.Tensor,
    base: str = "kd",
    alpha: float = 1.0,
    beta: float = 2.0,
    standardize: bool = False,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""CTKD's distillation term at a (learnable) temperature ``tau``, per item:

    .. math:: \ell_n = \tau^2\,\mathrm{KL}(\sigma_\tau(z^t_n) \| \sigma_\tau(z^s_n))

    or DKD at ``tau`` when ``base="dkd"``. ``temperature`` is typically
    ``GlobalTemperature(...)(lambda_e)``; its gradient flows through the ``tau`` in both
    softmaxes and the ``tau^2`` factor.
    """
    per = _ctkd_per_item(
        student_logits, teacher_logits, target, temperature, base, alpha, beta, standardize
    )
    return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


def _ctkd_per_item(s, t, target, tau, base, alpha, beta, standardize):
    if base == "kd":
        return kd_per_item(s, t, tau, standardize)[0]
    if base == "dkd":
        return dkd_per_item(s, t, target, alpha, beta, tau, standardize)[0]
    raise ValueError(f"base must be 'kd' or 'dkd', got {base!r}")


@register_loss("ctkd")
class CTKDLoss(DistillationLoss):
    """CTKD (AAAI 2023): KD (or DKD) at a learnable global temperature with a cosine curriculum.

    Call :meth:`set_epoch` once per epoch (epochs from 1) to advance ``lambda``; the temperature
    module's ``theta`` is a parameter of this loss, so pass ``loss.parameters()`` to the
    optimiser. Defaults: CIFAR-100 (``curriculum_epochs=10``; ImageNet used 5).
    """

    def __init__(
        self,
        base: str = "kd",
        init: float = 1.0,
        tau_start: float = 1.0,
        tau_range: float = 20.0,
        lambda_max: float = 0.0,
        lambda_min: float = -1.0,
        curriculum_epochs: int = 10,
        alpha: float = 1.0,
        beta: float = 2.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        if base not in ("kd", "dkd"):
            raise ValueError(f"base must be 'kd' or 'dkd', got {base!r}")
        self.base = base
        self.needs_target = base == "dkd"
        self.temperature_module = GlobalTemperature(init, tau_start, tau_range)
        self.lambda_max, self.lambda_min = float(lambda_max), float(lambda_min)
        self.curriculum_epochs = int(curriculum_epochs)
        self.alpha, self.beta = float(alpha), float(beta)
        self.standardize = bool(standardize)
        self.lambda_ = cosine_lambda(1, self.lambda_max, self.lambda_min, self.curriculum_epochs)

    def set_epoch(self, epoch: int) -> float:
        """Set ``lambda`` for ``epoch`` (from 1) and return it."""
        self.lambda_ = cosine_lambda(
            epoch, self.lambda_max, self.lambda_min, self.curriculum_epochs
        )
        return self.lambda_

    def temperature(self) -> torch.Tensor:
        """The current temperature ``tau`` (a tensor connected to ``theta``)."""
        return self.temperature_module(self.lambda_)

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        tau = self.temperature().to(student_logits.device)
        return _ctkd_per_item(
            student_logits,
            teacher_logits,
            target,
            tau,
            self.base,
            self.alpha,
            self.beta,
            self.standardize,
        )

    def extra_repr(self) -> str:
        return f"base={self.base!r}, lambda={self.lambda_:.4f}"
