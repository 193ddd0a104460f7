r"""Per-token divergences between a teacher distribution ``p`` and a student distribution ``q``.

Every function here works on float32 logits of shape ``(..., V)`` and returns one value per row,
shape ``(...)``. They are the single definition of the math, shared by the full-logit losses
(:mod:`eakd.losses.token.losses`) and the chunked path (:mod:`eakd.losses.token.chunked`), so the
two cannot drift apart.

Definitions (``p = softmax(z_t / T)``, ``q = softmax(z_s / T)``, natural log; DistiLLM, Ko et al.,
ICML 2024; GKD, Agarwal et al., ICLR 2024):

=================  ===========================================================================
``forward_kl``     ``KL(p || q) = sum_v p_v (log p_v - log q_v)``; ``form="cross_entropy"``
                   gives DistiLLM's ``-sum_v p_v log q_v`` (``= KL + H(p)``, same gradient)
``reverse_kl``     ``KL(q || p)``
``jsd``            ``m = beta p + (1 - beta) q``;
                   ``weighting="interpolate"``: ``(1 - beta) KL(p || m) + beta KL(q || m)``, which
                   tends continuously to ``KL(p || q)`` at ``beta = 0`` and ``KL(q || p)`` at
                   ``beta = 1`` (both endpoints are computed exactly);
                   ``weighting="gkd"``: ``beta KL(p || m) + (1 - beta) KL(q || m)`` (GKD's Eq. 1;
                   DistiLLM's ``js_distance`` with lambda 0.9 is ``beta=0.1``), which vanishes as
                   ``beta -> 0 or 1``, so the endpoints are defined as forward / reverse KL.
                   At ``beta = 0.5`` both are the symmetric Jensen-Shannon divergence.
``skew_kl``        ``m = alpha p + (1 - alpha) q``; ``KL(p || m)`` (``form="cross_entropy"``:
                   DistiLLM's ``-sum_v p_v log m_v``)
``skew_reverse_kl````m = (1 - alpha) p + alpha q``; ``KL(q || m)``
``tvd``            ``0.5 sum_v |p_v - q_v|``
=================  ===========================================================================

Vocabulary entries whose logit is ``-inf`` on either side (padded vocabularies, banned tokens)
contribute 0, as in DistiLLM's ``inf_mask``. No ``T^2`` factor is applied (LLM distillation runs
at ``T = 1``; TRL and Liger use the same convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ...core.entropy import entropy_from_log_probs

__all__ = ["DIVERGENCES", "Divergence", "log_probs"]

#: name -> keyword hyper-parameters it accepts (besides ``temperature``), with their defaults.
DIVERGENCES: dict[str, dict[str, Any]] = {
    "forward_kl": {"form": "kl"},
    "reverse_kl": {},
    "jsd": {"beta": 0.5, "weighting": "interpolate"},
    "skew_kl": {"alpha": 0.1, "form": "kl"},
    "skew_reverse_kl": {"alpha": 0.1},
    "tvd": {},
}

FORMS = ("kl", "cross_entropy")
WEIGHTINGS = ("interpolate", "gkd")


def log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(z / T)`` over the last dimension, in float32."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    return torch.log_softmax(z, dim=-1)


def _all_finite(x: torch.Tensor) -> bool:
    # one reduction instead of a (N, V) boolean tensor: a -inf entry makes the sum -inf, a NaN
    # makes it NaN, and finite log-probabilities cannot overflow a float32 sum.
    return math.isfinite(float(x.detach().sum()))


def _support(log_p: torch.Tensor, log_q: torch.Tensor):
    """Log-probabilities with ``-inf`` entries replaced by 0, and the probabilities.

    Returns ``(log_p, p, log_q, q)``. Where either side is ``-inf`` both probabilities are set
    to 0, so every ``prob * (log a - log b)`` term there is exactly 0 and so is its gradient.
    """
    if _all_finite(log_p) and _all_finite(log_q):
        return log_p, log_p.exp(), log_q, log_q.exp()
    # only -inf (a zero probability) is dropped: NaN must reach the finiteness check
    keep = ~(torch.isneginf(log_p) | torch.isneginf(log_q))
    zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    log_p = torch.where(keep, log_p, zero)
    log_q = torch.where(keep, log_q, zero)
    return log_p, torch.where(keep, log_p.exp(), zero), log_q, torch.where(keep, log_q.exp(), zero)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_v a_v b_v`` per row as a batched matrix product (no ``(N, V)`` temporary)."""
    return torch.einsum("...v,...v->...", a, b)


class _Rows:
    """Log-probabilities and probabilities of one batch of rows, with the two self dot
    products ``sum p log p`` and ``sum q log q`` computed once and shared by the divergence
    and the EA entropies (KL terms are ``sum a log a - sum a log b``: no ``(N, V)`` temporary
    for ``log a - log b``)."""

    def __init__(self, lp: torch.Tensor, p: torch.Tensor, lq: torch.Tensor, q: torch.Tensor):
        self.lp, self.p, self.lq, self.q = lp, p, lq, q
        self._p_lp: torch.Tensor | None = None
        self._q_lq: torch.Tensor | None = None

    @property
    def p_lp(self) -> torch.Tensor:
        if self._p_lp is None:
            self._p_lp = _dot(self.p, self.lp)
        return self._p_lp

    @property
    def q_lq(self) -> torch.Tensor:
        if self._q_lq is None:
            self._q_lq = _dot(self.q, self.lq)
        return self._q_lq


