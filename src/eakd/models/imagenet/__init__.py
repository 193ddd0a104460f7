"""ImageNet-size models whose ``state_dict`` keys are torchvision's (no torchvision import).
Importing this package registers them."""

from . import mobilenetv2, resnet
from .mobilenetv2 import MobileNetV2
from .resnet import ResNet

__all__ = ["MobileNetV2", "ResNet", "mobilenetv2", "resnet"]
