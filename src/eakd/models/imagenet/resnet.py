"""ImageNet ResNets (He et al., 2016): ``imagenet_resnet18/34/50/101`` with torchvision's
``state_dict`` layout, so torchvision weight files (``resnet34-333f7ec4.pth``, ...) load unchanged.

7x7 stride-2 stem, 3x3 stride-2 max-pool, four stages (strides 1, 2, 2, 2; the bottleneck
stride sits on the 3x3 conv, "ResNet v1.5"), adaptive global pooling and ``fc``, so any input
size works. Keys: ``conv1``, ``bn1``, ``layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3]}``,
``layer{k}.0.downsample.{0,1}``, ``fc``.

Features (mdistiller's ImageNet layout): 5 entries [stem (before the max-pool, stride 2),
layer1 .. layer4] after ReLU; ``preact_feats`` before it (the stem entry is ``bn1``'s output);
``pooled_feat`` is 512-d (basic) or 2048-d (bottleneck).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, init_weights, run_stage
from ..registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)
        self.stride = stride

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
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
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * 4, stride)
        self.stride = stride

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.forward_preact(x))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class ResNet(FeatureModel):
    """torchvision-compatible ResNet with the distillation forward contract."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        stages = []
        for planes, n, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2), strict=True):
            layer = []
            for i in range(n):
                layer.append(block(cin, planes, stride if i == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.stage_channels = [64] + [p * block.expansion for p in (64, 128, 256, 512)]
        init_weights(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def _layers(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            pre = self.bn1(self.conv1(x))
            return F.relu(pre), pre
        if index == 1:
            x = self.maxpool(x)
        return run_stage(self._layers()[index - 1], x)

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(x)
        return self.fc(pooled), pooled

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.maxpool, *self._layers()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [layer[-1].last_bn() for layer in self._layers()]

    def get_classifier(self) -> nn.Linear:
        return self.fc


_CONFIGS = {
    "imagenet_resnet18": (BasicBlock, [2, 2, 2, 2]),
    "imagenet_resnet34": (BasicBlock, [3, 4, 6, 3]),
    "imagenet_resnet50": (Bottleneck, [3, 4, 6, 3]),
    "imagenet_resnet101": (Bottleneck, [3, 4, 23, 3]),
}


def _factory(name: str) -> None:
    block, blocks = _CONFIGS[name]

    def build(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
        return ResNet(block, blocks, num_classes, zero_init_residual)

    build.__name__ = name
    build.__doc__ = f"ImageNet ResNet ({block.__name__} x {blocks}), torchvision key layout."
    register_model(name, family="imagenet")(build)


for _name in _CONFIGS:
    _factory(_name)
