"""A small 1-D CNN for the engine tests, built by import path (``tiny_models:Tiny1d``), so it
never joins the zoo's registry, and the tiny MNIST-1D experiment config the engine and analysis
tests start from."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def tiny_config(root: Path, cache: Path, name: str = "run", **sections) -> dict:
    """A 2-epoch KD run of Tiny1d (width 8) -> Tiny1d (width 8) on 500 MNIST-1D samples under
    ``root/runs``; each keyword replaces keys of that config section (or the whole value)."""
    cfg = {
        "name": name,
        "output_dir": str(root / "runs"),
        "student": {"name": "tiny_models:Tiny1d", "kwargs": {"width": 8}},
        "teacher": {"name": "tiny_models:Tiny1d", "kwargs": {"width": 8}},
        "data": {
            "name": "mnist1d",
            "root": str(cache),
            "batch_size": 25,
            "test_batch_size": 200,
            "num_workers": 0,
            "augment": "none",
            "options": {"num_samples": 500},
        },
        "method": {"name": "kd", "ce_weight": 0.5, "kd_weight": 0.5},
        "ea": {"enabled": False},
        "optim": {"lr": 0.3, "schedule": "cosine", "milestones": []},
        "train": {"epochs": 2, "progress": False, "threads": 1},
        "log": {"tensorboard": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


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
