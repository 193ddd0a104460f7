"""Fused per-row KD/DKD kernels in plain torch, with the gradient formed in the forward pass.

Written for the hot path of EA-KD, where every pass over the ``(N, C)`` logits counts:

* softmaxes use torch's fused softmax kernel, and log-sum-exps are read off it: for rows with
  ``max v = 0``, ``lse(v) = -log(max_c softmax(v)_c)``, exact to float rounding since that
  maximum lies in ``[1/C, 1]``;
* KL divergences are ``sum_c p_c (v^t_c - v^s_c) + lse(v^s) - lse(v^t)``: no ``log`` of a
  probability is taken, so confident (``|z| ~ 1e4``) logits stay finite;
* the entropies needed by EA reuse the max-shifted logits of the same pass, rescaled in place
  between the entropy temperature ``T'`` and the distillation temperature ``T``, and come from
  the core's entropy helpers (:func:`eakd.core.entropy_from_softmax`);
* temporaries are overwritten in place, and large inputs are processed in blocks of rows
  (:data:`CHUNK_ELEMS` logits per side) written into one preallocated gradient buffer: fresh
  ``(N, C)`` buffers (page faults, cache misses) are what costs most on CPU;
* the closed-form gradient is stored, so the backward is a single multiply.

Teacher logits never receive a gradient. Double backward is not supported: it raises.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ...core.entropy import entropy_from_log_probs, entropy_from_softmax
from ...core.weights import weights_from_entropies

__all__ = ["dkd_rows", "kd_rows", "temperature_scales", "weighted_kd_small"]


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


def _shifted_entropy(v: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(v)`` for max-shifted rows ``v`` (left unchanged)."""
    p, lse = _softmax_lse(v)
    return entropy_from_softmax(v, p, lse, consume=True)


#: Below this many logits per side, op dispatch dominates memory traffic: KD then uses the
#: usual autograd graph, and the entropies one stacked no-grad pass (see ``_kd_small``).
STACK_BELOW = 1 << 15

#: Logits per side in one block of rows on CPU (512 KiB of float32: the temporaries stay in
#: cache); other devices use :data:`CHUNK_ELEMS_ACCEL`, which only bounds temporary memory.
CHUNK_ELEMS = 1 << 17
CHUNK_ELEMS_ACCEL = 1 << 24


