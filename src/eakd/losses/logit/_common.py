"""Differentiable per-row helpers for the autograd paths (tensor temperatures, MLD, TTM)."""

from __future__ import annotations

import torch

__all__ = ["as_rows", "kl_rows", "log_softmax_t"]


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``(..., C) -> (N, C)`` contiguous view/copy."""
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])


def log_softmax_t(z: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """``log softmax(z / T)`` in float32; ``T`` may be a tensor that requires grad."""
    return torch.log_softmax(z.float() / temperature, dim=-1)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` per row from finite log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)
