r"""Memory-flat EA-KD for causal LMs: the loss from final hidden states and ``lm_head`` weights.

The full-logit path holds several ``(B*T, V)`` float32 tensors (student and teacher logits, their
log-softmaxes, the gradient): 0.8 GB each for 4096 tokens and a 49k vocabulary. Here the valid
tokens are processed a chunk of rows at a time (``chunk_budget // V`` rows, or ``chunk_size``).
For each chunk the student and teacher logits are formed from the hidden states (in the
``lm_head``'s dtype, then upcast to float32), and one step computes the divergence, both
entropies, the EA weights and the gradient with respect to the chunk's student logits in closed
form (:mod:`eakd.losses.token.closed_form`: no autograd graph, optionally ``torch.compile``-d);
the gradients with respect to the student's hidden states, ``lm_head`` weight and bias follow
from it at once (the design of Liger-Kernel's fused linear distillation, Hsu et al. 2024). Only
``(B*T, H)`` and ``(V, H)`` gradients outlive a chunk, so peak memory does not grow with
``B*T*V``, and the host waits on the device once per call (the finiteness check), not per chunk.

Because the EA weights are detached, ``d(w l)/dz = w dl/dz``: the weight only rescales each
row's gradient, so it is applied inside the chunk. With ``granularity="sequence"`` the chunks
hold whole sequences, so each chunk has the sequence-mean entropies its weights need and the
whole computation stays a single pass.

Non-finite values are detected once, at the end of the pass. ``-inf`` logits (masked vocabulary
entries) then send the call through the autograd path over
:meth:`eakd.losses.token.divergences.Divergence.rows`, which drops them from both
distributions; NaN or ``inf`` there raise an error naming the student or teacher logits.

The values and gradients equal those of the full-logit path (the registered token losses with
:func:`eakd.core.reduce`) up to float rounding.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...core.reduction import check_num_items
from ...core.settings import EASettings, EAStats
from ...core.validation import check_finite
from ...core.weights import segment_means, weights_from_entropies
from .closed_form import ChunkConfig, chunk_step
from .divergences import Divergence

__all__ = ["AUTO_COMPILE_MIN", "DEFAULT_CHUNK_BUDGET", "ChunkedTokenDistillation"]


#: Default chunk budget: rows x V float32 elements of one chunk's logits (32 MB). A chunk holds
#: a few tensors of that size at its peak, so this bounds the loss's memory whatever the batch.
DEFAULT_CHUNK_BUDGET = 2**23

#: ``compile="auto"`` compiles the chunk step only when a chunk has at least this many logits:
#: below it a chunk takes milliseconds in eager mode and the compile time would not pay back.
AUTO_COMPILE_MIN = 2**20

COMPILE_MODES = ("auto", True, False)

_COMPILED: dict[tuple, Callable[..., Any]] = {}


@dataclass
class _Plan:
    spec: Divergence
    ea: EASettings | None  # None: no EA
    max_entropy: float
    chunks: list[torch.Tensor]
    segments: list[torch.Tensor | None]
    denom: float
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    labels: torch.Tensor | None = None
    compile: bool = False
    owner: Any = None  # the module: told when compilation fails
    stats: dict[str, torch.Tensor] | None = None
    terms: dict[str, torch.Tensor] | None = None


def _make_chunks(
    mask: torch.Tensor, granularity: str, chunk_size: int
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Row indices (into the flattened tokens) of each chunk and, for sequence chunks, the
    sequence id (0..k-1 within the chunk) of every row."""
    if granularity == "item":
        rows = mask.reshape(-1).nonzero().squeeze(1)
        chunks = list(rows.split(chunk_size)) if rows.numel() else []  # all masked: no chunk
        return chunks, [None] * len(chunks)
    seq_len = mask.shape[-1]
    counts = mask.sum(-1).tolist()
    chunks: list[torch.Tensor] = []
    segments: list[torch.Tensor | None] = []
    group: list[int] = []
    size = 0

    def flush() -> None:
        sub = mask[group]
        local = sub.nonzero()  # (n, 2): (sequence within the group, position)
        base = torch.tensor(group, device=mask.device)[local[:, 0]]
        chunks.append(base * seq_len + local[:, 1])
        segments.append(local[:, 0])

    for b, c in enumerate(counts):
        if c == 0:
            continue
        if group and size + c > chunk_size:
            flush()
            group, size = [], 0
        group.append(b)
        size += c
    if group:
        flush()
    return chunks, segments


