"""ImageNet MobileNetV2 (Sandler et al., 2018): ``imagenet_mobilenet_v2`` with torchvision's
``state_dict`` layout, so torchvision weight files load unchanged.

Channels are rounded to multiples of 8; blocks use ReLU6; the expansion-1 block has no expansion
conv. Keys: ``features.0.{0,1}`` (stem), ``features.{1..17}.conv.*`` (inverted residuals),
``features.18.{0,1}`` (1x1 conv to 1280), ``classifier.1`` (after a dropout).

Features: 5 entries, grouped like the CIFAR variant: [stem (32 ch, stride 2), end of the 24-ch
group (stride 4), 32-ch (stride 8), 96-ch (stride 16), 320-ch (stride 32)]. Inverted residuals
end in a linear projection, so ``preact_feats`` equal ``feats`` except for the stem, whose
pre-activation is its BatchNorm output. ``pooled_feat`` is the 1280-d pooled last conv.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import FeatureModel, check_num_classes, global_pool
from ..registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "make_divisible"]

# (expansion t, channels c, repeats n, first stride s) per group.
_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
# Groups whose outputs are feature stages 1..4.
_STAGE_GROUPS = (1, 2, 4, 6)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv - BN - ReLU6 (keys ``0`` and ``1``, like torchvision's ``Conv2dNormActivation``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(cin * expand_ratio)
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(FeatureModel):
    """torchvision-compatible MobileNetV2 with the distillation forward contract."""

    def __init__(
        self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        cin = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        # Index into ``features`` of each stage's last module (stage 0 is the stem).
        self._stage_ends = [0]
        stage_channels = [cin]
        for g, (t, c, n, s) in enumerate(_SETTINGS):
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
            if g in _STAGE_GROUPS:
                self._stage_ends.append(len(features) - 1)
                stage_channels.append(cout)
        features.append(ConvBNReLU6(cin, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes)
        )
        self.stage_channels = stage_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0:
            stem = self.features[0]
            pre = stem[1](stem[0](x))
            return stem[2](pre.clone()), pre
        for i in range(self._stage_ends[index - 1] + 1, self._stage_ends[index] + 1):
            x = self.features[i](x)
        return x, x

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = global_pool(self.features[-1](x))
        return self.classifier(pooled), pooled

    def get_stage_channels(self) -> list[int]:
        return list(self.stage_channels)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.features])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.features[i].conv[-1] for i in self._stage_ends[1:]]

    def get_classifier(self) -> nn.Linear:
        return self.classifier[-1]


@register_model("imagenet_mobilenet_v2", family="imagenet")
def imagenet_mobilenet_v2(
    num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV2:
    """MobileNetV2 for ImageNet-size inputs, torchvision key layout."""
    return MobileNetV2(num_classes, width_mult, dropout)
