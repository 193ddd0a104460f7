"""Logit transforms applied before a temperature softmax."""

from __future__ import annotations

import torch

__all__ = ["standardize_logits"]


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7, dim: int = -1) -> torch.Tensor:
    r"""Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024): a per-item z-score over the classes.

    .. math:: \mathcal{Z}(z) = \frac{z - \bar z}{\operatorname{std}(z) + \epsilon}

    ``std`` is the unbiased (``C - 1``) standard deviation and ``eps`` is added to the std, as
    in the reference implementation. Computed in float32; differentiable.
    """
    z = logits.float()
    mean = z.mean(dim, keepdim=True)
    std = z.std(dim, keepdim=True, unbiased=True)
    return (z - mean) / (std + eps)
