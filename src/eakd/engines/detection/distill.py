"""RoI-level logit distillation inside torchvision's Faster R-CNN.

The student runs unchanged and produces torchvision's loss dict. During that forward a thin
:class:`RecordingRoIHeads` keeps the proposals its RoI head sampled for training (512 per image
in the paper's setting, 25 % foreground), their ground-truth labels (0 = background) and the
box classifier's logits on them. The frozen teacher then pools **its** FPN features on **the
same boxes** and classifies them with its own box head, so the two ``(R, K + 1)`` logit
matrices align RoI by RoI.
Only the class logits are distilled; box deltas are not.

The per-RoI loss is any registered eakd logit loss (``kd``, ``dkd`` with the RoI labels, ...),
optionally wrapped in :class:`eakd.EntropyAdaptive`, whose weights are then per RoI with
``H_ub = log(K + 1)``. It is averaged over all RoIs of the batch and added to the detection
losses with a weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...adaptive import EntropyAdaptive
from ...core import EASettings
from ...losses.registry import build_loss
from .model import num_detector_classes

__all__ = [
    "DetectionDistiller",
    "RecordingRoIHeads",
    "RoISamples",
    "build_distill_loss",
    "enable_roi_recording",
    "teacher_roi_logits",
]


@dataclass
class RoISamples:
    """What the student's RoI head sampled and predicted in its last training forward.

    Attributes:
        proposals: per image, the sampled boxes ``(R_i, 4)`` (x1, y1, x2, y2) in the resized
            input's coordinates.
        labels: per image, the ground-truth class of each sampled box ``(R_i,)``; 0 is
            background, ``1..K`` the object classes (torchvision's convention).
        class_logits: the student's box-classifier logits ``(R, K + 1)``, ``R = sum R_i``, in
            the same order as ``torch.cat(proposals)``; part of the autograd graph.
        image_shapes: the resized images' ``(H, W)``.
    """

    proposals: list[torch.Tensor]
    labels: list[torch.Tensor]
    class_logits: torch.Tensor
    image_shapes: list[tuple[int, int]]


class RecordingRoIHeads:
    """Mix-in over torchvision's ``RoIHeads`` that records the sampled RoIs of each training pass.

    Only ``select_training_samples`` and ``forward`` are extended (each calls torchvision's
    own); the box classifier's logits come from a forward hook on ``box_predictor``. Use
    :func:`enable_roi_recording` to install it on an existing detector.
    """

    last_samples: RoISamples | None

    def select_training_samples(self, proposals, targets):
        out = super().select_training_samples(proposals, targets)
        self._sampled = (out[0], out[2])  # proposals, labels
        return out

    def forward(self, features, proposals, image_shapes, targets=None):
        self.last_samples = None
        self._sampled = None
        self._image_shapes = image_shapes
        try:
            return super().forward(features, proposals, image_shapes, targets)
        finally:
            self._sampled = None


class _LogitRecorder:
    """Forward hook on ``box_predictor``: pairs its class logits with the sampled RoIs.

    A plain object rather than a closure, so ``copy.deepcopy`` of the detector points the
    copy's hook at the copy's heads.
    """

    def __init__(self, heads: nn.Module) -> None:
        self.heads = heads

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        heads = self.heads
        sampled = getattr(heads, "_sampled", None)
        if heads.training and sampled is not None:
            proposals, labels = sampled
            heads.last_samples = RoISamples(proposals, labels, output[0], heads._image_shapes)


_RECORDING_CLASSES: dict[type, type] = {}


def enable_roi_recording(model: nn.Module) -> nn.Module:
    """Make ``model.roi_heads`` record its sampled RoIs (see :class:`RoISamples`); idempotent.

    The heads keep their class hierarchy (a subclass of the current class is swapped in, so a
    custom ``RoIHeads`` subclass keeps its overrides) and their ``state_dict`` keys.
    After each training forward, ``model.roi_heads.last_samples`` holds the record.
    """
    from torchvision.models.detection.roi_heads import RoIHeads

    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, RoIHeads):
        raise TypeError(
            f"expected a torchvision Faster R-CNN (with a RoIHeads 'roi_heads'), got "
            f"{type(model).__name__}"
        )
    if isinstance(heads, RecordingRoIHeads):
        return model
    base = type(heads)
    cls = _RECORDING_CLASSES.get(base)
    if cls is None:
        cls = type(f"Recording{base.__name__}", (RecordingRoIHeads, base), {})
        _RECORDING_CLASSES[base] = cls
    heads.__class__ = cls
    heads.last_samples = None
    heads._sampled = None
    heads.box_predictor.register_forward_hook(_LogitRecorder(heads))
    return model


@torch.no_grad()
def teacher_roi_logits(
    teacher: nn.Module,
    images: torch.Tensor,
    proposals: list[torch.Tensor],
    image_shapes: list[tuple[int, int]],
) -> torch.Tensor:
    """The teacher's box-classifier logits on given boxes.

    ``images`` (the student's normalised, resized, padded batch ``(B, 3, H, W)``) goes through
    the teacher's backbone + FPN; each box is pooled from the teacher's features by its
    ``box_roi_pool`` (RoIAlign on the FPN level chosen by the box size) and classified by its
    ``box_head`` and ``box_predictor``.

    Returns:
        ``(R, K + 1)`` logits, ``R = sum_i len(proposals[i])``, rows in the order of
        ``torch.cat(proposals)``.
    """
    heads = teacher.roi_heads
    features = teacher.backbone(images)
    pooled = heads.box_roi_pool(features, proposals, image_shapes)
    class_logits, _ = heads.box_predictor(heads.box_head(pooled))
    return class_logits


def build_distill_loss(
    name: str = "kd", loss_kwargs: dict[str, Any] | None = None, ea: EASettings | None = None
) -> nn.Module:
    """A registered per-item logit loss, entropy-weighted per RoI when ``ea.enabled``.

    The weighted loss is ``EntropyAdaptive(loss, ea)``; ``ea.max_entropy=None`` gives
    ``H_ub = log(K + 1)`` over the RoI head's ``K + 1`` logits.
    """
    loss = build_loss(name, **(loss_kwargs or {}))
    if not getattr(loss, "per_item", True):
        raise ValueError(
            f"loss {name!r} has no per-RoI form; use a per-item logit loss such as kd or dkd"
        )
    if ea is not None and ea.enabled:
        loss = EntropyAdaptive(loss, ea)
    return loss


class DetectionDistiller(nn.Module):
    """Faster R-CNN training step with RoI-level distillation from a frozen teacher.

    ``forward(images, targets)`` in training mode returns torchvision's losses
    (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``), plus
    ``loss_distill = weight * L`` when a teacher is given, and their sum as ``loss``:

    .. math::
        L = \\frac{1}{R}\\sum_{r=1}^{R} w_r\\,\\ell(z^s_r, z^t_r, y_r),\\qquad
        w_r = \\tfrac12 H^T_r\\big(1 + H^S_r / \\log(K+1)\\big)\\ \\text{(EA, detached) or } 1

    over the ``R`` RoIs the student sampled in the whole batch, with ``z^s_r, z^t_r`` the
    ``K + 1``-way logits of the student's and the teacher's box heads on RoI ``r`` and ``y_r``
    its label (0 = background). In eval mode it returns the student's detections.

    Args:
        student: a torchvision Faster R-CNN (its RoI heads get recording enabled).
        teacher: a Faster R-CNN with the same class count; frozen and kept in eval mode. It
            sees the student's preprocessed images, so both must normalise alike.
        loss: the per-RoI loss (see :func:`build_distill_loss`); ``None`` with a teacher means
            plain KD at ``T = 1``.
        weight: multiplier of the distillation term.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        loss: nn.Module | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.student = enable_roi_recording(student)
        self.teacher = teacher
        self.loss = loss if loss is not None or teacher is None else build_loss("kd", temperature=1)
        self.weight = float(weight)
        self._images: torch.Tensor | None = None
        #: ``(student_logits, teacher_logits, labels)`` of the last training step, detached.
        self.last_logits: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if teacher is not None:
            ks, kt = num_detector_classes(student), num_detector_classes(teacher)
            if ks != kt:
                raise ValueError(
                    f"the teacher's box classifier has {kt} outputs and the student's {ks} "
                    "(object classes + background): both must be trained on the same classes"
                )
            ts, tt = student.transform, teacher.transform
            if list(ts.image_mean) != list(tt.image_mean) or list(ts.image_std) != list(
                tt.image_std
            ):
                raise ValueError(
                    "the teacher normalises images differently from the student "
                    f"(mean/std {tt.image_mean}/{tt.image_std} vs {ts.image_mean}/"
                    f"{ts.image_std}); the teacher reads the student's preprocessed batch"
                )
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            student.backbone.register_forward_pre_hook(self._keep_images)

    def _keep_images(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            self._images = inputs[0]

    def train(self, mode: bool = True) -> DetectionDistiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def roi_logits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student logits, teacher logits and labels of the last training forward's RoIs."""
        samples = self.student.roi_heads.last_samples
        if samples is None or self._images is None:
            raise RuntimeError("no recorded RoIs: call forward(images, targets) in training mode")
        teacher_logits = teacher_roi_logits(
            self.teacher, self._images, samples.proposals, samples.image_shapes
        )
        return samples.class_logits, teacher_logits, torch.cat(samples.labels)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> Any:
        if not self.training:
            return self.student(images)
        losses = dict(self.student(images, targets))
        if self.teacher is not None:
            try:
                student_logits, teacher_logits, labels = self.roi_logits()
            finally:
                self._images = None
            self.last_logits = (student_logits.detach(), teacher_logits, labels)
            if student_logits.shape[0] == 0:  # no RoIs at all: keep the graph, add nothing
                distill = student_logits.sum() * 0.0
            else:
                teacher_logits = teacher_logits.to(student_logits.dtype)
                distill = self.loss(student_logits, teacher_logits, labels)
            losses["loss_distill"] = self.weight * distill
        losses["loss"] = sum(losses.values())
        return losses
