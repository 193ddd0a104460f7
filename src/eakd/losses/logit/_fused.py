"""Fused per-row KD/DKD kernels in plain torch, with the gradient formed in the forward pass.

Written for the hot path of EA-KD, where every pass over the ``(N, C)`` logits counts:

* softmaxes use torch's fused softmax kernel, and log-sum-exps are read off it: for rows with
  ``max v = 0``, ``lse(v) = -log(max_c softmax(v)_c)``, exact to float rounding since that
  maximum lies in ``[1/C, 1]``;
* KL divergences are ``sum_c p_c (v^t_c - v^s_c) + lse(v^s) - lse(v^t)``: no ``log`` of a
  probability is taken, so confident (``|z| ~ 1e4``) logits stay finite;
* the entropies needed by EA reuse the max-shifted logits of the same pass, rescaled in place
  between the entropy temperature ``T'`` and the distillation temperature ``T``;
* temporaries are overwritten in place (fresh ``(N, C)`` buffers are what costs most on CPU),
  and the closed-form gradient is stored, so the backward is a single multiply.

Teacher logits never receive a gradient. Double backward is not supported.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dkd_rows", "kd_rows"]


def _shift(z: torch.Tensor) -> torch.Tensor:
    """float32 ``z - max_c z`` per row, as a fresh tensor."""
    zf = z.float()
    zmax = zf.amax(-1, keepdim=True)
    return zf.sub_(zmax) if zf is not z else zf - zmax


def _rescale(v: torch.Tensor, new: float, old: float = 1.0) -> torch.Tensor:
    """In place, from ``d / old`` to ``d / new``."""
    return v if new == old else v.mul_(old / new)


def _softmax_lse(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(v)`` and ``lse(v)`` for rows with ``max v = 0``."""
    p = torch.softmax(v, -1)
    return p, p.amax(-1).log_().neg_()