def _chunk_weights(ea: EASettings, h_ub: float, h_s, h_t, seg) -> torch.Tensor:
    """EA weights of a chunk's rows: per token, or per sequence from the mean entropies of the
    chunk's (whole) sequences (``seg``: each row's sequence), broadcast to their tokens."""
    if ea.granularity == "sequence":
        h_s, h_t = segment_means(h_s, seg), segment_means(h_t, seg)
    return weights_from_entropies(h_s, h_t, h_ub, ea.kind)


#: Elements of the float32 vocabulary tile of a ``_Head`` that upcasts (16 MB).
TILE_ELEMENTS = 2**22


def _native_matmul(w: torch.Tensor) -> bool:
    """Whether products in ``w``'s dtype run natively: always for float32/64 and off the CPU;
    bfloat16/float16 on a CPU only with oneDNN's support for them (AVX512-BF16, AMX, ...)."""
    if w.dtype in (torch.float32, torch.float64) or w.device.type != "cpu":
        return True
    try:
        if w.dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # an older or different build: assume emulated
        return False


class _Head:
    """An ``lm_head`` ``(W, b)`` as the chunk loop uses it: a chunk's logits in float32, and
    the hidden-state and weight gradients from the chunk's logit gradient.

    The logits are formed in ``W``'s dtype and then upcast: no float32 copy of ``W`` is made.
    On a CPU without native bfloat16/float16 products (they are emulated there, several times
    slower than float32), ``W`` is instead upcast one vocabulary tile of
    :data:`TILE_ELEMENTS` at a time, so the products run in float32 (exactly, from the same
    values) and the extra memory is one tile.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        self.w = w
        self.tiled = not _native_matmul(w)
        self.dtype = torch.float32 if self.tiled else w.dtype  # of hidden chunks and gradients
        self.b = b.to(self.dtype) if b is not None else None
        self.tile = max(1, TILE_ELEMENTS // w.shape[1])

    def _tiles(self):
        for i in range(0, self.w.shape[0], self.tile):
            yield slice(i, i + self.tile), self.w[i : i + self.tile].float()

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``h W^T + b`` for a chunk ``h`` ``(n, H)``, as float32 (float64 for float64)."""
        h = h.to(self.dtype)
        if not self.tiled:
            z = torch.addmm(self.b, h, self.w.t()) if self.b is not None else h @ self.w.t()
            return z if z.dtype in (torch.float32, torch.float64) else z.float()
        z = h.new_empty(h.shape[0], self.w.shape[0])
        for sl, w32 in self._tiles():
            # a column block of z is a valid BLAS output (leading dimension V): no temporary
            if self.b is not None:
                torch.addmm(self.b[sl], h, w32.t(), out=z[:, sl])
            else:
                torch.mm(h, w32.t(), out=z[:, sl])
        return z

    def backward(self, g, h, rows, grad_h, grad_w) -> None:
        """Add a chunk's gradients: ``grad_h[rows] = g W`` and ``grad_w += g^T h`` (``g`` in
        ``self.dtype``, ``h`` the chunk's hidden states)."""
        h = h.to(self.dtype)
        if self.tiled:
            gh = h.new_zeros(h.shape) if grad_h is not None else None
            for sl, w32 in self._tiles():
                if gh is not None:
                    gh.addmm_(g[:, sl], w32)
                if grad_w is not None:
                    grad_w[sl].addmm_(g[:, sl].t(), h)
            if gh is not None:
                grad_h.index_copy_(0, rows, gh)
            return
        if grad_h is not None:
            grad_h.index_copy_(0, rows, g @ self.w)
        if grad_w is not None:
            if grad_w.dtype == g.dtype:
                grad_w.addmm_(g.t(), h)
            else:  # a bfloat16 / float16 product, summed in float32
                grad_w += g.t() @ h


