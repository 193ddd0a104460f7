"""CIFAR-size models (32x32 inputs, also 64x64 for Tiny-ImageNet) with the key layouts of the
CRD / mdistiller checkpoints. Importing this package registers them."""

from . import mobilenetv2, resnet, resnetv2, shufflenetv1, shufflenetv2, vgg, wrn
from .mobilenetv2 import MobileNetV2
from .resnet import CifarResNet
from .resnetv2 import CifarResNetV2
from .shufflenetv1 import ShuffleNetV1
from .shufflenetv2 import ShuffleNetV2
from .vgg import VGG
from .wrn import WideResNet

__all__ = [
    "VGG",
    "CifarResNet",
    "CifarResNetV2",
    "MobileNetV2",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "WideResNet",
    "mobilenetv2",
    "resnet",
    "resnetv2",
    "shufflenetv1",
    "shufflenetv2",
    "vgg",
    "wrn",
]
