"""eakd: Entropy-based Adaptive Knowledge Distillation (EA-KD, ICCV 2025) for PyTorch.

The three-line use::

    from eakd import EntropyAdaptive, build_loss
    kd = EntropyAdaptive(build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0), temperature=3.0)
    loss = ce + kd(student_logits, teacher_logits, target)

The public names are imported on first use (PEP 562), so ``import eakd.cli`` and
``eakd --help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it (a module itself when the name is a submodule)
_EXPORTS = {
    "WEIGHT_KINDS": "core",
    "DistillationLoss": "losses",
    "EASettings": "core",
    "EAStats": "adaptive",
    "EntropyAdaptive": "adaptive",
    "build_loss": "losses",
    "core": None,
    "ea_weights": "core",
    "entropy": "core",
    "functional": None,
    "list_losses": "losses",
    "losses": None,
    "reduce": "core",
    "standardize_logits": "core",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eakd' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = (
        importlib.import_module(f".{name}", __name__)
        if module is None
        else getattr(importlib.import_module(f".{module}", __name__), name)
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from . import core, functional, losses  # noqa: F401
    from .adaptive import EAStats, EntropyAdaptive  # noqa: F401
    from .core import (  # noqa: F401
        WEIGHT_KINDS,
        EASettings,
        ea_weights,
        entropy,
        reduce,
        standardize_logits,
    )
    from .losses import DistillationLoss, build_loss, list_losses  # noqa: F401
