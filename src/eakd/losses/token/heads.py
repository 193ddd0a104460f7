"""The ``lm_head`` of a causal LM as the chunked loss sees it: logits must be
``scale * (h W^T + b)`` of the final hidden states ``h``. Used by the LLM engine and by the
trainer integrations; models are duck-typed (a ``config`` and ``get_output_embeddings()``), so
nothing here imports ``transformers``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["check_head", "chunked_head", "logit_scale"]


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