def _log_mix(log_p: torch.Tensor, log_q: torch.Tensor, w_p: float) -> torch.Tensor:
    """``log(w_p p + (1 - w_p) q)`` computed stably in log space (``0 < w_p < 1``)."""
    return torch.logaddexp(log_p + math.log(w_p), log_q + math.log1p(-w_p))


@dataclass(frozen=True)
class Divergence:
    """A token divergence with its hyper-parameters; ``rows`` evaluates it per row.

    Args:
        name: one of :data:`DIVERGENCES`.
        temperature: ``T``; both distributions are ``softmax(z / T)``.
        params: the divergence's hyper-parameters (``beta``, ``weighting``, ``alpha``, ``form``).
    """

    name: str
    temperature: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, temperature: float = 1.0, **params: Any) -> Divergence:
        """Validate ``name`` and its hyper-parameters; fill in defaults."""
        if name not in DIVERGENCES:
            raise ValueError(
                f"unknown token divergence {name!r}; valid names: {', '.join(sorted(DIVERGENCES))}"
            )
        defaults = DIVERGENCES[name]
        for key in params:
            if key not in defaults:
                valid = ", ".join(["temperature", *defaults]) or "temperature"
                raise TypeError(
                    f"token divergence {name!r} got an unknown keyword {key!r}; valid: {valid}"
                )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        merged = {**defaults, **params}
        if "form" in merged and merged["form"] not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {merged['form']!r}")
        if "weighting" in merged and merged["weighting"] not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {merged['weighting']!r}")
        if "beta" in merged:
            beta = merged["beta"]
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
                raise ValueError(
                    f"beta must be a float in [0, 1] (0: forward KL, 1: reverse KL), got {beta!r}"
                )
            merged["beta"] = float(beta)
        if "alpha" in merged:
            alpha = merged["alpha"]
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 1:
                raise ValueError(
                    f"alpha must be a float in [0, 1) (0: no skew; 1 would give a zero loss), "
                    f"got {alpha!r}"
                )
            merged["alpha"] = float(alpha)
        return cls(name, float(temperature), merged)

    def rows(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        entropy_temperature: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per-row divergence in float32 and, if ``entropy_temperature`` is given, the detached
        student and teacher entropies at that temperature (reusing the log-softmaxes when it
        equals ``T``).

        Args:
            student_logits: ``(..., V)``, any float dtype; gradients flow to it.
            teacher_logits: ``(..., V)``; treated as a constant.

        Returns:
            ``(loss, H_S, H_T)``, each of shape ``(...)`` and float32.
        """
        t = self.temperature
        lq_raw = log_probs(student_logits, t)
        with torch.no_grad():
            lp_raw = log_probs(teacher_logits.detach(), t)
        r = _Rows(*_support(lp_raw, lq_raw))
        loss = self._loss(r)
        hs = ht = None
        if entropy_temperature is not None:
            with torch.no_grad():
                if entropy_temperature == t:  # H = -sum p log p: reuses the divergence's dots
                    h_max = math.log(r.lq.shape[-1])
                    hs = (-r.q_lq.detach()).clamp_(0.0, h_max)
                    ht = (-r.p_lp).clamp_(0.0, h_max)
                else:
                    hs = entropy_from_log_probs(log_probs(student_logits, entropy_temperature))
                    ht = entropy_from_log_probs(log_probs(teacher_logits, entropy_temperature))
        return loss, hs, ht

    def _loss(self, r: _Rows) -> torch.Tensor:
        name, prm = self.name, self.params
        lp, p, lq, q = r.lp, r.p, r.lq, r.q
        if name == "forward_kl":
            if prm["form"] == "cross_entropy":
                return -_dot(p, lq)
            return (r.p_lp - _dot(p, lq)).clamp_min(0.0)
        if name == "reverse_kl":
            return (r.q_lq - _dot(q, lp)).clamp_min(0.0)
        if name == "tvd":
            return 0.5 * (p - q).abs().sum(-1)
        if name == "jsd":
            beta = prm["beta"]
            if beta == 0.0:
                return (r.p_lp - _dot(p, lq)).clamp_min(0.0)
            if beta == 1.0:
                return (r.q_lq - _dot(q, lp)).clamp_min(0.0)
            lm = _log_mix(lp, lq, beta)
            w_p, w_q = (1.0 - beta, beta) if prm["weighting"] == "interpolate" else (beta, 1 - beta)
            kl_p = r.p_lp - _dot(p, lm)
            kl_q = r.q_lq - _dot(q, lm)
            return (w_p * kl_p + w_q * kl_q).clamp_min(0.0)
        if name == "skew_kl":
            alpha = prm["alpha"]
            lm = lq if alpha == 0.0 else _log_mix(lp, lq, alpha)
            if prm["form"] == "cross_entropy":
                return -_dot(p, lm)
            return (r.p_lp - _dot(p, lm)).clamp_min(0.0)
        if name == "skew_reverse_kl":
            alpha = prm["alpha"]
            lm = lp if alpha == 0.0 else _log_mix(lp, lq, 1.0 - alpha)
            return (r.q_lq - _dot(q, lm)).clamp_min(0.0)
        raise AssertionError(name)  # pragma: no cover - names are validated in build()

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}(temperature={self.temperature}{', ' + extra if extra else ''})"
