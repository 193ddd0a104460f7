"""Object detection with EA-KD: RoI-level logit distillation in torchvision's Faster R-CNN FPN.

Needs the ``[detection]`` extra (torchvision, pycocotools, pyyaml, tqdm, numpy, pillow).

    from eakd.core import EASettings
    from eakd.engines.detection import DetectionDistiller, build_distill_loss, build_detector
    loss = build_distill_loss("kd", {"temperature": 1.0}, EASettings(enabled=True))  # per RoI
    task = DetectionDistiller(student, teacher, loss, weight=1.0)
    losses = task(images, targets)        # torchvision's losses + loss_distill + loss
    losses["loss"].backward()
"""

from .config import (
    DataConfig,
    DetectionConfig,
    DistillConfig,
    OptimConfig,
    TrainConfig,
    load_detection_config,
)
from .data import CocoDetection, collate_detection, load_coco_annotations
from .distill import (
    DetectionDistiller,
    RecordingRoIHeads,
    RoISamples,
    build_distill_loss,
    enable_roi_recording,
    teacher_roi_logits,
)
from .evaluate import METRICS, coco_evaluate, detections_to_coco, predict
from .model import (
    BACKBONES,
    ModelConfig,
    build_detector,
    load_detector_weights,
    num_detector_classes,
)
from .synthetic import make_shapes_dataset, render_scene
from .train import evaluate, lr_factor, train

__all__ = [
    "BACKBONES",
    "METRICS",
    "CocoDetection",
    "DataConfig",
    "DetectionConfig",
    "DetectionDistiller",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "RecordingRoIHeads",
    "RoISamples",
    "TrainConfig",
    "build_detector",
    "build_distill_loss",
    "coco_evaluate",
    "collate_detection",
    "detections_to_coco",
    "enable_roi_recording",
    "evaluate",
    "load_coco_annotations",
    "load_detection_config",
    "load_detector_weights",
    "lr_factor",
    "make_shapes_dataset",
    "num_detector_classes",
    "predict",
    "render_scene",
    "teacher_roi_logits",
    "train",
]
