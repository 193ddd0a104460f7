"""eakd's model zoo: CIFAR models with the CRD/mdistiller checkpoint layouts, ImageNet models with
torchvision's layout, external ``torchvision:`` / ``timm:`` models, and checkpoint loading.

Every model follows one forward contract (see :mod:`eakd.models.base`)::

    from eakd.models import build_model, load_checkpoint
    teacher = load_checkpoint("resnet32x4", "cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth")
    student = build_model("resnet8x4", num_classes=100)
    logits, feats = student(images)   # feats["feats"], feats["preact_feats"], feats["pooled_feat"]

A model trained at another input size or normalisation (a 224-px transformer teacher of a 64-px
student) is wrapped in :class:`InputAdapter`, which resizes and re-normalises each batch for it.

Importing this package does not import torchvision or timm.
"""

from . import cifar, demo, imagenet  # noqa: F401  (registers each family)
from .base import FeatureModel, Features
from .checkpoint import build_model, guess_architecture, load_checkpoint, read_state_dict
from .external import ExternalModel
from .input_adapter import InputAdapter, InputSpec
from .registry import (
    FAMILIES,
    MDISTILLER_IMAGENET_NAMES,
    MODELS,
    list_models,
    model_family,
    register_model,
)

__all__ = [
    "FAMILIES",
    "MDISTILLER_IMAGENET_NAMES",
    "MODELS",
    "ExternalModel",
    "FeatureModel",
    "Features",
    "InputAdapter",
    "InputSpec",
    "build_model",
    "cifar",
    "guess_architecture",
    "imagenet",
    "list_models",
    "load_checkpoint",
    "model_family",
    "read_state_dict",
    "register_model",
]
