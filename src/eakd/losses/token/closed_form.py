r"""Closed-form value and student-logit gradient of every token divergence, and the per-chunk step
of :class:`eakd.losses.token.ChunkedTokenDistillation` built on them.

With ``s = z_s / T``, ``q = softmax(s)``, ``p = softmax(z_t / T)`` and a per-row divergence
``l(p, q)``, the chain rule through the softmax gives, for any ``a = dl/dq`` (``q`` taken as a
free variable),

.. math::
    \frac{\partial l}{\partial s_v} = q_v \Big(a_v - \sum_u q_u a_u\Big),\qquad
    \frac{\partial l}{\partial z_{s,v}} = \frac{1}{T}\,\frac{\partial l}{\partial s_v}

(a constant added to ``a`` cancels). Per divergence (``m`` its mixture, ``lm = log m``;
natural logs; the formulas of
:mod:`eakd.losses.token.divergences`):

==================  ======================================================================
``forward_kl``      ``dl/ds = q - p`` (both ``form`` values)
``reverse_kl``      ``a = log q - log p``
``jsd``             ``m = beta p + (1 - beta) q``, ``l = w_p KL(p||m) + w_q KL(q||m)``:
                    ``a = w_q (log q - lm) - (1 - beta) (w_p p + w_q q) / m``; with
                    ``w_p p + w_q q = m`` (``weighting="gkd"``, or ``beta = 0.5``) the last
                    term is the constant ``1 - beta`` and drops. ``beta = 0`` / ``1`` are
                    forward / reverse KL.
``skew_kl``         ``m = alpha p + (1 - alpha) q``: ``a = -(1 - alpha) p / m`` (both forms)
``skew_reverse_kl`` ``m = (1 - alpha) p + alpha q``: ``a = log q - lm - alpha q / m``
``tvd``             ``a = sign(q - p) / 2`` (the subgradient autograd takes, 0 at ties)
==================  ======================================================================

Ratios ``p / m`` and ``q / m`` are formed as ``exp(log p - lm)``: bounded by ``1 / beta``,
where ``p / m`` from probabilities could be ``0 / 0``. Divergences whose value is clamped at 0
(every KL form; rounding can make them slightly negative) get a zero gradient on a clamped row,
as autograd through the clamp gives.

These formulas assume finite logits. A ``-inf`` logit (a masked vocabulary entry) makes
``sum p log p`` or ``sum q log q`` NaN, which :func:`chunk_step` folds into its ``check``
value; the chunked loss then recomputes with the masked-support autograd path of
:class:`~eakd.losses.token.divergences.Divergence` (see there for the ``-inf`` convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.weights import weights_from_entropies
from .divergences import Divergence

__all__ = ["ChunkConfig", "chunk_step", "divergence_and_grad"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.einsum("...v,...v->...", a, b)


def _log_softmax_(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(z / T)`` in place of ``z``."""
    if temperature != 1.0:
        z.mul_(1.0 / temperature)
    return z.sub_(torch.logsumexp(z, -1, keepdim=True))


def _log_mix(p: torch.Tensor, q: torch.Tensor, w_p: float) -> torch.Tensor:
    """``log(w_p p + (1 - w_p) q)`` from the probabilities (``0 < w_p < 1``): one ``log`` per
    entry instead of a log-sum-exp. Where both probabilities underflow the mixture is clamped
    to the smallest normal float, so ``lm`` stays finite; every term it enters is then
    multiplied by a probability below ``1e-38``."""
    tiny = torch.finfo(p.dtype).tiny
    return torch.add(p, q, alpha=(1.0 - w_p) / w_p).mul_(w_p).clamp_min_(tiny).log_()


def _score_grad(q: torch.Tensor, a: torch.Tensor, qa: torch.Tensor | None, scale) -> torch.Tensor:
    """``scale q (a - sum q a)``, overwriting ``a``; ``qa``: ``sum q a`` when already known."""
    if qa is None:
        qa = _dot(q, a)
    return a.sub_(qa.unsqueeze(-1)).mul_(q).mul_(scale)


