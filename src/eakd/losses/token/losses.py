"""Registered token-level distillation losses for causal LMs, over full logits ``(..., V)``.

The per-token value is one of the divergences of :mod:`eakd.losses.token.divergences`; prompt and
padding positions are marked by ``labels == ignore_index`` (-100, the Hugging Face convention)
and give 0. Reduction goes through :func:`eakd.core.reduce`: a token mean over the valid
positions of the micro-batch, or over ``num_items`` (``num_items_in_batch``: the valid-token count
of the whole accumulated / data-parallel batch, so gradient accumulation and DDP stay exact).
"""

from __future__ import annotations

from typing import Any

import torch

from ...core.reduction import reduce
from ...core.validation import check_pair
from ..base import DistillationLoss, finish
from ..registry import register_loss
from .divergences import Divergence

__all__ = [
    "ForwardKLLoss",
    "JSDLoss",
    "ReverseKLLoss",
    "SkewKLLoss",
    "SkewReverseKLLoss",
    "TVDLoss",
    "TokenDivergenceLoss",
    "forward_kl_loss",
    "jsd_loss",
    "label_mask",
    "reverse_kl_loss",
    "skew_kl_loss",
    "skew_reverse_kl_loss",
    "token_divergence",
    "tvd_loss",
]

IGNORE_INDEX = -100


