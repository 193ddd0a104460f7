"""CIFAR ResNets (He et al., 2016, section 4.2): ``resnet8`` ... ``resnet110``, ``resnet8x4``,
``resnet32x4``.

Three stages of ``n = (depth - 2) / 6`` basic blocks on 32x32 inputs; widths ``[16, 16, 32, 64]``
or ``[32, 64, 128, 256]`` for the ``x4`` variants (the CRD benchmark's teacher/student pair
resnet32x4 -> resnet8x4). Attribute names follow the CRD/mdistiller code so checkpoints load
unchanged: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``,
``layer{k}.0.downsample.{0,1}`` where the shape changes, ``fc``.

Features: ``feats`` = [stem, layer1, layer2, layer3] (post-ReLU), ``preact_feats`` the same with
each layer's output taken before its final ReLU (the stem entry is the post-ReLU stem, as in
mdistiller), ``pooled_feat`` the 8x8 global average (dim ``widths[3]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, init_weights, run_stage
from ..registry import register_model

__all__ = ["BasicBlock", "CifarResNet"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.forward_preact(x))


class CifarResNet(FeatureModel):
    """ResNet-``depth`` for 32x32 inputs with stage widths ``widths`` (stem, stage 1, 2, 3)."""

    def __init__(self, depth: int, widths: list[int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries (stem + 3 stages), got {widths}")
        n = (depth - 2) // 6
        self.num_classes = check_num_classes(num_classes)
        self.stage_channels = list(widths)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], widths[1], n, stride=1)
        self.layer2 = self._make_layer(widths[1], widths[2], n, stride=2)
        self.layer3 = self._make_layer(widths[2], widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    @staticmethod
    def _make_layer(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(cin, cout, stride)]
        layers += [BasicBlock(cout, cout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            x = F.relu(self.bn1(self.conv1(x)))
            return x, x
        return run_stage((self.layer1, self.layer2, self.layer3)[index - 1], x)

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(x)
        return self.fc(pooled), pooled

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList(
            [self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3]
        )

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [layer[-1].bn2 for layer in (self.layer1, self.layer2, self.layer3)]

    def get_classifier(self) -> nn.Linear:
        return self.fc


_SMALL = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]


def _factory(name: str, depth: int, widths: list[int]) -> None:
    def build(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes=num_classes)

    build.__name__ = name
    build.__doc__ = f"CIFAR ResNet-{depth}, stage widths {widths}."
    register_model(name, family="cifar")(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _factory(f"resnet{_depth}", _depth, _SMALL)
_factory("resnet8x4", 8, _WIDE)
_factory("resnet32x4", 32, _WIDE)
