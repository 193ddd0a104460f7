"""Token-level distillation losses for causal LMs: divergences over full logits, and a chunked,
memory-flat path from hidden states (forward/reverse KL, JSD(beta), skew KL/RKL, TVD)."""

from .chunked import ChunkedTokenDistillation
from .divergences import DIVERGENCES, Divergence
from .losses import (
    ForwardKLLoss,
    JSDLoss,
    ReverseKLLoss,
    SkewKLLoss,
    SkewReverseKLLoss,
    TokenDivergenceLoss,
    TVDLoss,
    forward_kl_loss,
    jsd_loss,
    label_mask,
    reverse_kl_loss,
    skew_kl_loss,
    skew_reverse_kl_loss,
    token_divergence,
    tvd_loss,
)

__all__ = [
    "DIVERGENCES",
    "ChunkedTokenDistillation",
    "Divergence",
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
