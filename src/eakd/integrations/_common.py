"""What the trainer integrations share: calls routed through a distributed wrapper's
``forward`` and the EA statistics they log (the ``lm_head`` helpers are
:mod:`eakd.losses.token.heads`, shared with the LLM engine)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.settings import EAStats

__all__ = [
    "METRICS",
    "redirect",
    "stat_means",
    "stat_sums",
]

#: The EA statistics both trainers log: the token mean (over the tokens that count) of the EA
#: weight and of the student and teacher entropies the weights are computed from.
METRICS = ("ea/mean_weight", "ea/student_entropy", "ea/teacher_entropy")


def redirect(
    wrapper: nn.Module, module: nn.Module, method: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``method(*args, **kwargs)`` run as the ``forward`` of ``wrapper`` (DDP, FSDP), which wraps
    ``module``.

    The chunked loss calls the backbone rather than the model, so the wrapper's ``forward`` would
    never run: DDP would not prepare its gradient reduction, FSDP would not gather the shards.
    Here ``module.forward`` is swapped for ``method`` for exactly one call of ``wrapper``.
    """
    if wrapper is module:
        return method(*args, **kwargs)
    # an instance attribute when Accelerate has wrapped it (autocast), else the class's method
    patched = module.__dict__.get("forward")

    def restore() -> None:
        if patched is not None:
            module.forward = patched
        else:
            module.__dict__.pop("forward", None)

    def forward(*a: Any, **kw: Any) -> Any:
        restore()  # before ``method``, which may call the real forward
        return method(*a, **kw)

    module.forward = forward
    try:
        return wrapper(*args, **kwargs)
    finally:
        restore()


def stat_sums(stats: EAStats) -> torch.Tensor:
    """``[sum w, sum H_S, sum H_T, n]`` over the items that count (float32, detached): sums, so
    that micro-batches and processes combine exactly."""
    w = stats.weights.detach().float()
    m = torch.ones_like(w) if stats.mask is None else stats.mask.to(w.device, torch.float32)
    hs = stats.student_entropy.detach().float()
    ht = stats.teacher_entropy.detach().float()
    return torch.stack([(w * m).sum(), (hs * m).sum(), (ht * m).sum(), m.sum()])


def stat_means(sums: torch.Tensor) -> dict[str, float]:
    """The :data:`METRICS` from :func:`stat_sums` (summed over steps / processes)."""
    total = sums.tolist()
    n = total[3]
    if n <= 0:
        return {}
    return {key: value / n for key, value in zip(METRICS, total[:3], strict=True)}