def _new_state(plan: _Plan, hs, head: _Head, bs, need):
    """Zeroed gradient buffers and per-row statistics of a pass."""
    n_rows, dev = hs.shape[0], hs.device
    acc = torch.promote_types(head.w.dtype, torch.float32)
    grad_h = torch.zeros(hs.shape, dtype=head.dtype, device=dev) if need[0] else None
    grad_w = torch.zeros(head.w.shape, dtype=acc, device=dev) if need[1] else None
    grad_b = torch.zeros(bs.shape, dtype=torch.float32, device=dev) if need[2] else None
    plan.stats = {
        k: torch.zeros(n_rows, dtype=torch.float32, device=dev)
        for k in ("per_item", "weights", "student_entropy", "teacher_entropy")
    }
    return grad_h, grad_w, grad_b


def _step_function(plan: _Plan, cfg: ChunkConfig, largest: int) -> tuple[Callable, bool]:
    """The chunk step, and whether it is compiled (a compiled step is shared by every loss with
    the same configuration)."""
    mode = plan.compile
    if mode == "auto":
        mode = largest >= AUTO_COMPILE_MIN and not getattr(plan.owner, "_compile_failed", False)
    if not mode:
        return functools.partial(chunk_step, cfg), False
    key = (cfg.spec.describe(), *(getattr(cfg, f) for f in cfg.__dataclass_fields__ if f != "spec"))
    step = _COMPILED.get(key)
    if step is None:
        step = _COMPILED[key] = torch.compile(functools.partial(chunk_step, cfg))
    return step, True


def _fast_pass(plan, hs, ws, bs, ht, wt, bt, need):
    """Loss and gradients with the closed-form chunk step; the last value says whether every
    value was finite (else the caller recomputes with :func:`_safe_pass`)."""
    dev = hs.device
    head = _Head(ws, bs)
    grad_h, grad_w, grad_b = _new_state(plan, hs, head, bs, need)
    kd = bool(plan.kd_weight)
    t_head = _Head(wt, bt) if kd else None
    cfg = ChunkConfig(
        spec=plan.spec,
        kd=kd,
        ce=bool(plan.ce_weight),
        ea_kind=plan.ea.kind if plan.ea is not None else None,
        sequence=plan.ea is not None and plan.ea.granularity == "sequence",
        entropy_temperature=plan.ea.temperature if plan.ea is not None else None,
        max_entropy=plan.max_entropy,
        need_grad=any(need),
        grad_bias=need[2],
        grad_dtype=head.dtype,
    )
    largest = max((len(r) for r in plan.chunks), default=0) * ws.shape[0]
    step, compiled = _step_function(plan, cfg, largest)
    kd_scale = torch.tensor(plan.kd_weight / plan.denom, dtype=torch.float32, device=dev)
    ce_scale = torch.tensor(plan.ce_weight / plan.denom, dtype=torch.float32, device=dev)
    sums = torch.zeros(3, dtype=torch.float32, device=dev)  # distill, ce, check
    for rows, seg in zip(plan.chunks, plan.segments, strict=True):
        h = hs.index_select(0, rows)
        zs = head.logits(h)
        zt = t_head.logits(ht.index_select(0, rows)) if kd else None
        target = plan.labels.index_select(0, rows) if plan.ce_weight else None
        args = (zs, zt, seg, target, kd_scale, ce_scale)
        del zs, zt  # the step may overwrite and free them
        if compiled:
            for x in args[:4]:
                if x is not None:  # the last chunk's row count must not recompile
                    torch._dynamo.maybe_mark_dynamic(x, 0)
            try:
                g, g_b, out = step(*args)
            except Exception as exc:  # any compiler failure falls back to eager
                if plan.compile is True:
                    raise
                _compile_failed(plan, exc)
                step, compiled = functools.partial(chunk_step, cfg), False
                g, g_b, out = step(*args)
        else:
            g, g_b, out = step(*args)
        del args
        for k, st in plan.stats.items():
            st.index_copy_(0, rows, out[k].to(torch.float32))
        sums += torch.stack((out["distill"], out["ce"], out["check"])).to(torch.float32)
        if g is not None:
            head.backward(g, h, rows, grad_h, grad_w)
            if grad_b is not None:
                grad_b += g_b
        del g
    distill, ce = sums[0] / plan.denom, sums[1] / plan.denom
    total = plan.kd_weight * distill + plan.ce_weight * ce
    plan.terms = {"distill": distill, "ce": ce}
    return total, grad_h, grad_w, grad_b, math.isfinite(float(sums[2]))