def _entropy(v: torch.Tensor, p: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """``H = lse(v) - sum_c p_c v_c`` clamped to ``[0, log C]``; consumes ``p``."""
    return (lse - p.mul_(v).sum(-1)).clamp_(0.0, math.log(v.shape[-1]))


def _shifted_entropy(v: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(v)`` for max-shifted rows ``v`` (left unchanged)."""
    p, lse = _softmax_lse(v)
    return _entropy(v, p, lse)


#: Below this many logits per side, op dispatch dominates memory traffic: KD then uses the
#: usual autograd graph, and the entropies one stacked no-grad pass (see ``_kd_small``).
STACK_BELOW = 1 << 16


def _kd_small(s, t, temperature, entropy_temperature):
    """KD for small inputs, where op dispatch (not memory traffic) is the cost.

    The student side is exactly the usual autograd graph (``log_softmax`` + ``kl_div``), so KD
    costs what plain KD costs; the entropies come from one no-grad ``log_softmax`` over student
    and teacher stacked together (or from the KD softmaxes when ``T' == T``).
    """
    inv_t = 1.0 / temperature
    log_q = torch.log_softmax(s.float() * inv_t, -1)
    hs = ht = None
    with torch.no_grad():
        log_p = torch.log_softmax(t.float() * inv_t, -1)
        if entropy_temperature is not None:
            if entropy_temperature == temperature:
                lp = torch.stack((log_q.detach(), log_p))
            else:
                x = torch.stack((s.detach().float(), t.float()))
                lp = torch.log_softmax(x * (1.0 / entropy_temperature), -1)
            h = torch.special.entr(lp.exp()).sum(-1).clamp_(0.0, math.log(s.shape[-1]))
            hs, ht = h.unbind(0)
    kl = torch.kl_div(log_q, log_p, reduction=0, log_target=True).sum(-1)
    return kl.mul(temperature * temperature), hs, ht


def _kd_separate(s, t, temperature, entropy_temperature):
    """KD on each side in place: least memory traffic for large inputs."""
    vs, vt = _shift(s), _shift(t)
    scale, hs, ht = 1.0, None, None
    if entropy_temperature is not None and entropy_temperature != temperature:
        scale = entropy_temperature
        hs = _shifted_entropy(_rescale(vs, scale))
        ht = _shifted_entropy(_rescale(vt, scale))
    vs, vt = _rescale(vs, temperature, scale), _rescale(vt, temperature, scale)
    q, lse_s = _softmax_lse(vs)
    p, lse_t = _softmax_lse(vt)
    if entropy_temperature is not None and hs is None:  # T' == T: reuse the softmaxes
        hs, ht = _entropy(vs, q.clone(), lse_s), _entropy(vt, p.clone(), lse_t)
    # KL(p || q) = sum_c p_c (v^t_c - v^s_c) + lse(v^s) - lse(v^t)
    kl = vt.sub_(vs).mul_(p).sum(-1).add_(lse_s).sub_(lse_t)
    return kl, q.sub_(p), (hs, ht)


class _KDRows(torch.autograd.Function):
    """``T^2 KL(softmax(t/T) || softmax(s/T))`` per row (+ entropies at ``T'`` if asked)."""

    @staticmethod
    def forward(ctx, s, t, temperature, entropy_temperature):
        kl, grad, (hs, ht) = _kd_separate(s, t, temperature, entropy_temperature)
        ctx.save_for_backward(grad)  # d(T^2 KL)/ds = T (q - p); T is applied in backward
        ctx.temperature, ctx.s_dtype = temperature, s.dtype
        out = kl.clamp_min_(0.0).mul_(temperature * temperature)
        if hs is None:
            return out, None, None
        ctx.mark_non_differentiable(hs, ht)
        return out, hs, ht

    @staticmethod
    def backward(ctx, grad_out, _gh1, _gh2):
        (grad,) = ctx.saved_tensors
        return (grad * (grad_out * ctx.temperature).unsqueeze(1)).to(ctx.s_dtype), None, None, None


def kd_rows(
    s: torch.Tensor, t: torch.Tensor, temperature: float, entropy_temperature: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """KD on 2-D logits: ``(loss (N,), H_S, H_T)``; entropies are ``None`` if not asked."""
    if s.numel() < STACK_BELOW:
        return _kd_small(s, t.detach(), float(temperature), entropy_temperature)
    return _KDRows.apply(s, t.detach(), float(temperature), entropy_temperature)


class _DKDRows(torch.autograd.Function):
    """``T^2 (alpha TCKD + beta NCKD)`` per row, with the target class split out exactly.

    Only the two non-target softmaxes are formed at ``T``; the full ones follow from them:
    ``lse(v) = logaddexp(lse_nt(v), v_y)`` and ``q = q_n q_hat + q_y e_y``.
    """

    @staticmethod
    def forward(ctx, s, t, target, temperature, alpha, beta, entropy_temperature):
        vs, vt = _shift(s), _shift(t)
        scale, hs, ht = 1.0, None, None
        if entropy_temperature is not None:
            scale = entropy_temperature
            hs = _shifted_entropy(_rescale(vs, scale))
            ht = _shifted_entropy(_rescale(vt, scale))
        vs, vt = _rescale(vs, temperature, scale), _rescale(vt, temperature, scale)
        idx = target.view(-1, 1)
        vs_y, vt_y = vs.gather(1, idx).view(-1), vt.gather(1, idx).view(-1)
        vs.scatter_(1, idx, float("-inf"))  # drop the target class
        vt.scatter_(1, idx, float("-inf"))
        q_hat, p_hat = torch.softmax(vs, -1), torch.softmax(vt, -1)
        # non-target lse = non-target max - log(max of the non-target softmax)
        lse_nt_s = vs.amax(-1).sub_(q_hat.amax(-1).log_())
        lse_nt_t = vt.amax(-1).sub_(p_hat.amax(-1).log_())
        lse_s, lse_t = torch.logaddexp(lse_nt_s, vs_y), torch.logaddexp(lse_nt_t, vt_y)
        log_qy, log_qn = vs_y - lse_s, lse_nt_s - lse_s  # log target / non-target mass
        log_py, log_pn = vt_y - lse_t, lse_nt_t - lse_t
        qy, qn, py, pn = log_qy.exp(), log_qn.exp(), log_py.exp(), log_pn.exp()
        tckd = (py * (log_py - log_qy) + pn * (log_pn - log_qn)).clamp_min_(0.0)
        vs.scatter_(1, idx, 0.0)
        vt.scatter_(1, idx, 0.0)
        nckd = vt.sub_(vs).mul_(p_hat).sum(-1).add_(lse_nt_s).sub_(lse_nt_t).clamp_min_(0.0)
        out = (alpha * tckd + beta * nckd).mul_(temperature * temperature)
        # d/du, u = s/T:  alpha (q - py e_y - pn q_hat) + beta (q_hat - p_hat)
        grad = q_hat.mul_((alpha * (qn - pn) + beta).unsqueeze(1)).sub_(p_hat, alpha=beta)
        grad.scatter_add_(1, idx, (alpha * (qy - py)).unsqueeze(1))
        ctx.save_for_backward(grad)
        ctx.temperature, ctx.s_dtype = temperature, s.dtype
        if hs is None:
            return out, None, None
        ctx.mark_non_differentiable(hs, ht)
        return out, hs, ht

    @staticmethod
    def backward(ctx, grad_out, _gh1, _gh2):
        (grad,) = ctx.saved_tensors
        scale = (grad_out * ctx.temperature).unsqueeze(1)
        return (grad * scale).to(ctx.s_dtype), None, None, None, None, None, None


def dkd_rows(
    s: torch.Tensor,
    t: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float,
    entropy_temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Fused DKD on 2-D logits: ``(loss (N,), H_S, H_T)``."""
    return _DKDRows.apply(
        s, t.detach(), target, float(temperature), float(alpha), float(beta), entropy_temperature
    )
