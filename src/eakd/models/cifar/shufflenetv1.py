"""ShuffleNet V1 for 32x32 inputs (Zhang et al., 2018; the CRD/mdistiller variant): ``ShuffleV1``
= 3 groups, stage outputs 240/480/960, blocks 4/8/4.

A 1x1 stem (3 -> 24, no pooling), three stages that each start with a stride-2 unit whose output
concatenates the branch with a 3x3 average-pooled shortcut, then stride-1 units that add it.
Units: grouped 1x1 (ungrouped when the input is the 24-channel stem) - BN - ReLU - channel
shuffle - 3x3 depthwise - BN - ReLU - grouped 1x1 - BN. Keys: ``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``linear``.

Features: [stem, layer1, layer2, layer3] after ReLU; ``preact_feats`` before the last unit's
ReLU (stem entry post-ReLU). ``get_stage_channels`` is [24, 240, 480, 960] (the reference code
has none); ``get_bn_before_relu`` raises: a stage's pre-activation is a sum or concatenation
with the shortcut, not the output of one BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, run_stage
from ..registry import register_model

__all__ = ["ShuffleNetV1", "ShuffleUnit", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, g*k, H, W) -> interleave the g groups: channel ``i*k + j`` moves to ``j*g + i``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = cout // 4
        # The stem has too few channels to split, so the first 1x1 is dense there.
        self.first_groups = 1 if cin == 24 else groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        return out + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.forward_preact(x))


class ShuffleNetV1(FeatureModel):
    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        layers = []
        for cout, n in zip(out_planes, num_blocks, strict=True):
            units = []
            for i in range(n):
                # The stride-2 unit concatenates its input, so its branch makes cout - cin.
                units.append(
                    ShuffleUnit(cin, cout - cin if i == 0 else cout, 2 if i == 0 else 1, groups)
                )
                cin = cout
            layers.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(out_planes[2], num_classes)
        self.stage_channels = [24, *out_planes]

    def _layers(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            x = F.relu(self.bn1(self.conv1(x)))
            return x, x
        return run_stage(self._layers()[index - 1], x)

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(x)
        return self.linear(pooled), pooled

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._layers()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError(
            "ShuffleV1 has no BatchNorm directly before its stage ReLUs (each pre-activation is "
            "a sum or concatenation with the shortcut), so BN-margin methods such as OFD cannot "
            "use it as a teacher; use it as a student or pick another teacher"
        )

    def get_classifier(self) -> nn.Linear:
        return self.linear


@register_model("ShuffleV1", family="cifar")
def shufflev1(num_classes: int = 100) -> ShuffleNetV1:
    """ShuffleNet V1, 3 groups, stage widths 240/480/960."""
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes)