def _effective(spec: Divergence) -> tuple[str, dict]:
    """The divergence actually computed: the endpoints of ``jsd`` / ``skew_*`` are KLs."""
    name, prm = spec.name, spec.params
    if name == "jsd" and prm["beta"] == 0.0:
        return "forward_kl", {"form": "kl"}
    if name == "jsd" and prm["beta"] == 1.0:
        return "reverse_kl", {}
    if name == "skew_kl" and prm["alpha"] == 0.0:
        return "forward_kl", {"form": prm["form"]}
    if name == "skew_reverse_kl" and prm["alpha"] == 0.0:
        return "reverse_kl", {}
    return name, prm


def divergence_and_grad(
    spec: Divergence,
    lq: torch.Tensor,
    q: torch.Tensor,
    lp: torch.Tensor,
    p: torch.Tensor,
    need_grad: bool = True,
    row_scale: torch.Tensor | float = 1.0,
    self_dots: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Per-row divergence and its gradient with respect to ``s = z_s / T``.

    Args:
        spec: the divergence.
        lq, q: the student's log-probabilities and probabilities at ``T``, ``(N, V)``, finite.
        lp, p: the teacher's.
        need_grad: ``False`` skips the gradient (returned as ``None``).
        row_scale: ``(N,)`` (or a scalar) factor applied to each row's gradient, in the same
            pass (the chunked loss's ``w / (D T)``).
        self_dots: ``(sum p log p, sum q log q)`` when already computed.

    Returns:
        ``(loss, grad_s, sum p log p, sum q log q)``: ``loss`` ``(N,)`` (clamped at 0 where the
        definition clamps) and ``grad_s`` ``(N, V)`` times ``row_scale`` (zero on clamped
        rows); the two self dot products give the entropies at ``T``.
    """
    name, prm = _effective(spec)
    p_lp, q_lq = self_dots if self_dots is not None else (_dot(p, lp), _dot(q, lq))
    scale = row_scale.unsqueeze(-1) if isinstance(row_scale, torch.Tensor) else row_scale
    grad = None
    if name == "tvd":
        diff = q - p
        loss = 0.5 * diff.abs().sum(-1)
        if need_grad:
            grad = _score_grad(q, diff.sign_().mul_(0.5), None, scale)
        return loss, grad, p_lp, q_lq
    if name == "forward_kl" and prm["form"] == "cross_entropy":
        return -_dot(p, lq), ((q - p).mul_(scale) if need_grad else None), p_lp, q_lq
    if name == "skew_kl" and prm["form"] == "cross_entropy":
        alpha = prm["alpha"]
        lm = _log_mix(p, q, alpha)
        if need_grad:
            grad = _score_grad(q, (lp - lm).exp_().mul_(alpha - 1.0), None, scale)
        return -_dot(p, lm), grad, p_lp, q_lq
    # the rest are clamped at 0, and so is their gradient (autograd's rule for the clamp)
    if name == "forward_kl":
        raw = p_lp - _dot(p, lq)
        live = (raw >= 0).to(q.dtype).unsqueeze(-1)
        if need_grad:
            grad = (q - p).mul_(live * scale)
        return raw.clamp_min(0.0), grad, p_lp, q_lq
    if name == "reverse_kl":
        raw = q_lq - _dot(q, lp)
        a, qa = (lq - lp if need_grad else None), raw  # sum q (log q - log p) is the value
    elif name == "jsd":
        beta = prm["beta"]
        lm = _log_mix(p, q, beta)
        w_p, w_q = (1.0 - beta, beta) if prm["weighting"] == "interpolate" else (beta, 1 - beta)
        q_lm = _dot(q, lm)
        raw = w_p * (p_lp - _dot(p, lm)) + w_q * (q_lq - q_lm)
        a = qa = None
        if need_grad:
            a = torch.sub(lq, lm).mul_(w_q)
            if w_p == beta:  # (w_p p + w_q q) / m = 1: a constant, dropped
                qa = (q_lq - q_lm) * w_q
            else:
                a.sub_(((lp - lm).exp_().mul_(w_p) + (lq - lm).exp_().mul_(w_q)) * (1 - beta))
    elif name == "skew_kl":
        alpha = prm["alpha"]
        lm = _log_mix(p, q, alpha)
        raw = p_lp - _dot(p, lm)
        a = (lp - lm).exp_().mul_(alpha - 1.0) if need_grad else None
        qa = None
    elif name == "skew_reverse_kl":
        alpha = prm["alpha"]
        lm = _log_mix(p, q, 1.0 - alpha)
        raw = q_lq - _dot(q, lm)
        a = qa = None
        if need_grad:
            d = lq - lm
            a = d - d.exp().mul_(alpha)
    else:  # pragma: no cover - names are validated in Divergence.build
        raise AssertionError(name)
    if need_grad:
        live = (raw >= 0).to(q.dtype).unsqueeze(-1)
        grad = _score_grad(q, a, qa, live * scale)
    return raw.clamp_min(0.0), grad, p_lp, q_lq


@dataclass(frozen=True)
class ChunkConfig:
    """What one chunk computes; constant over a call (and hashable, so a compiled step can be
    shared by every loss with the same configuration).

    Attributes:
        spec: the divergence (with ``T``).
        kd, ce: whether the distillation / hard-label CE terms are on.
        ea_kind: the EA weight formula (``None``: no EA).
        sequence: sequence-level EA weights (``seg`` gives each row's sequence in the chunk).
        entropy_temperature: ``T'`` (``None`` without EA).
        max_entropy: ``H_ub``.
        need_grad: whether any gradient is needed; ``grad_bias``: the bias gradient.
        grad_dtype: dtype of the returned logit gradient (the ``lm_head``'s dtype).
    """

    spec: Divergence
    kd: bool = True
    ce: bool = False
    ea_kind: str | None = "ea"
    sequence: bool = False
    entropy_temperature: float | None = None
    max_entropy: float = 1.0
    need_grad: bool = True
    grad_bias: bool = False
    grad_dtype: torch.dtype = torch.float32


def _entropy(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``-sum p log p`` of ``softmax(z / T')``, clamped to ``[0, log V]`` (z is kept)."""
    lp = _log_softmax_(z * (1.0 / temperature), 1.0)
    return _dot(lp.exp(), lp).neg_().clamp_(0.0, math.log(z.shape[-1]))


def _segment_means(h: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Each row's mean of ``h`` over the rows of its sequence (``seg``: ids ``< len(h)``)."""
    sums = h.new_zeros(h.shape).index_add_(0, seg, h)
    counts = h.new_zeros(h.shape).index_add_(0, seg, torch.ones_like(h))
    return (sums / counts.clamp_min(1.0))[seg]


def chunk_step(
    cfg: ChunkConfig,
    zs: torch.Tensor,
    zt: torch.Tensor | None,
    seg: torch.Tensor | None,
    target: torch.Tensor | None,
    kd_scale: torch.Tensor,
    ce_scale: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, torch.Tensor]]:
    r"""One chunk of the chunked loss, without autograd: from the rows' logits, the divergence,
    entropies, EA weights, and the gradient of the chunk's share of the loss with respect to
    its student logits,

    .. math::
        g_i = \frac{k_{kd}\, w_i}{T} \frac{\partial l_i}{\partial s_i}
              + k_{ce} (\mathrm{softmax}(z_{s,i}) - e_{y_i})

    with ``k_kd = kd_weight / D`` and ``k_ce = ce_weight / D`` (``kd_scale``, ``ce_scale``:
    0-d tensors, so a compiled step is not specialised on ``D``).

    Args:
        zs, zt: the chunk's student and teacher logits ``(n, V)``, float32 (or float64);
            overwritten in eager mode (a compiled step leaves them).
        seg: ``(n,)`` sequence of each row within the chunk (sequence-level EA only).
        target: ``(n,)`` hard labels (CE only).

    Returns:
        ``(g, g_bias, out)``: ``g`` ``(n, V)`` in ``cfg.grad_dtype`` (``None`` without
        gradients), ``g_bias`` its float32 column sum (``None`` unless ``cfg.grad_bias``), and
        ``out`` with the rows' ``per_item``, ``weights``, ``student_entropy``,
        ``teacher_entropy`` (``(n,)``; zeros where not computed), the chunk's ``distill`` and
        ``ce`` sums (not divided by ``D``) and ``check``: a sum that is finite exactly when
        every value the chunk used was.
    """
    if torch.compiler.is_compiling():  # inputs stay untouched (no copy-back of a mutation)
        zs = zs.clone()
        zt = zt.clone() if zt is not None else None
    spec, t = cfg.spec, cfg.spec.temperature
    n, v = zs.shape
    zeros = zs.new_zeros(n)
    out = {"per_item": zeros, "weights": zeros, "student_entropy": zeros, "teacher_entropy": zeros}
    g = None
    lq1 = None
    if cfg.ce and (t != 1.0 or not cfg.kd):  # the CE term's own softmax at T = 1
        lq1 = _log_softmax_(zs.clone() if cfg.kd else zs, 1.0)
    if cfg.kd:
        t_ent = cfg.entropy_temperature
        h_s = h_t = None
        if cfg.ea_kind is not None and t_ent != t:
            h_s, h_t = _entropy(zs, t_ent), _entropy(zt, t_ent)
        lq = _log_softmax_(zs, t)
        lp = _log_softmax_(zt, t)
        q, p = lq.exp(), lp.exp()
        p_lp, q_lq = _dot(p, lp), _dot(q, lq)
        w = None
        if cfg.ea_kind is not None:
            if h_s is None:  # T' = T: the entropies are the divergence's self dot products
                h_max = math.log(v)
                h_s, h_t = (-q_lq).clamp_(0.0, h_max), (-p_lp).clamp_(0.0, h_max)
            if cfg.sequence:
                h_s_w, h_t_w = _segment_means(h_s, seg), _segment_means(h_t, seg)
            else:
                h_s_w, h_t_w = h_s, h_t
            w = weights_from_entropies(h_s_w, h_t_w, cfg.max_entropy, cfg.ea_kind).to(zs.dtype)
            out |= {"weights": w, "student_entropy": h_s, "teacher_entropy": h_t}
        row = kd_scale * (1.0 / t) if w is None else w * (kd_scale * (1.0 / t))
        per, grad, _, _ = divergence_and_grad(spec, lq, q, lp, p, cfg.need_grad, row, (p_lp, q_lq))
        del lp, p
        check = per.sum() + p_lp.sum() + q_lq.sum()
        out["per_item"] = per
        out["distill"] = (per * w).sum() if w is not None else per.sum()
        if grad is not None:
            g = grad
            if cfg.ce and lq1 is None:  # T = 1: the divergence's student softmax is CE's
                g.add_(q * ce_scale)
    else:
        check = zs.new_zeros(())
    if cfg.ce:
        if lq1 is None:
            lq1 = lq  # T = 1, the student's log-probabilities at T = 1
        ce_rows = -lq1.gather(1, target.unsqueeze(1)).squeeze(1)
        out["ce"] = ce_rows.sum()
        check = check + out["ce"]
        if cfg.need_grad:
            if g is None:
                g = lq1.exp_().mul_(ce_scale)
            elif cfg.kd and t != 1.0:
                g.add_(lq1.exp_().mul_(ce_scale))
            g.scatter_add_(1, target.unsqueeze(1), (-ce_scale).expand(n, 1).to(g.dtype))
    out.setdefault("distill", check.new_zeros(()))
    out.setdefault("ce", check.new_zeros(()))
    out["check"] = check
    g_bias = None
    if g is not None:
        if cfg.grad_bias:
            g_bias = g.sum(0, dtype=torch.float32)
        g = g.to(cfg.grad_dtype)
    return g, g_bias, out
