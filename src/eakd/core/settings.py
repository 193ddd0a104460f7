"""``EASettings``: every option of the entropy-adaptive weighting, in one validated object.

The same object configures :class:`eakd.EntropyAdaptive`, the chunked LLM loss
(:class:`eakd.losses.token.ChunkedTokenDistillation`) and the ``ea:`` section of every engine's
config (classification, detection, LLM). Presets are resolved once, by
:meth:`EASettings.resolve`, and the resolved values are what a run saves.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .weights import WEIGHT_KINDS, resolve_max_entropy

__all__ = [
    "DEFAULT_ENTROPY_TEMPERATURE",
    "GRANULARITIES",
    "PRESETS",
    "WEIGHT_LOGITS",
    "EASettings",
    "EAStats",
]

#: The paper's entropy temperature ``T'`` (CIFAR-100, Tiny-ImageNet, COCO). The paper uses 2 on
#: ImageNet and for transformer teachers; those configs set it, and so do the LLM recipes.
DEFAULT_ENTROPY_TEMPERATURE = 3.0

#: Which logits the entropies come from: as given, or z-scored (logit standardisation).
WEIGHT_LOGITS = ("raw", "standardized")

#: ``item``: a weight per sample / RoI / token; ``sequence``: one weight per ``(B, T)`` row from
#: the mean token entropies over its valid tokens.
GRANULARITIES = ("item", "sequence")

#: ``paper``: the formulas of the paper. ``official``: the released EA-KD code's deviations
#: (its section 1.3 items 1-5), resolved per method by :meth:`EASettings.resolve`.
PRESETS = ("paper", "official")


def _choice(name: str, value: Any, valid: tuple[str, ...] | list[str], hint: str = "") -> None:
    if value not in valid:
        raise ValueError(f"ea.{name} must be one of {list(valid)}, got {value!r}{hint}")


@dataclass(frozen=True)
class EASettings:
    r"""Options of EA-KD's per-item weight :math:`w = \tfrac12 H^T (1 + H^S / H_{ub})`.

    Attributes:
        enabled: whether an engine (or the chunked loss) applies EA at all.
            :class:`eakd.EntropyAdaptive` always weights: wrapping a loss is enabling it.
        temperature: the entropy temperature ``T'`` (:data:`DEFAULT_ENTROPY_TEMPERATURE`).
        max_entropy: ``H_ub``; ``None`` means ``log C`` (the paper). The released CIFAR KD/DKD
            code used 100.
        kind: the weight formula, a key of :data:`eakd.core.WEIGHT_KINDS` (Tables 1 and 9).
        weight_logits: ``raw`` (paper) or ``standardized`` (entropies of z-scored logits, as
            the released DKD+LS code computed them).
        normalize: divide the weights by their (masked) mean, so only the relative weighting
            changes. Off in the paper: EA also rescales the loss by the mean weight.
        granularity: ``item`` (sample / RoI / token) or ``sequence`` (``(B, T)`` items).
        preset: ``paper`` or ``official``; see :meth:`resolve`.
    """

    enabled: bool = False
    temperature: float = DEFAULT_ENTROPY_TEMPERATURE
    max_entropy: float | None = None
    kind: str = "ea"
    weight_logits: str = "raw"
    normalize: bool = False
    granularity: str = "item"
    preset: str = "paper"

    def __post_init__(self) -> None:
        for name in ("enabled", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ea.{name} must be true or false, got {getattr(self, name)!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ValueError(f"ea.temperature must be > 0 (the entropy temperature T'), got {t!r}")
        object.__setattr__(self, "temperature", float(t))
        if self.max_entropy is not None:
            object.__setattr__(self, "max_entropy", resolve_max_entropy(self.max_entropy, 2))
        _choice("kind", self.kind, list(WEIGHT_KINDS))
        _choice("weight_logits", self.weight_logits, WEIGHT_LOGITS)
        alias = (
            " ('token' is now 'item': a weight per token)" if self.granularity == "token" else ""
        )
        _choice("granularity", self.granularity, GRANULARITIES, alias)
        _choice("preset", self.preset, PRESETS)

    def replace(self, **changes: Any) -> EASettings:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_options(cls, settings: EASettings | None = None, **options: Any) -> EASettings:
        """``settings`` with keyword ``options`` applied on top (``None`` options are skipped,
        except ``max_entropy``); the keyword form of the wrappers goes through here."""
        base = settings if settings is not None else cls(enabled=True)
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown EA option(s) {unknown}; valid: {cls.field_names()}")
        return base.replace(**options) if options else base

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def max_entropy_for(self, num_classes: int) -> float:
        """``H_ub`` for ``num_classes`` classes: ``max_entropy`` or ``log C``."""
        return resolve_max_entropy(self.max_entropy, num_classes)

    def resolve(
        self, method: str | None = None, num_classes: int | None = None, standardized: bool = False
    ) -> EASettings:
        """The settings with the preset applied, as explicit values: what a run weighs with and
        what its ``results.json`` records.

        With ``num_classes``, ``max_entropy`` is written out (``log C`` unless set). ``paper``
        changes nothing else. ``official`` reproduces the released EA-KD code (its items 1-5 of
        the known deviations) for the weight it has, ``kind="ea"``, per distillation ``method``:

        * ``kd``, ``dkd``: ``H_ub = 100`` below 1000 classes, ``log 1000`` on ImageNet;
        * ``mld``, ``reviewkd``: ``H_ub = log 100`` (hard-coded there);
        * ``dkd``, ``mld``: ``T' = 3`` whatever ``temperature`` says;
        * ``dkd`` with logit standardisation (``standardized``): entropies from z-scored
          logits; every other method weighs from raw logits.

        The ablation kinds (Tables 1 and 9) and the methods the released code does not cover
        keep the paper's values. Resolving twice gives the same settings.
        """
        changes: dict[str, Any] = {}
        if self.preset == "official" and self.kind == "ea":
            if method in ("kd", "dkd"):
                if num_classes is None:
                    raise ValueError("ea.preset=official for kd/dkd needs the class count")
                changes["max_entropy"] = math.log(1000.0) if num_classes >= 1000 else 100.0
            if method in ("mld", "reviewkd"):
                changes["max_entropy"] = math.log(100.0)
            if method in ("dkd", "mld"):
                changes["temperature"] = 3.0
            if method is not None:
                official_std = method == "dkd" and standardized
                changes["weight_logits"] = "standardized" if official_std else "raw"
        if num_classes is not None and changes.get("max_entropy", self.max_entropy) is None:
            changes["max_entropy"] = math.log(num_classes)
        return self.replace(**changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as a run's ``results.json`` stores it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EAStats:
    """What the last EA-weighted forward computed, detached: per-item weights, student and
    teacher entropies, the unweighted per-item loss and the mask of the items that counted.
    For logging and the analysis tools."""

    weights: torch.Tensor
    student_entropy: torch.Tensor
    teacher_entropy: torch.Tensor
    per_item: torch.Tensor
    mask: torch.Tensor | None = None
