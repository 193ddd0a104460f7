"""The EA weight and the ablation variants of the paper (Tables 1 and 9)."""

from __future__ import annotations

import math

import torch

from .entropy import entropy
from .validation import check_pair

__all__ = [
    "WEIGHT_KINDS",
    "ea_weights",
    "resolve_max_entropy",
    "segment_means",
    "sequence_means",
    "weights_from_entropies",
]

#: ``kind`` -> formula, with ``Ht``/``Hs`` the teacher/student entropies at ``T'``.
WEIGHT_KINDS: dict[str, str] = {
    "ea": "0.5 * Ht * (1 + Hs / H_ub)",
    "base": "Ht",
    "interact": "Ht * Hs / H_ub",
    "student": "Hs",
    "inverse_teacher": "H_ub - Ht",
    "inverse_student": "H_ub - Hs",
    "none": "1",
}


def resolve_max_entropy(max_entropy: float | None, num_classes: int) -> float:
    """``H_ub``: ``log C`` when ``None``, else the given positive float."""
    if max_entropy is None:
        return math.log(num_classes)
    if isinstance(max_entropy, bool) or not isinstance(max_entropy, (int, float)):
        raise TypeError(f"max_entropy must be a float or None, got {type(max_entropy).__name__}")
    if not max_entropy > 0:
        raise ValueError(f"max_entropy must be > 0 (log C by default), got {max_entropy}")
    return float(max_entropy)


def _detached_float(h: torch.Tensor) -> torch.Tensor:
    return h if h.dtype == torch.float32 and not h.requires_grad else h.detach().float()


def weights_from_entropies(
    student_entropy: torch.Tensor,
    teacher_entropy: torch.Tensor,
    max_entropy: float,
    kind: str = "ea",
) -> torch.Tensor:
    """Combine per-item entropies into detached weights; see :data:`WEIGHT_KINDS`."""
    hs, ht = _detached_float(student_entropy), _detached_float(teacher_entropy)
    h_ub = float(max_entropy)
    if kind == "ea":  # 0.5 Ht + (0.5 / H_ub) Ht Hs, in two ops
        return torch.addcmul(ht * 0.5, ht, hs, value=0.5 / h_ub)
    if kind == "base":
        return ht.clone()
    if kind == "interact":
        return ht * hs / h_ub
    if kind == "student":
        return hs.clone()
    if kind == "inverse_teacher":
        return (h_ub - ht).clamp_min(0.0)
    if kind == "inverse_student":
        return (h_ub - hs).clamp_min(0.0)
    if kind == "none":
        return torch.ones_like(ht)
    raise ValueError(f"kind must be one of {sorted(WEIGHT_KINDS)}, got {kind!r}")


@torch.no_grad()
def ea_weights(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 3.0,
    max_entropy: float | None = None,
    kind: str = "ea",
) -> torch.Tensor:
    r"""Per-item entropy-adaptive weights (EA-KD, Su et al., ICCV 2025, Eq. 12).

    .. math::
        w_{EA} = \tfrac12 H^T \left(1 + \frac{H^S}{H_{ub}}\right),\qquad
        H = -\sum_c p_c \log p_c,\ p = \mathrm{softmax}(z / T')

    ``H_ub = log C`` by default, so ``w`` lies in ``[0, log C]``. The released code used
    ``max_entropy=100.0`` for CIFAR KD/DKD; pass it to reproduce those runs.

    Args:
        student_logits, teacher_logits: ``(..., C)`` logits of the same shape, e.g. ``(N, C)``
            samples, ``(R, C)`` detection RoIs or ``(B, T, V)`` tokens.
        temperature: the entropy temperature ``T'`` (3 on CIFAR/Tiny-ImageNet, 2 on ImageNet);
            independent of the distillation temperature.
        max_entropy: ``H_ub``; ``None`` means ``log C``.
        kind: ``"ea"`` (the paper's weight), or an ablation of Tables 1 and 9: ``"base"``
            (``H_T``), ``"interact"`` (``H_T H_S / H_ub``), ``"student"`` (``H_S``),
            ``"inverse_teacher"`` (``H_ub - H_T``), ``"inverse_student"`` (``H_ub - H_S``),
            ``"none"`` (ones).

    Returns:
        Detached float32 weights of shape ``logits.shape[:-1]``.
    """
    s, t = check_pair(student_logits, teacher_logits)
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"kind must be one of {sorted(WEIGHT_KINDS)}, got {kind!r}")
    h_ub = resolve_max_entropy(max_entropy, s.shape[-1])
    if kind == "none":
        return torch.ones(s.shape[:-1], dtype=torch.float32, device=s.device)
    hs = entropy(s, temperature) if kind not in ("base", "inverse_teacher") else None
    ht = entropy(t, temperature) if kind not in ("student", "inverse_student") else None
    hs = hs if hs is not None else ht
    ht = ht if ht is not None else hs
    return weights_from_entropies(hs, ht, h_ub, kind)


def sequence_means(h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Per-sequence mean of ``(B, T)`` token values over the valid tokens, broadcast back to
    ``(B, T)``: :math:`\bar H_b = \sum_t m_{b,t} H_{b,t} / \sum_t m_{b,t}`.

    EA-KD's sequence-level weight is the usual formula on these means, given to every token of
    the sequence, so weights of 1 reproduce the token-mean loss exactly. A sequence without
    valid tokens gets 0 (its tokens are masked anyway).
    """
    if h.dim() != 2:
        raise ValueError(
            f"granularity='sequence' needs (B, T) items (logits (B, T, V)), got items of shape "
            f"{tuple(h.shape)}"
        )
    if mask is None:
        return h.mean(1, keepdim=True).expand_as(h)
    total = torch.where(mask, h, torch.zeros((), dtype=h.dtype, device=h.device)).sum(1)
    return (total / mask.sum(1).clamp_min(1).to(h.dtype)).unsqueeze(1).expand_as(h)


def segment_means(h: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The same means for flattened tokens: ``segments[i]`` is the sequence (``0..k-1``) of row
    ``i``; returns each row's sequence mean, shape ``h.shape``."""
    k = int(segments.max()) + 1
    zeros = torch.zeros(k, dtype=h.dtype, device=h.device)
    count = zeros.index_add(0, segments, torch.ones_like(h))
    return (zeros.index_add(0, segments, h) / count)[segments]
