"""Small stage-wise networks following the zoo's contract, for fast feature-method tests."""

from __future__ import annotations

import torch
from torch import nn

from eakd.models.base import FeatureModel, global_pool


class TinyNet(FeatureModel):
    """Stages of conv3x3(stride) + BN (+ ReLU), a linear head on the pooled last stage.

    ``relu=False`` leaves the stage outputs linear (like MobileNetV2's bottlenecks)."""

    def __init__(
        self,
        channels=(4, 6, 8, 10),
        strides=(1, 1, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        relu: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.relu = relu
        self.channels = list(channels)
        cins = [in_channels, *channels[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(ci, co, 3, stride=s, padding=1, bias=False)
            for ci, co, s in zip(cins, channels, strides, strict=True)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in channels)
        self.fc = nn.Linear(channels[-1], num_classes)

    def stage_with_preact(self, index, x):
        pre = self.bns[index](self.convs[index](x))
        return (torch.relu(pre) if self.relu else pre), pre

    def forward_head(self, x):
        pooled = global_pool(x)
        return self.fc(pooled), pooled

    def get_stage_channels(self):
        return list(self.channels)
