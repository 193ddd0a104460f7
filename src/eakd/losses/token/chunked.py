r"""Memory-flat EA-KD for causal LMs: the loss from final hidden states and ``lm_head`` weights.

The full-logit path holds several ``(B*T, V)`` float32 tensors (student and teacher logits, their
log-softmaxes, the gradient): 0.8 GB each for 4096 tokens and a 49k vocabulary. Here the valid
tokens are processed ``chunk_size`` rows at a time. For each chunk, in float32, the student and
teacher logits are formed from the hidden states, the divergence, both entropies and the EA
weights are computed, and the gradient with respect to the student's hidden states, ``lm_head``
weight and bias is formed immediately (the design of Liger-Kernel's fused linear distillation,
Hsu et al. 2024); only ``(B*T, H)`` and ``(V, H)`` gradients outlive a chunk, so peak memory
does not grow with ``B*T*V``.

Because the EA weights are detached, ``d(w l)/dz = w dl/dz``: the weight only rescales each
row's gradient, so it is applied inside the chunk. With ``granularity="sequence"`` the chunks
hold whole sequences, so each chunk has the sequence-mean entropies its weights need and the
whole computation stays a single pass.

The values and gradients equal those of the full-logit path (the registered token losses with
:func:`eakd.core.reduce`) up to float rounding; the per-token math is the same code
(:class:`eakd.losses.token.divergences.Divergence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...core.reduction import check_num_items
from ...core.settings import EASettings, EAStats
from ...core.validation import check_finite
from ...core.weights import segment_means, weights_from_entropies
from .divergences import Divergence

__all__ = ["ChunkedTokenDistillation"]


@dataclass
class _Plan:
    spec: Divergence
    ea: EASettings | None  # None: no EA
    max_entropy: float
    chunk_size: int
    chunks: list[torch.Tensor]
    segments: list[torch.Tensor | None]
    denom: float
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    labels: torch.Tensor | None = None
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


def _chunked_pass(plan, hs, ws, bs, ht, wt, bt, need):
    """Loss and gradients for all chunks. ``need`` = (hidden, weight, bias) gradient flags."""
    n_rows, dev = hs.shape[0], hs.device
    ws32, wt32 = ws.float(), wt.float()
    bs32 = bs.float() if bs is not None else None
    bt32 = bt.float() if bt is not None else None
    grad_h = torch.zeros(hs.shape, dtype=torch.float32, device=dev) if need[0] else None
    grad_w = torch.zeros(ws32.shape, dtype=torch.float32, device=dev) if need[1] else None
    grad_b = torch.zeros(bs32.shape, dtype=torch.float32, device=dev) if need[2] else None
    total = torch.zeros((), dtype=torch.float32, device=dev)
    terms = {k: torch.zeros((), dtype=torch.float32, device=dev) for k in ("distill", "ce")}
    stats = {
        k: torch.zeros(n_rows, dtype=torch.float32, device=dev)
        for k in ("per_item", "weights", "student_entropy", "teacher_entropy")
    }
    t_ent = plan.ea.temperature if plan.ea is not None else None
    any_grad = any(need)
    for rows, seg in zip(plan.chunks, plan.segments, strict=True):
        h = hs[rows].float()
        with torch.no_grad():
            zs = torch.addmm(bs32, h, ws32.t()) if bs32 is not None else h @ ws32.t()
        zs.requires_grad_(any_grad)
        w = None
        with torch.enable_grad():
            chunk_loss = torch.zeros((), dtype=torch.float32, device=dev)
            if plan.kd_weight:  # kd_weight = 0 (plain SFT) skips the teacher entirely
                with torch.no_grad():
                    zt = ht[rows].float() @ wt32.t()
                    if bt32 is not None:
                        zt += bt32
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
        if grad_h is not None:
            grad_h[rows] = g @ ws32
        if grad_w is not None:
            grad_w.addmm_(g.t(), h)
        if grad_b is not None:
            grad_b += g.sum(0)
    plan.stats = stats
    plan.terms = terms
    return total, grad_h, grad_w, grad_b


class _ChunkedFunction(torch.autograd.Function):
    """Gradients are formed in the forward pass; backward only scales them by ``grad_output``."""

    @staticmethod
    def forward(ctx, hs, ws, bs, ht, wt, bt, plan):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        total, gh, gw, gb = _chunked_pass(plan, hs, ws, bs, ht, wt, bt, need)
        ctx.dtypes = (hs.dtype, ws.dtype, bs.dtype if bs is not None else None)
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0, device=hs.device) for g in (gh, gw, gb))
        )
        ctx.present = (gh is not None, gw is not None, gb is not None)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grads = []
        for g, present, dtype in zip(ctx.saved_tensors, ctx.present, ctx.dtypes, strict=True):
            grads.append((g * grad_out).to(dtype) if present else None)
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
        chunk_size: rows per chunk (memory ~ ``chunk_size * V`` floats times a small constant).
            With ``granularity="sequence"`` a chunk holds whole sequences, so it grows to the
            longest sequence's valid-token count when that is larger.
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
        chunk_size: int = 1024,
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
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
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
        chunks, segments = _make_chunks(seq_mask, ea.granularity, self.chunk_size)
        h_ub = ea.max_entropy_for(student_weight.shape[0])
        if self.ce_weight and labels is None:
            raise ValueError("ce_weight > 0 needs labels (the hard targets of the CE term)")
        plan = _Plan(
            self.spec,
            ea if ea.enabled else None,
            h_ub,
            self.chunk_size,
            chunks,
            segments,
            denom,
            self.kd_weight,
            self.ce_weight,
            labels.reshape(-1).clamp_min(0) if labels is not None else None,
        )
        hs = student_hidden.reshape(-1, student_hidden.shape[-1])
        ht = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
        wt = teacher_weight.detach()
        bt = teacher_bias.detach() if teacher_bias is not None else None
        loss = _ChunkedFunction.apply(hs, student_weight, student_bias, ht, wt, bt, plan)
        self._record(plan, valid, lead)
        self.last_terms = {k: float(v) for k, v in (plan.terms or {}).items()}
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
        return f"{self.spec.describe()}, ea=EASettings({ea}), chunk_size={self.chunk_size}"
