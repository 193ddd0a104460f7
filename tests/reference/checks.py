"""What the reference tests share: seeded logit pairs and the value-and-gradient comparison."""

from __future__ import annotations

import torch

SHAPES = [(5, 3), (3, 7, 101), (64, 10)]
TEMPS = [1.0, 2.0, 4.0]


def pair(shape, scale=3.0, seed=0):
    """Student logits (requiring grad), teacher logits and class targets of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(*shape, generator=g) * scale).requires_grad_(True)
    t = torch.randn(*shape, generator=g) * scale
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return s, t, y


def check(ours, reference, s, atol=1e-5, rtol=1e-4):
    """Compare values, then gradients of a random projection of the per-item outputs."""
    torch.testing.assert_close(ours.double(), reference, atol=atol, rtol=rtol)
    proj = torch.randn(ours.shape, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours.double() * proj).sum(), s)
    (g_ref,) = torch.autograd.grad((reference * proj).sum(), s)
    torch.testing.assert_close(g_ours.double(), g_ref.double(), atol=atol, rtol=rtol)
