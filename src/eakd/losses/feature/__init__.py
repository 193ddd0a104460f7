"""Feature distillation losses: ReviewKD (ABF + HCL) and FCFD (bridges, mixed paths).

Both are registered losses (``build_loss("reviewkd", student=..., teacher=...)``,
``build_loss("fcfd", student=..., teacher=...)``) whose inputs are features or the models
themselves rather than logits; their class attribute ``input_kind`` says which (the logit-loss
contract tests skip them). Their trainable modules (ABF, bridges) are in ``loss.parameters()``.
"""

from .fcfd import (
    EA_TARGETS,
    PATH_MODES,
    FCFDLoss,
    FCFDOutput,
    PerItemValues,
    candidate_paths,
    make_bridge,
    path_name,
)
from .reviewkd import ABF, ReviewKDLoss, hcl_per_sample, reviewkd_levels

__all__ = [
    "ABF",
    "EA_TARGETS",
    "PATH_MODES",
    "FCFDLoss",
    "FCFDOutput",
    "PerItemValues",
    "ReviewKDLoss",
    "candidate_paths",
    "hcl_per_sample",
    "make_bridge",
    "path_name",
    "reviewkd_levels",
]