def _compile_failed(plan: _Plan, exc: Exception) -> None:
    if plan.owner is not None:
        plan.owner._compile_failed = True
    warnings.warn(
        f"ChunkedTokenDistillation: torch.compile of the chunk step failed "
        f"({type(exc).__name__}); using the eager step (pass compile=False to skip the attempt)",
        RuntimeWarning,
        stacklevel=4,
    )


def _safe_pass(plan, hs, ws, bs, ht, wt, bt, need):
    """The autograd path over :meth:`Divergence.rows`, used when a chunk met non-finite values:
    it drops ``-inf`` vocabulary entries (masked logits) from both distributions, and names
    the input that carried NaN or inf if the loss is still not finite."""
    dev = hs.device
    head = _Head(ws, bs)
    t_head = _Head(wt, bt)
    grad_h, grad_w, grad_b = _new_state(plan, hs, head, bs, need)
    stats = plan.stats
    total = torch.zeros((), dtype=torch.float32, device=dev)
    terms = {k: torch.zeros((), dtype=torch.float32, device=dev) for k in ("distill", "ce")}
    t_ent = plan.ea.temperature if plan.ea is not None else None
    any_grad = any(need)
    for rows, seg in zip(plan.chunks, plan.segments, strict=True):
        h = hs.index_select(0, rows)
        with torch.no_grad():
            zs = head.logits(h).float()
        zs.requires_grad_(any_grad)
        w = None
        with torch.enable_grad():
            chunk_loss = torch.zeros((), dtype=torch.float32, device=dev)
            if plan.kd_weight:  # kd_weight = 0 (plain SFT) skips the teacher entirely
                with torch.no_grad():
                    zt = t_head.logits(ht.index_select(0, rows)).float()
                per, h_s, h_t = plan.spec.rows(zs, zt, t_ent)
                check_finite(per.detach(), ("student logits", zs.detach()), ("teacher logits", zt))
                if plan.ea is not None:
                    w = _chunk_weights(plan.ea, plan.max_entropy, h_s, h_t, seg)
                    distill = (per * w).sum() / plan.denom
                else:
                    distill = per.sum() / plan.denom
                chunk_loss = chunk_loss + plan.kd_weight * distill
                terms["distill"] += distill.detach()
                stats["per_item"][rows] = per.detach()
            if plan.ce_weight:
                # hard-label cross-entropy at T = 1, never entropy-weighted
                target = plan.labels[rows]
                ce = (torch.logsumexp(zs, -1) - zs.gather(1, target[:, None]).squeeze(1)).sum()
                ce = ce / plan.denom
                chunk_loss = chunk_loss + plan.ce_weight * ce
                terms["ce"] += ce.detach()
        total += chunk_loss.detach()
        if w is not None:
            stats["weights"][rows] = w
            stats["student_entropy"][rows] = h_s
            stats["teacher_entropy"][rows] = h_t
        if not any_grad:
            continue
        (g,) = torch.autograd.grad(chunk_loss, zs)
        head.backward(g.to(head.dtype), h, rows, grad_h, grad_w)
        if grad_b is not None:
            grad_b += g.sum(0)
    plan.terms = terms
    return total, grad_h, grad_w, grad_b


class _ChunkedFunction(torch.autograd.Function):
    """Gradients are formed in the forward pass; backward only scales them by ``grad_output``."""

    @staticmethod
    def forward(ctx, hs, ws, bs, ht, wt, bt, plan):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        *result, finite = _fast_pass(plan, hs, ws, bs, ht, wt, bt, need)
        if not finite:  # -inf (masked) logits, or NaN / inf to report
            result = _safe_pass(plan, hs, ws, bs, ht, wt, bt, need)
        total, gh, gw, gb = result
        ctx.dtypes = (hs.dtype, ws.dtype, bs.dtype if bs is not None else None)
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0, device=hs.device) for g in (gh, gw, gb))
        )
        ctx.present = (gh is not None, gw is not None, gb is not None)
        return total.to(torch.float32)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        # a loss used as is (grad_output 1, the usual case) hands its buffers over: no copy of
        # the (V, H) gradient; one host sync per backward, not per chunk
        one = bool(grad_out == 1)
        grads = []
        for g, present, dtype in zip(ctx.saved_tensors, ctx.present, ctx.dtypes, strict=True):
            grads.append((g if one else g * grad_out).to(dtype) if present else None)
        return grads[0], grads[1], grads[2], None, None, None, None


