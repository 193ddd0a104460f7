"""The forward contract every zoo model follows, and the small helpers the families share.

``logits, feats = model(x)`` where ``feats`` is a plain dict (the layout mdistiller's distillers
index, so their code and ours read the same features):

* ``feats["feats"]``: list of stage outputs, shallowest first (index 0 is the stem),
* ``feats["preact_feats"]``: the same stages before the stage's last ReLU,
* ``feats["pooled_feat"]``: the globally pooled vector the classifier reads, shape ``(N, D)``.

Besides ``forward``, each model can run one stage at a time (``forward_stage(i, x)`` returns
``feats["feats"][i]`` from ``feats["feats"][i - 1]``, or from the image when ``i == 0``) and the
head alone (``forward_head(x) -> (logits, pooled)`` from the last stage output). Feature methods
that splice two networks together stage by stage (FCFD's bridges) need exactly that.

Where FCFD's released models split a network differently from ``feats``, the model also has
``fcfd_stage(i, x)`` / ``fcfd_head(x)`` with FCFD's split, which FCFD uses instead: VGG and
MobileNetV2 stages end before their last ReLU (FCFD's ``beforerelu``), and MobileNetV2 and
ShuffleV2 run their final 1x1 conv in the last stage.
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FeatureModel",
    "Features",
    "check_num_classes",
    "global_pool",
    "init_weights",
    "run_stage",
]


class Features(TypedDict):
    """The feature dict returned next to the logits."""

    feats: list[torch.Tensor]
    preact_feats: list[torch.Tensor]
    pooled_feat: torch.Tensor


class FeatureModel(nn.Module):
    """Base class of the zoo: ``forward(x) -> (logits, Features)`` plus feature-method helpers.

    Subclasses implement :meth:`stage_with_preact` (one stage, returning its output and its
    pre-activation), :meth:`forward_head`, :meth:`get_stage_channels`, :meth:`get_feat_modules`
    and :meth:`get_bn_before_relu`; :meth:`forward` chains them. Subclasses whose pre-activation
    of a stage is only formed inside the next stage (wide ResNets) override :meth:`forward`.
    """

    num_classes: int

    def stage_with_preact(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run stage ``index`` on ``x``; return ``(output, pre-activation output)``."""
        raise NotImplementedError

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` on ``x`` (the image for stage 0, else the previous stage output)."""
        self._check_stage(index)
        return self.stage_with_preact(index, x)[0]

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the last stage output to ``(logits (N, C), pooled feature (N, D))``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Features]:
        """``x`` (N, 3, H, W) -> ``(logits (N, num_classes), Features)``."""
        feats: list[torch.Tensor] = []
        preacts: list[torch.Tensor] = []
        for i in range(self.num_stages):
            x, pre = self.stage_with_preact(i, x)
            feats.append(x)
            preacts.append(pre)
        logits, pooled = self.forward_head(x)
        return logits, {"feats": feats, "preact_feats": preacts, "pooled_feat": pooled}

    @property
    def num_stages(self) -> int:
        """Number of entries of ``feats["feats"]``."""
        return len(self.get_stage_channels())

    def get_stage_channels(self) -> list[int]:
        """Channel count of each entry of ``feats["feats"]`` (same length, same order)."""
        raise NotImplementedError

    def get_feat_modules(self) -> nn.ModuleList:
        """The feature-extracting modules in order (what RepDistiller-style methods re-use)."""
        raise NotImplementedError

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """One BatchNorm per entry of ``feats["feats"][1:]``: the BN whose output (plus the
        residual, where there is one) precedes that stage's final ReLU (used by OFD margins)."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        """The final linear layer (its weight has shape ``(num_classes, D)``)."""
        raise NotImplementedError

    def _check_stage(self, index: int) -> None:
        if not 0 <= index < self.num_stages:
            raise IndexError(
                f"{type(self).__name__} has stages 0..{self.num_stages - 1}, got stage {index}"
            )


def run_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a stage of blocks whose last block exposes ``forward_preact``.

    Every block but the last runs its normal (post-activation) forward; the last one returns its
    pre-activation, and the stage output is its ReLU. Running ``stage(x)`` gives the same output.
    """
    for block in stage[:-1]:
        x = block(x)
    pre = stage[-1].forward_preact(x)
    return F.relu(pre), pre


def init_weights(model: nn.Module, *, linear_std: float | None = None) -> None:
    """He-normal (fan-out) convolutions, BN at (1, 0); linear layers N(0, linear_std) with zero
    bias when ``linear_std`` is given, else PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling (N, C, H, W) -> (N, C).

    The reference CIFAR code pools with a fixed kernel sized for 32-pixel inputs (the final map is
    exactly that size there), so the result is the same at 32 px; any other input size also works.
    """
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes
