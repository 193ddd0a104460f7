"""A small 1-D CNN for the engine tests, built by import path (``tiny_models:Tiny1d``), so it
never joins the zoo's registry."""

from __future__ import annotations

from torch import nn


class Tiny1d(nn.Module):
    """A small 1-D CNN (optionally without BatchNorm, for exact DDP comparisons)."""

    def __init__(self, num_classes: int = 10, width: int = 8, bn: bool = True):
        super().__init__()
        norm = nn.BatchNorm1d(width) if bn else nn.Identity()
        self.conv = nn.Sequential(nn.Conv1d(1, width, 5, padding=2), norm, nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        f = self.conv(x)
        pooled = f.mean(-1)
        return self.fc(pooled), {"feats": [f], "preact_feats": [f], "pooled_feat": pooled}