def _check_hidden(hidden: Any, weight: Any, bias: Any, who: str) -> None:
    for name, t in ((f"{who}_hidden", hidden), (f"{who}_weight", weight)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(t).__name__}")
    if weight.dim() != 2:
        raise ValueError(
            f"{who}_weight must be the lm_head weight of shape (V, H), got {tuple(weight.shape)}"
        )
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{who}_hidden has hidden size {hidden.shape[-1]} but {who}_weight has shape "
            f"{tuple(weight.shape)} (V, H); pass the final hidden states (after the last norm) "
            f"and model.get_output_embeddings().weight"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(
            f"{who}_bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )


class ChunkedTokenDistillation(nn.Module):
    r"""Token-level (EA-)KD for causal LMs without materialising the ``(B*T, V)`` logits.

    .. math::
        L = \frac{1}{D}\sum_{b,t} m_{b,t}\, w_{b,t}\, \ell(q_{b,t}, p_{b,t}),\qquad
        q = \mathrm{softmax}((h^S W_S^\top + b_S)/T),\ p = \mathrm{softmax}((h^T W_T^\top + b_T)/T)

    with ``l`` a token divergence, ``m`` the valid-token mask (``labels != ignore_index``), ``D``
    the valid-token count (or ``num_items``), and ``w`` the detached EA weight configured by an
    :class:`eakd.core.EASettings`, exactly as :class:`eakd.EntropyAdaptive` computes it on the
    full logits: per token (``granularity="item"``, ``w = 0.5 H^T (1 + H^S / H_ub)`` from that
    token's entropies at ``T'``) or per sequence (``granularity="sequence"``, the same formula
    on the mean entropies over the sequence's valid tokens, so ``w = 1`` reproduces the
    token-mean baseline exactly). Without EA, ``w = 1``.

    Args:
        divergence: ``forward_kl``, ``reverse_kl``, ``jsd``, ``skew_kl``, ``skew_reverse_kl``
            or ``tvd``; its hyper-parameters go in ``**params`` (``beta``, ``alpha``, ...).
        ea: the EA settings; ``True`` (the default) means ``EASettings(enabled=True)``,
            ``False``/``None`` no EA, and an :class:`~eakd.core.EASettings` applies EA when its
            ``enabled`` is set. ``normalize`` and ``weight_logits="standardized"`` need the full
            logits: use :class:`eakd.EntropyAdaptive` for them.
        granularity, entropy_temperature, max_entropy, kind: keyword forms of the ``ea`` fields
            ``granularity``, ``temperature`` (``T'``), ``max_entropy`` (``None``: ``log V``; set
            it for padded vocabularies) and ``kind``, applied over ``ea``.
        temperature: the distillation temperature ``T`` (1 in DistiLLM).
        chunk_size: rows per chunk; ``None`` (the default) takes ``chunk_budget // V`` rows.
            With ``granularity="sequence"`` a chunk holds whole sequences, so it grows to the
            longest sequence's valid-token count when that is larger.
        chunk_budget: elements of one chunk's ``(rows, V)`` logits when ``chunk_size`` is
            ``None`` (:data:`DEFAULT_CHUNK_BUDGET`, 32 MB in float32); the loss's peak memory is
            a few times that, above the ``(B*T, H)`` and ``(V, H)`` gradients.
        compile: ``torch.compile`` the chunk step (divergence, entropies, weights and logit
            gradient from the chunk's logits, fused; the matrix products run as they are):
            ``True``, ``False`` (eager), or
            ``"auto"`` (the default): compile when a chunk has at least
            :data:`AUTO_COMPILE_MIN` logits, and fall back to the eager step with a warning if
            compilation fails. Both compute the same closed-form gradients.
        ignore_index: label value of prompt and padding positions.
        kd_weight, ce_weight: the returned loss is ``kd_weight * L + ce_weight * CE`` with
            ``CE`` the hard-label cross-entropy of the student (``T = 1``, not entropy-weighted,
            same normalisation ``D``), computed in the same chunks; DistiLLM's ``kd_ratio`` is
            ``kd_weight = kd_ratio, ce_weight = 1 - kd_ratio``. ``.last_terms`` holds both
            terms' values after a call.

    Shapes (``forward``):
        student_hidden ``(B, T, H_S)`` or ``(N, H_S)``; student_weight ``(V, H_S)``;
        teacher_hidden ``(B, T, H_T)`` / ``(N, H_T)``; teacher_weight ``(V, H_T)``; labels /
        mask ``(B, T)`` / ``(N,)``, aligned with the hidden states (label ``t`` is the token
        predicted from position ``t``). ``granularity="sequence"`` needs the ``(B, T, H)`` form.
        Returns a float32 scalar. The teacher receives no gradient.
    """

    def __init__(
        self,
        divergence: str = "forward_kl",
        *,
        ea: EASettings | bool | None = True,
        granularity: str | None = None,
        entropy_temperature: float | None = None,
        max_entropy: float | None = None,
        kind: str | None = None,
        temperature: float = 1.0,
        chunk_size: int | None = None,
        chunk_budget: int = DEFAULT_CHUNK_BUDGET,
        compile: bool | str = "auto",
        ignore_index: int = -100,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        **params: Any,
    ) -> None:
        super().__init__()
        if not kd_weight >= 0 or not ce_weight >= 0 or kd_weight + ce_weight <= 0:
            raise ValueError(
                f"kd_weight and ce_weight must be >= 0 and not both 0, got {kd_weight}, {ce_weight}"
            )
        self.spec = Divergence.build(divergence, temperature, **params)
        if isinstance(ea, bool) or ea is None:
            ea = EASettings(enabled=bool(ea))
        elif not isinstance(ea, EASettings):
            raise TypeError(f"ea must be an EASettings or a bool, got {type(ea).__name__}")
        options = {"granularity": granularity, "temperature": entropy_temperature, "kind": kind}
        options = {k: v for k, v in options.items() if v is not None}
        if max_entropy is not None:
            options["max_entropy"] = max_entropy
        ea = EASettings.from_options(ea, **options)
        if ea.enabled and (ea.normalize or ea.weight_logits != "raw"):
            raise ValueError(
                "the chunked loss supports ea.normalize=false and ea.weight_logits=raw only "
                "(both others need every token's logits at once); use the full-logit path "
                "(EntropyAdaptive over a token loss) for them"
            )
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        if isinstance(chunk_budget, bool) or not isinstance(chunk_budget, int) or chunk_budget < 1:
            raise ValueError(
                f"chunk_budget must be a positive integer (elements of a chunk's logits), "
                f"got {chunk_budget!r}"
            )
        if not any(compile is m for m in COMPILE_MODES):
            raise ValueError(f"compile must be 'auto', True or False, got {compile!r}")
        self.chunk_budget = chunk_budget
        self.compile = compile
        self._compile_failed = False
        self.settings = ea
        self.chunk_size = chunk_size
        self.ignore_index = int(ignore_index)
        self.kd_weight = float(kd_weight)
        self.ce_weight = float(ce_weight)
        self.last_stats: EAStats | None = None
        self.last_terms: dict[str, float] = {}

    @property
    def ea(self) -> bool:
        """Whether EA weights are applied."""
        return self.settings.enabled

    @property
    def granularity(self) -> str:
        return self.settings.granularity

    def forward(
        self,
        student_hidden: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_hidden: torch.Tensor,
        teacher_weight: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        num_items: int | float | torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """The reduced loss (float32 scalar); see the class docstring for shapes."""
        _check_hidden(student_hidden, student_weight, student_bias, "student")
        _check_hidden(teacher_hidden, teacher_weight, teacher_bias, "teacher")
        if student_weight.shape[0] != teacher_weight.shape[0]:
            raise ValueError(
                f"the student's vocabulary has {student_weight.shape[0]} entries but the "
                f"teacher's has {teacher_weight.shape[0]}; token-level distillation needs a "
                "shared tokenizer and vocabulary"
            )
        lead = student_hidden.shape[:-1]
        if teacher_hidden.shape[:-1] != lead:
            raise ValueError(
                f"student_hidden has tokens {tuple(lead)} but teacher_hidden has "
                f"{tuple(teacher_hidden.shape[:-1])}; both must cover the same positions"
            )
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"reduction must be 'mean' or 'sum' for the chunked loss, got {reduction!r} "
                "(per-token values are in .last_stats.per_item)"
            )
        ea = self.settings
        if ea.granularity == "sequence" and len(lead) != 2:
            raise ValueError(
                "granularity='sequence' needs hidden states of shape (B, T, H) to know the "
                f"sequences, got {tuple(student_hidden.shape)}"
            )
        valid = self._mask(labels, mask, lead, student_hidden.device)
        if reduction == "sum":
            denom = 1.0
        elif num_items is not None:  # 0 only when every token is masked: nothing to divide
            denom = check_num_items(num_items, valid, valid.numel()) or 1.0
        else:
            denom = max(float(valid.sum()), 1.0)
        seq_mask = valid if ea.granularity == "sequence" else valid.reshape(-1)
        rows = self.chunk_size or max(1, self.chunk_budget // student_weight.shape[0])
        chunks, segments = _make_chunks(seq_mask, ea.granularity, rows)
        h_ub = ea.max_entropy_for(student_weight.shape[0])
        if self.ce_weight and labels is None:
            raise ValueError("ce_weight > 0 needs labels (the hard targets of the CE term)")
        plan = _Plan(
            self.spec,
            ea if ea.enabled else None,
            h_ub,
            chunks,
            segments,
            denom,
            self.kd_weight,
            self.ce_weight,
            labels.reshape(-1).clamp_min(0) if labels is not None else None,
            self.compile,
            self,
        )
        hs = student_hidden.reshape(-1, student_hidden.shape[-1])
        ht = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
        wt = teacher_weight.detach()
        bt = teacher_bias.detach() if teacher_bias is not None else None
        loss = _ChunkedFunction.apply(hs, student_weight, student_bias, ht, wt, bt, plan)
        self._record(plan, valid, lead)
        names = list(plan.terms or {})
        values = torch.stack([plan.terms[k] for k in names]).tolist() if names else []
        self.last_terms = dict(zip(names, values, strict=True))
        return loss

    def _mask(self, labels, mask, lead, device) -> torch.Tensor:
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != lead:
                raise ValueError(
                    f"mask must be a boolean tensor of shape {tuple(lead)}, got "
                    f"{mask.dtype} {tuple(mask.shape)}"
                )
            return mask
        if labels is not None:
            if labels.shape != lead:
                raise ValueError(
                    f"labels have shape {tuple(labels.shape)} but the hidden states cover "
                    f"{tuple(lead)} positions; pass labels aligned with the hidden states "
                    "(hidden[:, :-1] with labels[:, 1:] for a causal LM)"
                )
            return labels != self.ignore_index
        return torch.ones(lead, dtype=torch.bool, device=device)

    def _record(self, plan: _Plan, valid: torch.Tensor, lead: torch.Size) -> None:
        st = plan.stats or {}
        view = {k: v.view(lead) for k, v in st.items()}
        if view:
            self.last_stats = EAStats(
                view["weights"] if self.ea else torch.ones(lead, device=valid.device),
                view["student_entropy"],
                view["teacher_entropy"],
                view["per_item"],
                valid,
            )

    def extra_repr(self) -> str:
        ea = ", ".join(f"{k}={v!r}" for k, v in self.settings.to_dict().items())
        size = (
            f"chunk_size={self.chunk_size}"
            if self.chunk_size
            else f"chunk_budget={self.chunk_budget}"
        )
        return f"{self.spec.describe()}, ea=EASettings({ea}), {size}, compile={self.compile!r}"
