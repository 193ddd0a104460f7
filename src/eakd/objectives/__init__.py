"""Training objectives: what each method computes from a batch, one object per method.

``build_objective(method, student, teacher, num_classes=..., ea=...)`` builds the objective
registered under ``method.name``; :func:`list_methods` is the one list of method names.
Methods that are more than a loss own their logic here: MLD (two views, instance and
consistency terms), ReviewKD (feature fusion), FCFD (bridges and mixed paths), CTKD (the
temperature curriculum); plain logit losses share :class:`LogitObjective`.
"""

from .base import (
    OBJECTIVES,
    Objective,
    TermStats,
    build_objective,
    list_methods,
    logits_of,
    register_objective,
)

# import order is registration order, the order of list_methods()
from .logit import CTKDObjective, LogitObjective, VanillaObjective  # isort: skip
from .mld import MLDObjective, mld_temperatures  # isort: skip
from .feature import FCFDObjective, ReviewKDObjective  # isort: skip

__all__ = [
    "OBJECTIVES",
    "CTKDObjective",
    "FCFDObjective",
    "LogitObjective",
    "MLDObjective",
    "Objective",
    "ReviewKDObjective",
    "TermStats",
    "VanillaObjective",
    "build_objective",
    "list_methods",
    "logits_of",
    "mld_temperatures",
    "register_objective",
]
