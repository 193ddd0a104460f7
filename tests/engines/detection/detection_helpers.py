"""Tiny detectors and batches for the detection tests: 64 px images, MobileNetV3-Small FPN."""

from __future__ import annotations

import copy

import torch

from eakd.engines.detection import ModelConfig, build_detector

TINY_MODEL = {
    "backbone": "mobilenet_v3_small",
    "norm": "gn",
    "fpn_channels": 16,
    "representation_size": 32,
    "returned_layers": [3, 4],
    "anchor_sizes": [[16], [32], [64]],
    "min_size": [64],
    "max_size": 64,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 50,
    "rpn_post_nms_top_n_test": 20,
    "rpn_batch_size_per_image": 32,
    "box_batch_size_per_image": 16,
    "trainable_layers": 6,
}


def tiny_model_config(**changes) -> ModelConfig:
    return ModelConfig(**{**copy.deepcopy(TINY_MODEL), **changes})


def tiny_detector(num_classes: int = 3, seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_detector(tiny_model_config(**changes), num_classes)


def batch(num_images: int = 2, seed: int = 0):
    """Random 64 px images with two boxes each (labels 1 and 2)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(num_images)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0], [34.0, 30.0, 60.0, 62.0]]),
            "labels": torch.tensor([1, 2]),
        }
        for _ in range(num_images)
    ]
    return images, targets
