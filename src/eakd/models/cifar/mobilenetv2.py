"""MobileNetV2 for 32x32 inputs (Sandler et al., 2018; the RCO/CRD/mdistiller variant):
``MobileNetV2`` = width 0.5, expansion 6 (RepDistiller's ``mobile_half``).

A stride-2 3x3 stem, seven inverted-residual groups ``(t, c, n, s)`` = (1,16,1,1), (T,24,2,1),
(T,32,3,2), (T,64,4,2), (T,96,3,1), (T,160,3,2), (T,320,1,1) with channels scaled by the width
(truncated, not rounded to 8), a 1x1 conv to 1280 and a linear classifier. Unlike torchvision,
the expansion-1 group still has its 1x1 expansion conv, so every block's ``conv`` holds 8
modules. Keys: ``conv1.{0,1}``, ``blocks.{g}.{j}.conv.{0,1,3,4,6,7}``, ``conv2.{0,1}``,
``classifier.0``.

Features: 5 entries [stem, after group 1 (24w), group 2 (32w), group 4 (96w), group 6 (320w)].
The groups end in a linear (no-ReLU) projection, so ``preact_feats`` equal ``feats`` (the
reference code leaves ``preact_feats`` out; it is provided here so every model has it).
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, init_weights
from ..registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2"]


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - BN - ReLU - 3x3 depthwise - BN - ReLU - 1x1 project - BN (+ input)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = cin * expand_ratio
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(FeatureModel):
    """CIFAR MobileNetV2 with expansion ``expansion`` and channel multiplier ``width_mult``."""

    # Groups whose outputs are feature stages 1..4.
    _STAGE_ENDS = (1, 2, 4, 6)

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        settings = [
            (1, 16, 1, 1),
            (expansion, 24, 2, 1),
            (expansion, 32, 3, 2),
            (expansion, 64, 4, 2),
            (expansion, 96, 3, 1),
            (expansion, 160, 3, 2),
            (expansion, 320, 1, 1),
        ]
        cin = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, cin, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in settings:
            cout = int(c * width_mult)
            group = []
            for i in range(n):
                group.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
            self.blocks.append(nn.Sequential(*group))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(cin, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.stage_channels = [int(c * width_mult) for c in (32, 24, 32, 96, 320)]
        init_weights(self, linear_std=0.01)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            x = self.conv1(x)
        else:
            first = self._STAGE_ENDS[index - 2] + 1 if index > 1 else 0
            for g in range(first, self._STAGE_ENDS[index - 1] + 1):
                x = self.blocks[g](x)
        return x, x

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(self.conv2(x))
        return self.classifier(pooled), pooled

    def fcfd_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """FCFD's split: the stem ends before its ReLU (which opens stage 1), and the last
        stage runs the final 1x1 conv + BN, also before its ReLU."""
        self._check_stage(index)
        if index == 0:
            return self.conv1[1](self.conv1[0](x))
        x = self.stage_with_preact(index, torch.relu(x) if index == 1 else x)[0]
        if index == self.num_stages - 1:
            x = self.conv2[1](self.conv2[0](x))
        return x

    def fcfd_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(torch.relu(x))
        return self.classifier(pooled), pooled

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.blocks[g][-1].conv[-1] for g in self._STAGE_ENDS]

    def get_classifier(self) -> nn.Linear:
        return self.classifier[0]


@register_model("MobileNetV2", family="cifar")
def mobilenetv2_cifar(
    num_classes: int = 100, expansion: int = 6, width_mult: float = 0.5
) -> MobileNetV2:
    """CIFAR MobileNetV2, width 0.5 and expansion 6 by default (``mobile_half``)."""
    return MobileNetV2(expansion, width_mult, num_classes)
