"""The loss registry: ``build_loss(name, **kwargs)`` and ``list_losses()``."""

from __future__ import annotations

from typing import Any

from ..registry import Registry

__all__ = ["LOSSES", "build_loss", "list_losses", "register_loss"]

LOSSES: Registry = Registry("loss")
register_loss = LOSSES.register


def build_loss(name: str, **kwargs: Any):
    """Build a registered loss module by name; unknown names or keywords raise with the valid ones.

    >>> build_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0)
    DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, standardize=False)
    """
    return LOSSES.build(name, **kwargs)


def list_losses() -> list[str]:
    """Names of every registered loss, sorted."""
    return LOSSES.names()
