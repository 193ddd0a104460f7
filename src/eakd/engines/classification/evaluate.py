"""Evaluation: top-1 / top-5 accuracy and the mean cross-entropy, reduced across ranks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.entropy import entropy
from ...objectives import logits_of
from ..run import autocast
from ..utils import DistContext

__all__ = ["accuracy_counts", "evaluate"]


def accuracy_counts(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at C)."""
    maxk = min(max(ks), logits.shape[-1])
    top = logits.topk(maxk, dim=-1).indices
    hit = top.eq(target.unsqueeze(-1))
    return [int(hit[:, : min(k, maxk)].any(-1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    dist: DistContext | None = None,
    amp_dtype: torch.dtype | None = None,
    entropy_temperature: float | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 (%) and mean CE over ``loader``; with ``entropy_temperature`` also the
    per-sample entropies of the predictions (this rank's samples, in loader order)."""
    dist = dist or DistContext()
    was_training = model.training
    model.eval()
    n = correct1 = correct5 = 0
    ce_sum = 0.0
    entropies = []
    for batch in loader:
        x, y = batch[0].to(device, non_blocking=True), batch[-1].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = logits_of(model(x)).float()
        c1, c5 = accuracy_counts(logits, y)
        correct1 += c1
        correct5 += c5
        ce_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        n += y.numel()
        if entropy_temperature is not None:
            entropies.append(entropy(logits, entropy_temperature).cpu())
    model.train(was_training)
    n, correct1, correct5, ce_sum = dist.all_reduce_sum([n, correct1, correct5, ce_sum], device)
    out: dict[str, Any] = {
        "top1": 100.0 * correct1 / max(n, 1),
        "top5": 100.0 * correct5 / max(n, 1),
        "loss": ce_sum / max(n, 1),
        "count": int(n),
    }
    if entropy_temperature is not None:
        out["entropies"] = torch.cat(entropies) if entropies else torch.empty(0)
    return out