def _row_blocks(x: torch.Tensor, block_elems: int | None = None) -> list[slice]:
    """Slices of rows covering ``x`` (N, C) in blocks of about ``block_elems`` logits (by
    default :data:`CHUNK_ELEMS` on CPU, :data:`CHUNK_ELEMS_ACCEL` elsewhere)."""
    n, c = x.shape
    per = block_elems or (CHUNK_ELEMS if x.device.type == "cpu" else CHUNK_ELEMS_ACCEL)
    rows = max(1, per // max(c, 1))
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _empty_rows(like: torch.Tensor, n: int, with_entropies: bool):
    """Per-row outputs: loss and, when asked, the two entropies (float32)."""
    make = [torch.empty(n, dtype=torch.float32, device=like.device) for _ in range(3)]
    return make[0], (make[1], make[2]) if with_entropies else (None, None)


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
                lp = torch.log_softmax(x.mul_(1.0 / entropy_temperature), -1)
            # finite logits give finite log-probabilities, so p log p needs no 0 * -inf guard
            # (non-finite logits are refused on the per-item result)
            hs, ht = entropy_from_log_probs(lp, finite=True).unbind(0)
    kl = torch.kl_div(log_q, log_p, reduction=0, log_target=True).sum(-1)
    # KL >= 0; rounding can give -1e-7 for near-identical rows (the gradient there is ~0)
    return kl.clamp_min(0.0).mul_(temperature * temperature), hs, ht


def _kd_block(s, t, target, temperature, entropy_temperature, grad_out=None):
    """KD on a block of rows, each side in place (least memory traffic for large inputs):
    ``(KL, q - p, H_S, H_T)``; ``target`` is unused. The gradient is written into
    ``grad_out`` when given."""
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
        hs, ht = entropy_from_softmax(vs, q, lse_s), entropy_from_softmax(vt, p, lse_t)
    # KL(p || q) = sum_c p_c (v^t_c - v^s_c) + lse(v^s) - lse(v^t)
    kl = vt.sub_(vs).mul_(p).sum(-1).add_(lse_s).sub_(lse_t)
    grad = q.sub_(p) if grad_out is None else torch.sub(q, p, out=grad_out)
    return kl, grad, hs, ht


def _over_blocks(block, s, t, target, *args, with_entropies: bool, block_elems: int | None):
    """``block(s, t, target, *args, grad_out=None) -> (loss, grad, H_S, H_T)`` over blocks of
    rows (see :func:`_row_blocks`), the gradients written into one ``(N, C)`` buffer."""
    blocks = _row_blocks(s, block_elems)
    if len(blocks) == 1:
        return block(s, t, target, *args)
    grad = torch.empty(s.shape, dtype=torch.float32, device=s.device)
    loss, (hs, ht) = _empty_rows(s, s.shape[0], with_entropies)
    for b in blocks:
        rows_target = None if target is None else target[b]
        part, _, h_s, h_t = block(s[b], t[b], rows_target, *args, grad_out=grad[b])
        loss[b] = part
        if hs is not None:
            hs[b], ht[b] = h_s, h_t
    return loss, grad, hs, ht


def _save_rows(ctx, grad, temperature, s_dtype, out, hs, ht):
    """Keep the closed-form gradient for the backward; return ``(loss, H_S, H_T)``."""
    ctx.save_for_backward(grad)
    ctx.temperature, ctx.s_dtype = temperature, s_dtype
    if hs is None:
        return out, None, None
    ctx.mark_non_differentiable(hs, ht)
    return out, hs, ht


def _scaled_grad(ctx, grad_out):
    """``d loss / d s`` from the stored gradient of ``loss / T`` w.r.t. ``s / T``."""
    (grad,) = ctx.saved_tensors
    return (grad * (grad_out * ctx.temperature).unsqueeze(1)).to(ctx.s_dtype)


def _kd_blocks(s, t, temperature, entropy_temperature, block_elems):
    """KD over blocks of rows: ``(T^2 KL, q - p, H_S, H_T)`` (entropies ``None`` if not asked)."""
    kl, grad, hs, ht = _over_blocks(
        _kd_block,
        s,
        t,
        None,
        temperature,
        entropy_temperature,
        with_entropies=entropy_temperature is not None,
        block_elems=block_elems,
    )
    return kl.clamp_min_(0.0).mul_(temperature * temperature), grad, hs, ht


class _KDRows(torch.autograd.Function):
    """``T^2 KL(softmax(t/T) || softmax(s/T))`` per row (+ entropies at ``T'`` if asked)."""

    @staticmethod
    def forward(ctx, s, t, temperature, entropy_temperature, block_elems):
        # d(T^2 KL)/ds = T (q - p); T is applied in backward
        out, grad, hs, ht = _kd_blocks(s, t, temperature, entropy_temperature, block_elems)
        return _save_rows(ctx, grad, temperature, s.dtype, out, hs, ht)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _gh1, _gh2):
        return _scaled_grad(ctx, grad_out), None, None, None, None


def kd_rows(
    s: torch.Tensor,
    t: torch.Tensor,
    temperature: float,
    entropy_temperature: float | None = None,
    *,
    small: bool | None = None,
    block_elems: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """KD on 2-D logits: ``(loss (N,), H_S, H_T)``; entropies are ``None`` if not asked.

    ``small`` picks the implementation: the usual autograd graph for small inputs (``True``),
    or the row kernel with its closed-form gradient (``False``); ``None`` decides by size
    (:data:`STACK_BELOW`). ``block_elems`` sets the row-block size of the latter.
    """
    if small is None:
        small = s.numel() < STACK_BELOW
    if small:
        return _kd_small(s, t.detach(), float(temperature), entropy_temperature)
    return _KDRows.apply(s, t.detach(), float(temperature), entropy_temperature, block_elems)


class _DKDRows(torch.autograd.Function):
    """``T^2 (alpha TCKD + beta NCKD)`` per row, with the target class split out exactly.

    Only the two non-target softmaxes are formed at ``T``; the full ones follow from them:
    ``lse(v) = logaddexp(lse_nt(v), v_y)`` and ``q = q_n q_hat + q_y e_y``.
    """

    @staticmethod
    def forward(ctx, s, t, target, temperature, alpha, beta, entropy_temperature, block_elems):
        out, grad, hs, ht = _over_blocks(
            _dkd_block,
            s,
            t,
            target,
            temperature,
            alpha,
            beta,
            entropy_temperature,
            with_entropies=entropy_temperature is not None,
            block_elems=block_elems,
        )
        return _save_rows(ctx, grad, temperature, s.dtype, out, hs, ht)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _gh1, _gh2):
        return _scaled_grad(ctx, grad_out), None, None, None, None, None, None, None


