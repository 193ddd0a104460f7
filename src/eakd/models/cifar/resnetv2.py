"""ImageNet-depth ResNets adapted to 32x32 inputs: ``ResNet18``, ``ResNet34``, ``ResNet50``,
``ResNet101`` (the CRD/mdistiller ``resnetv2`` models; ``ResNet50`` is a CIFAR-100 teacher and
``ResNet18`` the Tiny-ImageNet student).

A 3x3 stride-1 stem (no max-pool) and four stages of widths 64/128/256/512 (x4 for bottlenecks)
at strides 1, 2, 2, 2. Attribute names follow the reference code: ``conv1``, ``bn1``,
``layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3]}``, ``layer{k}.{i}.shortcut.{0,1}`` where
the shape changes, and a ``linear`` head.

Features: 5 entries, [stem, layer1..layer4]; ``preact_feats`` take each layer's output before
its final ReLU (the stem entry is the post-ReLU stem); ``pooled_feat`` has 512 (basic) or 2048
(bottleneck) dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, init_weights, run_stage
from ..registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "CifarResNetV2"]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    # An empty Sequential is the identity and holds no parameters, keeping the reference keys.
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.forward_preact(x))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.forward_preact(x))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class CifarResNetV2(FeatureModel):
    """ResNet with a 3x3 stem for small images; ``blocks`` per stage, basic or bottleneck."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: list[int],
        num_classes: int = 100,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for planes, n, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2), strict=True):
            layer = []
            for i in range(n):
                layer.append(block(cin, planes, stride if i == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self.stage_channels = [64] + [p * block.expansion for p in (64, 128, 256, 512)]
        init_weights(self)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as the identity
            # (Goyal et al., 2017).
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def _layers(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

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
        return [layer[-1].last_bn() for layer in self._layers()]

    def get_classifier(self) -> nn.Linear:
        return self.linear


_CONFIGS = {
    "ResNet18": (BasicBlock, [2, 2, 2, 2]),
    "ResNet34": (BasicBlock, [3, 4, 6, 3]),
    "ResNet50": (Bottleneck, [3, 4, 6, 3]),
    "ResNet101": (Bottleneck, [3, 4, 23, 3]),
}


def _factory(name: str) -> None:
    block, blocks = _CONFIGS[name]

    def build(num_classes: int = 100, zero_init_residual: bool = False) -> CifarResNetV2:
        return CifarResNetV2(block, blocks, num_classes, zero_init_residual)

    build.__name__ = name
    build.__doc__ = f"CIFAR {name}: 3x3 stem, {block.__name__} x {blocks}."
    register_model(name, family="cifar")(build)


for _name in _CONFIGS:
    _factory(_name)
