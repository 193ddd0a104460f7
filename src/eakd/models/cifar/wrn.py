"""Wide ResNets (Zagoruyko & Komodakis, 2016) for 32x32 inputs: ``wrn_D_W`` = WRN-D-W.

Pre-activation blocks (BN-ReLU-conv-BN-ReLU-conv), ``n = (D - 4) / 6`` blocks per stage, stage
widths ``[16, 16W, 32W, 64W]``. Attribute names follow the reference code so checkpoints load
unchanged: ``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2}``,
``block{k}.layer.0.convShortcut`` (only where the width changes), a final ``bn1`` and ``fc``.

Features: ``feats`` = [conv1, block1, block2, block3] outputs (pre-activation network: these
are raw residual sums, not ReLU outputs); ``preact_feats`` = [conv1 output, then each stage
output passed through the BatchNorm that follows it: ``block2.layer[0].bn1``,
``block3.layer[0].bn1`` and the final ``bn1``]; ``pooled_feat`` = pooled ReLU(bn1(block3)).

A note on reproducing mdistiller numbers: mdistiller's forward builds those three pre-activations
by calling the three BatchNorms a second time on the same tensors. The values are identical, but
in training mode each of those BNs then updates its running statistics twice per step (running
mean/var move by ``1 - (1 - m)^2`` instead of ``m`` towards the batch statistics, and
``num_batches_tracked`` grows by 2), which changes the evaluated model slightly. By default this
model calls each BN once and re-uses its output; ``double_bn_update=True`` reproduces the
reference behaviour exactly (use it to match published wrn_16_2 / wrn_40_1 student numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import FeatureModel, Features, check_num_classes, global_pool, init_weights
from ..registry import register_model

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation residual block; a 1x1 projection (``convShortcut``) when widths differ."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = cin == cout
        self.convShortcut: nn.Conv2d | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward_with_input_bn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(block output, bn1(x))``; ``bn1(x)`` is the previous stage's pre-activation."""
        pre = self.bn1(x)
        act = F.relu(pre)
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # With a projection, the shortcut reads the activated input (as in the reference code).
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_input_bn(x)[0]


class NetworkBlock(nn.Module):
    """One stage: ``layer`` is a Sequential of :class:`WideBasicBlock` (reference key name)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            )
        )

    def forward_with_input_bn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, pre = self.layer[0].forward_with_input_bn(x)
        for block in self.layer[1:]:
            x = block(x)
        return x, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(FeatureModel):
    """WRN-``depth``-``widen_factor``; see the module docstring for ``double_bn_update``."""

    def __init__(
        self,
        depth: int,
        widen_factor: int = 1,
        num_classes: int = 100,
        drop_rate: float = 0.0,
        double_bn_update: bool = False,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = check_num_classes(num_classes)
        self.double_bn_update = double_bn_update
        self.stage_channels = w
        self.conv1 = nn.Conv2d(3, w[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, w[0], w[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, w[1], w[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, w[2], w[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[3], num_classes)
        init_weights(self)
        nn.init.zeros_(self.fc.bias)

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        self._check_stage(index)
        return (self.conv1, self.block1, self.block2, self.block3)[index](x)

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(F.relu(self.bn1(x)))
        return self.fc(pooled), pooled

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Features]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2, f1_pre = self.block2.forward_with_input_bn(f1)
        f3, f2_pre = self.block3.forward_with_input_bn(f2)
        f3_pre = self.bn1(f3)
        pooled = global_pool(F.relu(f3_pre))
        logits = self.fc(pooled)
        if self.double_bn_update:
            # Second calls as in mdistiller: same values, extra running-statistics updates.
            f1_pre = self.block2.layer[0].bn1(f1)
            f2_pre = self.block3.layer[0].bn1(f2)
            f3_pre = self.bn1(f3)
        return logits, {
            "feats": [f0, f1, f2, f3],
            "preact_feats": [f0, f1_pre, f2_pre, f3_pre],
            "pooled_feat": pooled,
        }

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def get_classifier(self) -> nn.Linear:
        return self.fc


def _factory(depth: int, width: int) -> None:
    name = f"wrn_{depth}_{width}"

    def build(
        num_classes: int = 100, drop_rate: float = 0.0, double_bn_update: bool = False
    ) -> WideResNet:
        return WideResNet(depth, width, num_classes, drop_rate, double_bn_update)

    build.__name__ = name
    build.__doc__ = f"WRN-{depth}-{width} for 32x32 inputs."
    register_model(name, family="cifar")(build)


for _depth, _width in ((16, 1), (16, 2), (16, 4), (28, 2), (28, 4), (40, 1), (40, 2)):
    _factory(_depth, _width)
