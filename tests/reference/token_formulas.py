"""Plain float64 references written from the divergence formulas (no code shared with eakd)."""

from __future__ import annotations

import torch


def probs(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax(z.double() / temperature, dim=-1)


def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a_v log(a_v / b_v), with 0 log 0 = 0."""
    return torch.where(a > 0, a * (a.log() - b.log()), torch.zeros_like(a)).sum(-1)


def divergence(name: str, zs, zt, temperature=1.0, **prm) -> torch.Tensor:
    q, p = probs(zs, temperature), probs(zt, temperature)
    if name == "forward_kl":
        if prm.get("form", "kl") == "cross_entropy":
            return -(p * q.log()).sum(-1)
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "jsd":
        beta = prm.get("beta", 0.5)
        m = beta * p + (1 - beta) * q
        if prm.get("weighting", "interpolate") == "gkd":
            return beta * kl(p, m) + (1 - beta) * kl(q, m)
        return (1 - beta) * kl(p, m) + beta * kl(q, m)
    if name == "skew_kl":
        a = prm.get("alpha", 0.1)
        m = a * p + (1 - a) * q
        if prm.get("form", "kl") == "cross_entropy":
            return -(p * m.log()).sum(-1)
        return kl(p, m)
    if name == "skew_reverse_kl":
        a = prm.get("alpha", 0.1)
        return kl(q, (1 - a) * p + a * q)
    raise KeyError(name)


def entropy(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    p = probs(z, temperature)
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)


def ea_weight(hs, ht, h_ub):
    return 0.5 * ht * (1 + hs / h_ub)
