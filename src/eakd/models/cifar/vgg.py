"""VGG with BatchNorm for 32x32 inputs (Simonyan & Zisserman, 2015, in the CRD/mdistiller form):
``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

Five blocks of 3x3 conv (with bias) - BN - ReLU, separated by 2x2 max-pools, then global
average pooling and a single ``classifier`` (512 -> C). Within a block the last ReLU is left out
of the Sequential (it is applied in the forward, so the block output is the pre-activation), so
the parameter indices are 0, 1, 3, 4, 6, 7, ...: ``block{0..4}.{idx}``.

Features: 5 entries [block0 .. block4] after their ReLU; ``preact_feats`` before it (the first
entry is the post-ReLU block0, as in mdistiller). As in the reference code, the max-pool between
block3 and block4 is only applied for 64-pixel inputs (Tiny-ImageNet), which keeps the last map
at 2x2 for both 32- and 64-pixel images; here the test is on block3's output size (8x8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool, init_weights
from ..registry import register_model

__all__ = ["CFGS", "VGG"]

CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [
        [64, 64],
        [128, 128],
        [256, 256, 256, 256],
        [512, 512, 512, 512],
        [512, 512, 512, 512],
    ],
}


def _make_block(widths: list[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True)]
        cin = w
    return nn.Sequential(*layers[:-1])


class VGG(FeatureModel):
    """VGG-BN from a 5-block width configuration (see :data:`CFGS`)."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 100) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"VGG config needs 5 blocks, got {len(cfg)}")
        self.num_classes = check_num_classes(num_classes)
        cins = [3] + [c[-1] for c in cfg[:-1]]
        self.block0 = _make_block(cfg[0], cins[0])
        self.block1 = _make_block(cfg[1], cins[1])
        self.block2 = _make_block(cfg[2], cins[2])
        self.block3 = _make_block(cfg[3], cins[3])
        self.block4 = _make_block(cfg[4], cins[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        self.stage_channels = [c[-1] for c in cfg]
        init_weights(self, linear_std=0.01)

    def _blocks(self) -> tuple[nn.Sequential, ...]:
        return (self.block0, self.block1, self.block2, self.block3, self.block4)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            x = F.relu(self.block0(x))
            return x, x
        if index < 4:
            x = (self.pool0, self.pool1, self.pool2)[index - 1](x)
        elif x.shape[-2] == 8:
            x = self.pool3(x)
        pre = self._blocks()[index](x)
        return F.relu(pre), pre

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(x)
        return self.classifier(pooled), pooled

    def fcfd_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """FCFD's split: each stage ends before its ReLU, which opens the next stage."""
        self._check_stage(index)
        if index == 0:
            return self.block0(x)
        return self.stage_with_preact(index, F.relu(x))[1]

    def fcfd_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(F.relu(x))

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        pools = (self.pool0, self.pool1, self.pool2, self.pool3, self.pool4)
        return nn.ModuleList([m for pair in zip(self._blocks(), pools, strict=True) for m in pair])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [block[-1] for block in self._blocks()[1:]]

    def get_classifier(self) -> nn.Linear:
        return self.classifier


def _factory(name: str) -> None:
    cfg = CFGS[name]

    def build(num_classes: int = 100) -> VGG:
        return VGG(cfg, num_classes=num_classes)

    build.__name__ = name
    build.__doc__ = f"{name} with BatchNorm (block widths {cfg})."
    register_model(name, family="cifar")(build)


for _name in CFGS:
    _factory(_name)
