"""The model registry: ``register_model(name, family=...)``, ``list_models()``, ``model_family``.

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

:func:`eakd.models.build_model` (in :mod:`eakd.models.checkpoint`, since it may load weights)
builds any of these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry

__all__ = [
    "ALIASES",
    "FAMILIES",
    "MDISTILLER_IMAGENET_NAMES",
    "MODELS",
    "list_models",
    "model_family",
    "register_model",
]

MODELS: Registry = Registry("model")
FAMILIES = ("cifar", "imagenet", "demo")
_FAMILY: dict[str, str] = {}
#: Names RepDistiller used for the same constructors.
ALIASES = {"mobile_half": "MobileNetV2"}

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
    """``"cifar"``, ``"imagenet"`` or ``"external"`` for a name ``build_model`` accepts."""
    if ":" in name:
        return "external"
    MODELS.get(ALIASES.get(name, name))  # raises with the valid names
    return _FAMILY[ALIASES.get(name, name)]


def list_models(family: str | None = None) -> list[str]:
    """Sorted registered names, optionally only one family (``"cifar"`` or ``"imagenet"``).

    External ``torchvision:``/``timm:`` names are accepted by ``build_model`` but not listed.
    """
    if family is None:
        return MODELS.names()
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    return [n for n in MODELS.names() if _FAMILY[n] == family]
