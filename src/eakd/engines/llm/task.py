"""The LLM distillation objective for one micro-batch: ``kd_ratio * distill + (1 - kd_ratio) * CE``.

Two interchangeable paths compute the distillation term:

* full logits (``chunk_size=None``): the models' logits ``(B, T, V)``, a registered token loss
  (:mod:`eakd.losses.token`) wrapped in :class:`eakd.EntropyAdaptive` for EA;
* chunked (``chunk_size=int``): the final hidden states and both ``lm_head`` weights go to
  :class:`eakd.losses.token.ChunkedTokenDistillation`, which never materialises the logits.

Both take EA's options from one :class:`eakd.core.EASettings` (the config's ``ea:`` section).
With ``vocab_size`` (the config's ``model.vocab: trim``) both models' logits are cut to the
first ``vocab_size`` entries: ``logits[..., :V]`` on the full path, the ``lm_head`` rows
``W[:V]`` (and bias) on the chunked one; ``H_ub`` is then ``log V`` on both.

Both use labels shifted once (position ``t`` predicts token ``t + 1``), a token mean over the
response tokens of the micro-batch or over ``num_items`` (the valid-token count of the whole
accumulated / data-parallel batch), and float32 entropies and divergences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...adaptive import EntropyAdaptive
from ...core import EASettings
from ...losses import build_loss
from ...losses.token import ChunkedTokenDistillation
from ...losses.token.heads import check_head, chunked_head
from .data import IGNORE_INDEX
from .models import CausalLMHidden, check_same_vocabulary, unwrap_peft

__all__ = ["DistillationObjective", "ObjectiveConfig", "build_divergence", "count_items"]

_FULL_LOGITS = "set loss.chunk_size: null to use the full logits"


@dataclass
class ObjectiveConfig:
    """The training objective (``loss:`` section of an LLM config).

    ``divergence`` is a registered token loss and ``params`` its hyper-parameters (``beta``,
    ``weighting``, ``alpha``, ``form``). ``kd_ratio`` weighs distillation against the
    ground-truth CE (DistiLLM: 1.0; MiniLLM's KD: 0.5; 0.0 is plain SFT, no teacher needed).
    ``chunk_size`` selects the memory-flat path (``null``: full logits). EA is configured apart,
    by :class:`eakd.core.EASettings`.
    """

    divergence: str = "forward_kl"
    params: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    kd_ratio: float = 1.0
    chunk_size: int | None = None


def count_items(labels: torch.Tensor) -> torch.Tensor:
    """Number of predicted tokens in a batch: ``labels[:, 1:] != -100`` (labels are shifted)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def build_divergence(config: ObjectiveConfig, ea: EASettings | None = None) -> nn.Module:
    """The distillation loss of ``config``: a :class:`ChunkedTokenDistillation` (chunked path)
    or a registered token loss, wrapped in :class:`eakd.EntropyAdaptive` when ``ea.enabled``.
    Needs no model, so options the divergence cannot use fail before any weights load."""
    if not 0.0 <= config.kd_ratio <= 1.0:
        raise ValueError(f"loss.kd_ratio must be in [0, 1], got {config.kd_ratio}")
    kw = {"temperature": config.temperature, **config.params}
    if config.chunk_size is not None:
        return ChunkedTokenDistillation(
            config.divergence,
            ea=ea,
            chunk_size=config.chunk_size,
            kd_weight=config.kd_ratio,
            ce_weight=1.0 - config.kd_ratio,
            **kw,
        )
    loss = build_loss(config.divergence, **kw)
    return EntropyAdaptive(loss, ea) if ea is not None and ea.enabled else loss


def _trim(weight: torch.Tensor, bias: torch.Tensor | None, size: int | None):
    if size is None or size == weight.shape[0]:
        return weight, bias
    return weight[:size], (bias[:size] if bias is not None else None)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / Accelerate wrappers (which keep it as ``.module``)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


class DistillationObjective(nn.Module):
    """Computes the loss of one micro-batch; the teacher is frozen and kept in eval mode.

    Args:
        student: a causal LM, or a :class:`CausalLMHidden` wrapper (possibly DDP-wrapped).
        teacher: a causal LM sharing the student's vocabulary, or ``None`` when
            ``kd_ratio == 0`` (SFT).
        config: :class:`ObjectiveConfig`.
        ea: the resolved EA settings; EA weights the distillation term iff ``ea.enabled``
            (``granularity`` ``sequence`` is EA-KD's sequence-level weight, METHODS 11.3 A).
        vocab_size: distil over the first ``vocab_size`` logits of both models (``len
            (tokenizer)`` for heads padded to different sizes); ``None``: the heads must match.

    ``forward(batch, num_items=None)`` returns ``{"loss", "distill", "ce", "tokens"}`` (the last
    three detached, for logging).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        config: ObjectiveConfig,
        ea: EASettings | None = None,
        vocab_size: int | None = None,
    ):
        super().__init__()
        loss = build_divergence(config, ea)
        self.config = config
        # a CausalLMHidden may arrive wrapped by DDP / Accelerate: keep the wrapper on the path
        wrapped = isinstance(_unwrap(student), CausalLMHidden)
        self.student = student if wrapped else CausalLMHidden(student)
        self.teacher = teacher
        self.vocab_size = vocab_size
        if config.kd_ratio > 0:
            if teacher is None:
                raise ValueError("loss.kd_ratio > 0 needs a teacher model (model.teacher)")
            mode = "strict" if vocab_size is None else "trim"
            check_same_vocabulary(self._inner(), teacher, vocab=mode, tokenizer_size=vocab_size)
            teacher.eval()
            teacher.requires_grad_(False)
        if isinstance(loss, ChunkedTokenDistillation):
            self.chunked = loss
            check_head(self._inner(), "student", _FULL_LOGITS)
            if teacher is not None and config.kd_ratio > 0:
                check_head(teacher, "teacher", _FULL_LOGITS)
        else:
            self.chunked = None
            self.divergence = loss

    def _inner(self) -> nn.Module:
        """The student's causal LM (inside DDP / Accelerate / PEFT wrappers)."""
        return unwrap_peft(_unwrap(self.student).model)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(
        self, batch: dict[str, torch.Tensor], num_items: int | torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        target = labels[:, 1:]
        denom = num_items if num_items is not None else count_items(labels).clamp_min(1)
        if self.chunked is not None:
            return self._chunked(ids, attn, target, denom)
        kd = self.config.kd_ratio
        v = self.vocab_size
        logits = self.student(ids, attn)[:, :-1]
        if v is not None:
            logits = logits[..., :v]
        zero = torch.zeros((), device=logits.device)
        ce = zero
        if kd < 1:
            ce = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                target.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ) / (denom if not isinstance(denom, torch.Tensor) else denom.float())
        distill = zero
        if kd > 0:
            with torch.no_grad():
                t_logits = self.teacher(input_ids=ids, attention_mask=attn).logits[:, :-1]
                if v is not None:
                    t_logits = t_logits[..., :v]
            distill = self.divergence(logits, t_logits, target, num_items=denom)
        loss = kd * distill + (1 - kd) * ce
        return {
            "loss": loss,
            "distill": distill.detach().float(),
            "ce": ce.detach().float(),
            "tokens": torch.as_tensor(denom).detach(),
        }

    def _chunked(self, ids, attn, target, denom):
        hidden = self.student(ids, attn, hidden_only=True)[:, :-1]
        hidden, w_s, b_s = chunked_head(self._inner(), hidden, "student", _FULL_LOGITS)
        w_s, b_s = _trim(w_s, b_s, self.vocab_size)
        if self.teacher is not None and self.config.kd_ratio > 0:
            with torch.no_grad():
                t_out = self.teacher.base_model(input_ids=ids, attention_mask=attn)
                t_hidden = t_out.last_hidden_state[:, :-1]
            t_hidden, w_t, b_t = chunked_head(self.teacher, t_hidden, "teacher", _FULL_LOGITS)
            w_t, b_t = _trim(w_t, b_t, self.vocab_size)
        else:  # SFT through the chunked CE: the "teacher" is the student itself, weight 0
            t_hidden, w_t, b_t = hidden.detach(), w_s.detach(), b_s
        loss = self.chunked(
            hidden,
            w_s,
            t_hidden,
            w_t,
            target,
            student_bias=b_s,
            teacher_bias=b_t,
            num_items=denom,
        )
        terms = self.chunked.last_terms
        return {
            "loss": loss,
            "distill": torch.tensor(terms.get("distill", 0.0)),
            "ce": torch.tensor(terms.get("ce", 0.0)),
            "tokens": torch.as_tensor(denom).detach(),
        }
