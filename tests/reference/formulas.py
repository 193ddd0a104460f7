"""Plain-formula references, written from the papers' formulas in float64 with no tricks.

Each takes float tensors and returns float64 results; gradients flow through them so tests can
compare both values and gradients with the library.
"""

from __future__ import annotations

import math

import torch


def softmax(z, t=1.0):
    return torch.softmax(z.double() / t, dim=-1)


def log_softmax(z, t=1.0):
    return torch.log_softmax(z.double() / t, dim=-1)


def entropy(z, t=1.0):
    p = softmax(z, t)
    logp = log_softmax(z, t)
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)


def kl(p, logp, logq):
    """KL(p || q) over the last dim, 0 * log 0 = 0."""
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def ea_weight(zs, zt, t=3.0, h_ub=None, kind="ea"):
    h_ub = math.log(zs.shape[-1]) if h_ub is None else h_ub
    hs, ht = entropy(zs, t), entropy(zt, t)
    return {
        "ea": 0.5 * ht * (1 + hs / h_ub),
        "base": ht,
        "interact": ht * hs / h_ub,
        "student": hs,
        "inverse_teacher": h_ub - ht,
        "inverse_student": h_ub - hs,
        "none": torch.ones_like(ht),
    }[kind]


def kd(zs, zt, t=4.0):
    return t * t * kl(softmax(zt, t), log_softmax(zt, t), log_softmax(zs, t))


def dkd(zs, zt, y, alpha=1.0, beta=8.0, t=4.0):
    """DKD from its definition: binary target/non-target KL plus KL over non-target classes."""
    ps, pt = softmax(zs, t), softmax(zt, t)
    onehot = torch.nn.functional.one_hot(y, zs.shape[-1]).bool()
    bs = torch.stack([ps[onehot], (ps * ~onehot).sum(-1)], -1)
    bt = torch.stack([pt[onehot], (pt * ~onehot).sum(-1)], -1)
    tckd = kl(bt, torch.log(bt), torch.log(bs))
    n, c = zs.shape
    rest_s = zs.double()[~onehot].view(n, c - 1)
    rest_t = zt.double()[~onehot].view(n, c - 1)
    nckd = kl(softmax(rest_t, t), log_softmax(rest_t, t), log_softmax(rest_s, t))
    return t * t * (alpha * tckd + beta * nckd)


def standardize(z, eps=1e-7):
    z = z.double()
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True, unbiased=True) + eps)


def mld_instance(zs, zt, temps=(4.0, 3.0, 5.0, 2.0, 6.0)):
    return sum(kd(zs, zt, t) for t in temps)


def mld_masks(zt):
    p = softmax(zt, 1.0)
    conf, mass = p.max(-1).values, p.sum(0)
    return (conf <= torch.quantile(conf, 0.5)).double(), (
        mass <= torch.quantile(mass, 0.5)
    ).double()


def mld_class(zs, zt, temps=(4.0, 3.0, 5.0, 2.0, 6.0)):
    out = 0.0
    for t in temps:
        ps, pt = softmax(zs, t), softmax(zt, t)
        out = out + ((pt.T @ pt - ps.T @ ps) ** 2).sum() / zs.shape[1]
    return out


def mld_batch(zs, zt, temps=(4.0, 3.0, 5.0, 2.0, 6.0)):
    out = 0.0
    for t in temps:
        ps, pt = softmax(zs, t), softmax(zt, t)
        out = out + ((pt @ pt.T - ps @ ps.T) ** 2).sum() / zs.shape[0]
    return out


def ttm(zs, zt, gamma=0.1, weighted=False):
    p = softmax(zt, 1.0)
    powered = p**gamma
    u = powered.sum(-1)
    pt = powered / u.unsqueeze(-1)
    out = kl(pt, torch.log(pt), log_softmax(zs, 1.0))
    return out * u if weighted else out