def _dkd_block(s, t, target, temperature, alpha, beta, entropy_temperature, grad_out=None):
    """DKD on a block of rows: ``(loss, gradient / T, H_S, H_T)``, see :class:`_DKDRows`; the
    gradient is written into ``grad_out`` when given."""
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
    grad = q_hat.mul_((alpha * (qn - pn) + beta).unsqueeze(1))
    grad = (
        grad.sub_(p_hat, alpha=beta)
        if grad_out is None
        else torch.sub(grad, p_hat, alpha=beta, out=grad_out)
    )
    grad.scatter_add_(1, idx, (alpha * (qy - py)).unsqueeze(1))
    return out, grad, hs, ht


def dkd_rows(
    s: torch.Tensor,
    t: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float,
    entropy_temperature: float | None = None,
    *,
    block_elems: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Fused DKD on 2-D logits: ``(loss (N,), H_S, H_T)``; ``block_elems`` as in
    :func:`kd_rows`."""
    return _DKDRows.apply(
        s,
        t.detach(),
        target,
        float(temperature),
        float(alpha),
        float(beta),
        entropy_temperature,
        block_elems,
    )


class _WeightedKD(torch.autograd.Function):
    """EA-KD on small float32 logits as a single autograd node (see :func:`weighted_kd_small`).

    With both sides (and both temperatures) stacked, every step is one call over all of them.
    For rows shifted to max 0, ``lse = -log(max_c softmax)``, ``H = lse - sum_c p_c v_c`` and
    ``KL(p || q) = lse_s - sum_c p_c v^s_c - H_t``: one softmax serves the loss, both
    entropies and the gradient ``T w_n (q_n - p_n) / D``, which is kept for the backward.
    """

    @staticmethod
    def forward(
        ctx, s, t, temperature, entropy_temperature, max_entropy, kind, denom, scales, sink
    ):
        x = torch.stack((s, t))
        x = x.sub_(x.amax(-1, keepdim=True))
        same = entropy_temperature == temperature
        # v: (side, N, C) at T, or (temperature, side, N, C) at T and T'
        if same:
            v = x.mul_(1.0 / temperature)
        elif scales is not None:
            v = x * scales
        else:
            v = torch.stack((x * (1.0 / temperature), x))
            v[1].mul_(1.0 / entropy_temperature)
        p = torch.softmax(v, -1)
        lse = p.amax(-1).log_().neg_()
        h = entropy_from_softmax(v, p, lse)  # (side, N) or (temperature, side, N)
        if not same:
            p, v, lse, h_kd, h = p[0], v[0], lse[0], h[0], h[1]
        else:
            h_kd = h
        kl = (lse[0] - (p[1] * v[0]).sum(-1)).sub_(h_kd[1]).clamp_min_(0.0)
        kl = kl.mul_(temperature * temperature)
        hs, ht = h.unbind(0)
        w = weights_from_entropies(hs, ht, max_entropy, kind)
        grad = p[0].sub_(p[1]).mul_((w * (temperature / denom)).unsqueeze(1))
        ctx.save_for_backward(grad)
        sink.extend((kl, w, hs, ht))
        return torch.dot(kl, w).div_(denom)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None, None, None, None, None, None, None, None


def temperature_scales(temperature: float, entropy_temperature: float, device=None):
    """``[1/T, 1/T']`` shaped ``(2, 1, 1, 1)``, the ``scales`` of :func:`weighted_kd_small`."""
    scales = torch.tensor([1.0 / temperature, 1.0 / entropy_temperature], device=device)
    return scales.view(2, 1, 1, 1)


def weighted_kd_small(
    s: torch.Tensor,
    t: torch.Tensor,
    temperature: float,
    entropy_temperature: float,
    max_entropy: float,
    kind: str,
    denom: float,
    scales: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    r"""EA-KD ``\sum_n w_n T^2 KL_n / D`` on small 2-D float32 logits in one autograd node:
    ``(loss, per-item KD, w, H_S, H_T)`` (the last four detached).

    At small sizes every eager op costs its dispatch whatever its size, so the per-item graph,
    the weighting and the reduction nodes cost more than the math; this kernel does them in one
    forward and a one-multiply backward. Inputs from :data:`STACK_BELOW` logits up go through
    the per-item row kernels instead, where this gains nothing. ``scales``
    (:func:`temperature_scales`, on the inputs' device) spares building both temperatures'
    logits op by op when ``T' != T``.
    """
    sink: list[torch.Tensor] = []
    loss = _WeightedKD.apply(
        s,
        t.detach(),
        float(temperature),
        float(entropy_temperature),
        float(max_entropy),
        kind,
        float(denom),
        scales,
        sink,
    )
    return (loss, *sink)
