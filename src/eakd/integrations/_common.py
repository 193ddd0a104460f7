"""What the trainer integrations share: the ``lm_head`` of a causal LM as the chunked loss sees
it, calls routed through a distributed wrapper's ``forward``, and the EA statistics they log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.settings import EAStats

__all__ = [
    "METRICS",
    "check_head",
    "chunked_head",
    "logit_scale",
    "redirect",
    "stat_means",
    "stat_sums",
]

#: The EA statistics both trainers log: the token mean (over the tokens that count) of the EA
#: weight and of the student and teacher entropies the weights are computed from.
METRICS = ("ea/mean_weight", "ea/student_entropy", "ea/teacher_entropy")


def _text_config(model: nn.Module) -> Any:
    cfg = getattr(model, "config", None)
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def logit_scale(model: nn.Module) -> float:
    """The factor a model applies to ``lm_head`` outputs before the softmax, read from its
    config as TRL reads it: ``logit_scale`` (Cohere), ``output_multiplier``,
    ``lm_head_multiplier`` (Falcon-H1), or ``1 / logits_scaling`` (Granite, MiniCPM3;
    HyperCLOVA X multiplies by it). 1 when none is set."""
    cfg = _text_config(model)
    scale = getattr(cfg, "logit_scale", None)
    if scale is None:
        scale = getattr(cfg, "output_multiplier", None)
    if scale is None:
        scale = getattr(cfg, "lm_head_multiplier", None)
    if scale is None and getattr(cfg, "logits_scaling", None) is not None:
        ls = cfg.logits_scaling
        scale = ls if getattr(cfg, "model_type", None) == "hyperclovax" else 1.0 / ls
    return 1.0 if scale is None else float(scale)


def check_head(model: nn.Module, who: str, hint: str) -> nn.Module:
    """The output embedding of a model whose logits the chunked loss can form from its hidden
    states: ``lm_head(h)``, times a constant. Logit soft-capping (``c tanh(z / c)``, Gemma 2/3)
    is not linear in ``h`` and is refused; ``hint`` names the alternative."""
    cap = getattr(_text_config(model), "final_logit_softcapping", None)
    if cap is not None:
        raise ValueError(
            f"the {who} soft-caps its logits (final_logit_softcapping={cap}), which the chunked "
            f"loss does not reproduce; {hint}"
        )
    head = model.get_output_embeddings()
    if not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise ValueError(f"the {who} ({type(model).__name__}) exposes no lm_head weight")
    return head


def chunked_head(
    model: nn.Module, hidden: torch.Tensor, who: str, hint: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(hidden, weight, bias)`` such that ``hidden @ weight.T + bias`` are the model's logits.

    A logit scale ``s`` is folded into the hidden states and the bias (``s (h W^T + b) =
    (s h) W^T + s b``), which keeps the gradients exact; see :func:`check_head` for what is
    refused.
    """
    head = check_head(model, who, hint)
    weight = head.weight
    bias = getattr(head, "bias", None)
    scale = logit_scale(model)
    if scale != 1.0:
        hidden = hidden * scale
        bias = bias * scale if bias is not None else None
    return hidden, weight, bias


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
