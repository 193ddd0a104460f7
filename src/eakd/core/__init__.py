"""Core of EA-KD: entropies, EA weights, the single reduction point and logit transforms."""

from .entropy import entropy, entropy_from_log_probs, entropy_from_softmax
from .reduction import REDUCTIONS, reduce
from .settings import (
    DEFAULT_ENTROPY_TEMPERATURE,
    GRANULARITIES,
    PRESETS,
    WEIGHT_LOGITS,
    EASettings,
    EAStats,
)
from .transforms import standardize_logits
from .validation import check_finite, check_logits, check_pair, check_target
from .weights import (
    WEIGHT_KINDS,
    ea_weights,
    resolve_max_entropy,
    segment_means,
    sequence_means,
    weights_from_entropies,
)

__all__ = [
    "DEFAULT_ENTROPY_TEMPERATURE",
    "GRANULARITIES",
    "PRESETS",
    "REDUCTIONS",
    "WEIGHT_KINDS",
    "WEIGHT_LOGITS",
    "EASettings",
    "EAStats",
    "check_finite",
    "check_logits",
    "check_pair",
    "check_target",
    "ea_weights",
    "entropy",
    "entropy_from_log_probs",
    "entropy_from_softmax",
    "reduce",
    "resolve_max_entropy",
    "segment_means",
    "sequence_means",
    "standardize_logits",
    "weights_from_entropies",
]
