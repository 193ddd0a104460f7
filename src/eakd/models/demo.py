"""Small CNNs for the offline demo: MNIST-1D signals (1-D) and Fashion-MNIST images (2-D).

One family, two spatial dimensions: a stem convolution, then ``len(widths)`` stages of two
3-wide convolutions with batch norm (a max-pool halves the resolution between stages), global
average pooling and a linear classifier. Teacher and student differ only in width, so the
student has the teacher's inductive bias (locality and translation equivariance), which is
what lets logit distillation help it on these small datasets.

The forward follows the zoo's contract ``logits, feats = model(x)`` with ``feats`` holding
``"feats"`` (stem and stage outputs), ``"preact_feats"`` (the same before each stage's last
ReLU) and ``"pooled_feat"`` (the pooled ``(N, C)`` vector fed to the classifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEMO_MODELS", "DemoCNN", "DemoCNN1d", "DemoCNN2d"]

_LAYERS = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
}


class _Stage(nn.Module):
    """conv-BN-ReLU-conv-BN, then ReLU; returns (output, pre-activation)."""

    def __init__(self, dim: int, cin: int, cout: int) -> None:
        super().__init__()
        conv, bn, _ = _LAYERS[dim]
        self.conv1 = conv(cin, cout, 3, padding=1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.bn2 = bn(cout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(pre), pre


class DemoCNN(nn.Module):
    """A small CNN over 1-D signals or 2-D images with a configurable width.

    Args:
        num_classes: number of output classes.
        dim: 1 for signals ``(N, C_in, L)`` (a ``(N, L)`` input is read as one channel),
            2 for images ``(N, C_in, H, W)``.
        width: channels of the first stage; stage ``i`` has ``width * 2**i`` channels.
        num_stages: number of stages (each after the first halves the resolution).
        in_channels: input channels.
        stem_kernel: kernel size of the stem convolution.
        stem_stride: stride of the stem convolution (2 halves the resolution up front, which
            makes the image model four times cheaper).

    Returns from ``forward``: ``logits`` of shape ``(N, num_classes)`` and the feature dict.
    """

    def __init__(
        self,
        num_classes: int = 10,
        dim: int = 1,
        width: int = 32,
        num_stages: int = 3,
        in_channels: int = 1,
        stem_kernel: int = 5,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if dim not in _LAYERS:
            raise ValueError(f"dim must be 1 (signals) or 2 (images), got {dim}")
        for name, value in (
            ("num_classes", num_classes),
            ("width", width),
            ("num_stages", num_stages),
            ("in_channels", in_channels),
            ("stem_stride", stem_stride),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(stem_kernel, int) or stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be a positive odd int, got {stem_kernel!r}")
        conv, bn, pool = _LAYERS[dim]
        self.dim = dim
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            conv(
                in_channels,
                width,
                stem_kernel,
                stride=stem_stride,
                padding=stem_kernel // 2,
                bias=False,
            ),
            bn(width),
            nn.ReLU(inplace=True),
        )
        widths: Sequence[int] = [width * 2**i for i in range(num_stages)]
        cins = [width, *widths[:-1]]
        self.stages = nn.ModuleList(_Stage(dim, a, b) for a, b in zip(cins, widths, strict=True))
        self.pool = pool(2)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.dim == 1 and x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != self.dim + 2 or x.shape[1] != self.in_channels:
            layout = "(N, C, L)" if self.dim == 1 else "(N, C, H, W)"
            raise ValueError(
                f"{type(self).__name__} expects input of shape {layout} with C = "
                f"{self.in_channels}, got {tuple(x.shape)}"
            )
        h = self.stem(x)
        feats, preacts = [h], [h]
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = self.pool(h)
            h, pre = stage(h)
            feats.append(h)
            preacts.append(pre)
        pooled = h.flatten(2).mean(-1)
        logits = self.fc(pooled)
        return logits, {"feats": feats, "preact_feats": preacts, "pooled_feat": pooled}


class DemoCNN1d(DemoCNN):
    """:class:`DemoCNN` over 1-D signals (MNIST-1D: ``(N, 40)`` or ``(N, 1, 40)``)."""

    def __init__(self, num_classes: int = 10, width: int = 32, **kwargs) -> None:
        super().__init__(num_classes=num_classes, dim=1, width=width, **kwargs)


class DemoCNN2d(DemoCNN):
    """:class:`DemoCNN` over images (Fashion-MNIST: ``(N, 1, 28, 28)``).

    The stem is a stride-2 3x3 convolution, so the stages run at 14x14, 7x7 and 4x4.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, **kwargs) -> None:
        kwargs.setdefault("stem_kernel", 3)
        kwargs.setdefault("stem_stride", 2)
        super().__init__(num_classes=num_classes, dim=2, width=width, **kwargs)


# Registry names -> (class, keyword arguments); each is built as ``cls(num_classes=C, **kw)``.
# Parameter counts are for 10 classes.
DEMO_MODELS: dict[str, tuple[type[DemoCNN], dict]] = {
    "cnn1d_w16": (DemoCNN1d, {"width": 16}),  # MNIST-1D teacher, 25.8k parameters
    "cnn1d_w8": (DemoCNN1d, {"width": 8}),  # MNIST-1D student, 6.8k
    "cnn1d_w4": (DemoCNN1d, {"width": 4}),  # 1.8k
    "cnn2d_w16": (DemoCNN2d, {"width": 16}),  # Fashion-MNIST teacher, 75.0k
    "cnn2d_w8": (DemoCNN2d, {"width": 8}),  # 19.1k
    "cnn2d_w4": (DemoCNN2d, {"width": 4}),  # Fashion-MNIST student, 4.9k
}


def _register() -> None:
    from functools import partial

    from .registry import register_model

    for name, (cls, kw) in DEMO_MODELS.items():
        ctor = partial(_build, cls, kw)
        ctor.__name__ = name  # type: ignore[attr-defined]
        register_model(name, family="demo")(ctor)


def _build(cls: type[DemoCNN], preset: dict, num_classes: int = 10, **kwargs) -> DemoCNN:
    """``cls(num_classes, **preset)``; keyword arguments override the preset (e.g. width)."""
    return cls(num_classes=num_classes, **{**preset, **kwargs})


_register()
