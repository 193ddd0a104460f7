"""The model registry: ``build_model(name, num_classes=..., **kwargs)`` and ``list_models()``.

Names follow the checkpoints users already have:

* CIFAR family: mdistiller's / RepDistiller's ``cifar_model_dict`` names (``resnet32x4``,
  ``wrn_40_2``, ``vgg13``, ``ResNet50``, ``MobileNetV2``, ``ShuffleV1``, ...), so their
  ``ckpt_epoch_240.pth`` teacher files load unchanged.
* ImageNet family: ``imagenet_resnet18/34/50/101`` and ``imagenet_mobilenet_v2``, whose
  ``state_dict`` keys are torchvision's, so torchvision weight files load unchanged. (mdistiller
  calls them ``ResNet18`` ... in a separate dict; :data:`MDISTILLER_IMAGENET_NAMES` maps those.)
* External models: ``"torchvision:<name>"`` or ``"timm:<name>"`` build the model from that package
  when it is installed (never downloading weights) and wrap it in the same forward contract;
  ``"package.module:Constructor"`` builds a user model from an importable module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry

__all__ = [
    "FAMILIES",
    "MDISTILLER_IMAGENET_NAMES",
    "MODELS",
    "build_model",
    "list_models",
    "model_family",
    "register_model",
]

MODELS: Registry = Registry("model")
FAMILIES = ("cifar", "imagenet", "demo")
_FAMILY: dict[str, str] = {}
# Names RepDistiller used for the same constructors.
_ALIASES = {"mobile_half": "MobileNetV2"}

MDISTILLER_IMAGENET_NAMES = {
    "ResNet18": "imagenet_resnet18",
    "ResNet34": "imagenet_resnet34",
    "ResNet50": "imagenet_resnet50",
    "ResNet101": "imagenet_resnet101",
    "MobileNetV2": "imagenet_mobilenet_v2",
}


def register_model(name: str, *, family: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a constructor ``fn(num_classes=..., **options) -> FeatureModel`` under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    inner = MODELS.register(name)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        inner(fn)
        _FAMILY[name] = family
        return fn

    return deco


def model_family(name: str) -> str:
    """``"cifar"``, ``"imagenet"`` or ``"external"`` for a name :func:`build_model` accepts."""
    if ":" in name:
        return "external"
    MODELS.get(_ALIASES.get(name, name))  # raises with the valid names
    return _FAMILY[_ALIASES.get(name, name)]


def list_models(family: str | None = None) -> list[str]:
    """Sorted registered names, optionally only one family (``"cifar"`` or ``"imagenet"``).

    External ``torchvision:``/``timm:`` names are accepted by :func:`build_model` but not listed.
    """
    if family is None:
        return MODELS.names()
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    return [n for n in MODELS.names() if _FAMILY[n] == family]


def build_model(
    name: str,
    num_classes: int | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by registry name.

    Args:
        name: a registered name (see :func:`list_models`), ``"torchvision:<name>"`` /
            ``"timm:<name>"`` for a model from that package (built with random weights), or
            ``"package.module:Constructor"`` for a user model (returned as built).
        num_classes: size of the classifier; ``None`` keeps the constructor's default
            (100 for the CIFAR family, 1000 for ImageNet and external models).
        checkpoint: optional local weight file loaded with :func:`eakd.models.load_checkpoint`
            (strict; accepts mdistiller/RepDistiller/torchvision/trainer layouts).
        **kwargs: constructor options (for example ``double_bn_update`` for wide ResNets);
            an unknown keyword raises ``TypeError`` naming the valid ones.

    Returns:
        a module with ``logits, feats = model(x)`` (see :mod:`eakd.models.base`).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if ":" in name:
        from .external import build_external

        model = build_external(name, **kwargs)
    else:
        model = MODELS.build(_ALIASES.get(name, name), **kwargs)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model