def label_mask(
    labels: torch.Tensor | None, lead_shape: torch.Size, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor | None:
    """``labels != ignore_index`` after checking that ``labels`` fits the logits' leading shape.

    ``labels`` must be aligned with the logits: ``labels[..., t]`` is the token predicted from
    position ``t`` (for a causal LM, shift once: ``logits[:, :-1]`` with ``labels[:, 1:]``).
    """
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must hold integer token ids with {ignore_index} at ignored positions, "
            f"got dtype {labels.dtype}"
        )
    if labels.shape != lead_shape:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but the logits' leading shape is "
            f"{tuple(lead_shape)}; labels must be aligned with the logits (for a causal LM pass "
            "logits[:, :-1] with labels[:, 1:])"
        )
    return labels != ignore_index


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    divergence: str | Divergence = "forward_kl",
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    entropy_temperature: float | None = None,
    **params: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token divergence ``(...)`` in the inputs' dtype, 0 where ``labels == ignore_index``.

    Also returns the float32 student/teacher entropies at ``entropy_temperature`` (``None``
    when not requested), computed from the same log-softmaxes when possible.
    """
    s, t = check_pair(student_logits, teacher_logits)
    spec = (
        divergence
        if isinstance(divergence, Divergence)
        else Divergence.build(divergence, temperature, **params)
    )
    mask = label_mask(labels, s.shape[:-1], ignore_index)
    per, hs, ht = spec.rows(s, t.detach(), entropy_temperature)
    if mask is not None:
        zero = torch.zeros((), dtype=per.dtype, device=per.device)
        per = torch.where(mask, per, zero)
    return finish(per, student_logits, teacher_logits, mask), hs, ht


class TokenDivergenceLoss(DistillationLoss):
    """Base of the registered token divergences (module form).

    ``per_item_loss(student_logits, teacher_logits, labels=None)`` returns the per-token loss of
    shape ``logits.shape[:-1]`` (0 at ignored positions); ``forward`` (and
    :class:`eakd.EntropyAdaptive`) reduce it with the mask ``labels != ignore_index``
    (:meth:`item_mask`) unless an explicit ``mask`` is given: a token mean over the valid
    positions, or over ``num_items``.
    """

    divergence: str = ""

    def __init__(
        self, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX, **params: Any
    ) -> None:
        super().__init__()
        self.spec = Divergence.build(self.divergence, temperature, **params)
        self.ignore_index = int(ignore_index)

    @property
    def temperature(self) -> float:
        return self.spec.temperature

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        return token_divergence(
            student_logits,
            teacher_logits,
            target,
            divergence=self.spec,
            ignore_index=self.ignore_index,
        )[0]

    def per_item_with_entropies(self, student_logits, teacher_logits, target, entropy_temperature):
        return token_divergence(
            student_logits,
            teacher_logits,
            target,
            divergence=self.spec,
            ignore_index=self.ignore_index,
            entropy_temperature=entropy_temperature,
        )

    def item_mask(self, target: torch.Tensor | None) -> torch.Tensor | None:
        """``labels != ignore_index``: the tokens that count when no ``mask`` is given."""
        if target is None:
            return None
        return label_mask(target, target.shape, self.ignore_index)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.spec.params.items())
        return f"temperature={self.temperature}{extra}, ignore_index={self.ignore_index}"


@register_loss("forward_kl")
class ForwardKLLoss(TokenDivergenceLoss):
    """``KL(p || q)`` per token; ``form="cross_entropy"`` gives DistiLLM's ``-sum p log q``."""

    divergence = "forward_kl"

    def __init__(
        self, temperature: float = 1.0, form: str = "kl", ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__(temperature, ignore_index, form=form)


@register_loss("reverse_kl")
class ReverseKLLoss(TokenDivergenceLoss):
    """``KL(q || p)`` per token (MiniLLM / DistiLLM "RKL")."""

    divergence = "reverse_kl"

    def __init__(self, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(temperature, ignore_index)


@register_loss("jsd")
class JSDLoss(TokenDivergenceLoss):
    """Generalized JSD(beta) per token; exact forward KL at ``beta=0``, reverse KL at ``beta=1``.

    ``weighting="interpolate"`` (default) is continuous in ``beta``; ``weighting="gkd"`` is
    GKD's Eq. 1 (DistiLLM's JSD: ``beta=0.1, weighting="gkd"``). See
    :mod:`eakd.losses.token.divergences`.
    """

    divergence = "jsd"

    def __init__(
        self,
        beta: float = 0.5,
        temperature: float = 1.0,
        weighting: str = "interpolate",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(temperature, ignore_index, beta=beta, weighting=weighting)


@register_loss("skew_kl")
class SkewKLLoss(TokenDivergenceLoss):
    """Skew KL ``KL(p || alpha p + (1 - alpha) q)`` per token (DistiLLM, alpha 0.1)."""

    divergence = "skew_kl"

    def __init__(
        self,
        alpha: float = 0.1,
        temperature: float = 1.0,
        form: str = "kl",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(temperature, ignore_index, alpha=alpha, form=form)


@register_loss("skew_reverse_kl")
class SkewReverseKLLoss(TokenDivergenceLoss):
    """Skew reverse KL ``KL(q || (1 - alpha) p + alpha q)`` per token (DistiLLM, alpha 0.1)."""

    divergence = "skew_reverse_kl"

    def __init__(
        self, alpha: float = 0.1, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__(temperature, ignore_index, alpha=alpha)


@register_loss("tvd")
class TVDLoss(TokenDivergenceLoss):
    """Total variation distance ``0.5 sum_v |p_v - q_v|`` per token."""

    divergence = "tvd"

    def __init__(self, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(temperature, ignore_index)


def _functional(name: str, doc: str):
    def fn(
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        weight: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        reduction: str = "mean",
        num_items: int | float | torch.Tensor | None = None,
        temperature: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        **params: Any,
    ) -> torch.Tensor:
        per, _, _ = token_divergence(
            student_logits,
            teacher_logits,
            labels,
            divergence=name,
            temperature=temperature,
            ignore_index=ignore_index,
            **params,
        )
        if mask is None:
            mask = label_mask(labels, per.shape, ignore_index)
        return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)

    fn.__name__ = fn.__qualname__ = f"{name}_loss"
    fn.__doc__ = (
        f"{doc}\n\n"
        "Args:\n"
        "    student_logits, teacher_logits: ``(..., V)`` logits (e.g. ``(B, T, V)``);\n"
        "        computed in float32, the teacher is detached.\n"
        "    labels: optional ``(...)`` token ids aligned with the logits; ``ignore_index``\n"
        "        positions give 0 and are left out of the mean.\n"
        "    weight, mask, reduction, num_items: see :func:`eakd.core.reduce`.\n"
        "    temperature: ``T`` of both softmaxes (no ``T^2`` factor).\n"
        "    **params: the divergence's hyper-parameters (see :mod:`eakd.losses.token`).\n"
    )
    return fn


forward_kl_loss = _functional("forward_kl", "Forward KL ``KL(p || q)`` per token, reduced.")
reverse_kl_loss = _functional("reverse_kl", "Reverse KL ``KL(q || p)`` per token, reduced.")
jsd_loss = _functional("jsd", "Generalized JSD(beta) per token, reduced.")
skew_kl_loss = _functional("skew_kl", "Skew KL ``KL(p || a p + (1 - a) q)``, reduced.")
skew_reverse_kl_loss = _functional(
    "skew_reverse_kl", "Skew reverse KL ``KL(q || (1 - a) p + a q)``, reduced."
)
tvd_loss = _functional("tvd", "Total variation ``0.5 sum |p - q|`` per token, reduced.")
