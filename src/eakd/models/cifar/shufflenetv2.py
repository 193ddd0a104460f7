"""ShuffleNet V2 for 32x32 inputs (Ma et al., 2018; the CRD/mdistiller variant): ``ShuffleV2`` =
net size 1 (stage widths 116/232/464, blocks 3/7/3, 1024-channel last conv).

A 1x1 stem (3 -> 24, no pooling); each stage is a stride-2 ``DownBlock`` (two branches,
concatenated and shuffled) followed by ``n`` ``BasicBlock`` units that split the channels in
half, transform one half (1x1 - BN - ReLU - 3x3 depthwise - BN - 1x1 - BN - ReLU), concatenate
and shuffle. Keys: ``conv1``, ``bn1``, ``layer{k}.0.{conv1..conv5,bn1..bn5}``,
``layer{k}.{i>=1}.{conv1..conv3,bn1..bn3}``, ``conv2``, ``bn2``, ``linear``.

Features: [stem, layer1, layer2, layer3]; ``pooled_feat`` is the 1024-d pooled ReLU(bn2(conv2)).
``preact_feats`` of a stage is its last unit before the ReLU, *shuffled like the output*, so that
``feats == relu(preact_feats)`` channel by channel (mdistiller returns the pre-activation before
the shuffle, a fixed channel permutation of this one; no parameter depends on it).
``get_bn_before_relu`` raises: the pre-activation half-passes through the split, so no single
BatchNorm precedes the stage ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, run_stage
from ..registry import register_model
from .shufflenetv1 import channel_shuffle

__all__ = ["CONFIGS", "DownBlock", "ShuffleNetV2", "ShuffleV2Unit"]

CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


def _dw(c: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False)


def _pw(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


class ShuffleV2Unit(nn.Module):
    """Stride-1 unit: split the channels, transform the second half, concatenate and shuffle."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.half = cin // 2
        self.conv1 = _pw(self.half, self.half)
        self.bn1 = nn.BatchNorm2d(self.half)
        self.conv2 = _dw(self.half, 1)
        self.bn2 = nn.BatchNorm2d(self.half)
        self.conv3 = _pw(self.half, self.half)
        self.bn3 = nn.BatchNorm2d(self.half)

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        keep, branch = x[:, : self.half], x[:, self.half :]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        # The kept half is already non-negative (a ReLU output), so relu() of this is the output.
        return channel_shuffle(torch.cat([keep, out], 1), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, branch = x[:, : self.half], x[:, self.half :]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([keep, out], 1), 2)


class DownBlock(nn.Module):
    """Stride-2 unit: left = dw3x3 - BN - 1x1 - BN - ReLU, right = 1x1 - BN - ReLU - dw3x3 - BN -
    1x1 - BN - ReLU; concatenated (``cout // 2`` channels each) and shuffled."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.conv1 = _dw(cin, 2)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = _pw(cin, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _pw(cin, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _dw(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _pw(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(FeatureModel):
    def __init__(self, net_size: float = 1, num_classes: int = 100) -> None:
        super().__init__()
        if net_size not in CONFIGS:
            raise ValueError(
                f"unknown ShuffleNetV2 net_size {net_size!r}; valid: {sorted(CONFIGS)}"
            )
        out_channels, num_blocks = CONFIGS[net_size]
        self.num_classes = check_num_classes(num_classes)
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        layers = []
        for cout, n in zip(out_channels[:3], num_blocks, strict=True):
            layers.append(
                nn.Sequential(DownBlock(cin, cout), *(ShuffleV2Unit(cout) for _ in range(n)))
            )
            cin = cout
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2 = _pw(out_channels[2], out_channels[3])
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.stage_channels = [24, *out_channels[:3]]

    def _layers(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            x = F.relu(self.bn1(self.conv1(x)))
            return x, x
        return run_stage(self._layers()[index - 1], x)

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(F.relu(self.bn2(self.conv2(x))))
        return self.linear(pooled), pooled

    def fcfd_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """FCFD's split: the last stage runs the final 1x1 conv + BN + ReLU."""
        x = self.forward_stage(index, x)
        return F.relu(self.bn2(self.conv2(x))) if index == self.num_stages - 1 else x

    def fcfd_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(x)
        return self.linear(pooled), pooled

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._layers()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError(
            "ShuffleV2 has no BatchNorm directly before its stage ReLUs (half of each "
            "pre-activation bypasses the unit through the channel split), so BN-margin methods "
            "such as OFD cannot use it as a teacher; use it as a student or pick another teacher"
        )

    def get_classifier(self) -> nn.Linear:
        return self.linear


@register_model("ShuffleV2", family="cifar")
def shufflev2(num_classes: int = 100, net_size: float = 1) -> ShuffleNetV2:
    """ShuffleNet V2 (net size 1 by default: widths 116/232/464, 1024-d head)."""
    return ShuffleNetV2(net_size, num_classes)
