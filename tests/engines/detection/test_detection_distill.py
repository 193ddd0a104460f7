"""RoI-level distillation: alignment of the RoIs, the per-RoI loss and its EA weights."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from detection_helpers import batch, tiny_detector

from eakd import EntropyAdaptive, build_loss, ea_weights
from eakd.core import EASettings
from eakd.engines.detection import (
    DetectionDistiller,
    build_distill_loss,
    enable_roi_recording,
    teacher_roi_logits,
)


def kd_reference(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(t/T) || softmax(s/T)) per row, written from the formula."""
    p = F.softmax(t / temperature, -1)
    return temperature**2 * (
        p * (F.log_softmax(t / temperature, -1) - F.log_softmax(s / temperature, -1))
    ).sum(-1)


def step(distiller, seed: int = 0):
    torch.manual_seed(seed)  # the RoI sampler draws from the global RNG
    images, targets = batch()
    return distiller(images, targets)


def test_identical_teacher_gives_identical_roi_logits():
    # GroupNorm: train and eval mode compute the same features, so a copy must agree exactly
    student = tiny_detector()
    teacher = copy.deepcopy(student)
    d = DetectionDistiller(student, teacher, build_loss("kd", temperature=1.0)).train()
    losses = step(d)
    s, t, labels = d.last_logits
    samples = student.roi_heads.last_samples
    assert s.shape == t.shape == (sum(len(p) for p in samples.proposals), 4)
    assert labels.shape == (s.shape[0],)
    torch.testing.assert_close(s, t, rtol=1e-5, atol=1e-5)
    assert float(losses["loss_distill"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_teacher_rows_follow_the_student_proposals_order():
    student, teacher = tiny_detector(seed=0), tiny_detector(seed=1)
    d = DetectionDistiller(student, teacher).train()
    images, targets = batch()
    torch.manual_seed(0)
    keep = {}
    student.backbone.register_forward_pre_hook(lambda m, i: keep.setdefault("x", i[0]))
    d(images, targets)
    _, t, _ = d.last_logits
    samples = student.roi_heads.last_samples
    # a permutation of the boxes permutes the teacher's rows the same way
    perms = [
        torch.randperm(len(p), generator=torch.Generator().manual_seed(3))
        for p in samples.proposals
    ]
    permuted = [p[i] for p, i in zip(samples.proposals, perms, strict=True)]
    t_perm = teacher_roi_logits(teacher, keep["x"], permuted, samples.image_shapes)
    offsets = [0]
    for p in samples.proposals:
        offsets.append(offsets[-1] + len(p))
    index = torch.cat([o + i for o, i in zip(offsets, perms, strict=False)])
    torch.testing.assert_close(t_perm, t[index], rtol=1e-5, atol=1e-5)
    # image by image: rows of image 1 depend only on image 1's boxes
    one = teacher_roi_logits(
        teacher, keep["x"], [samples.proposals[0][:0], samples.proposals[1]], samples.image_shapes
    )
    torch.testing.assert_close(one, t[offsets[1] :], rtol=1e-5, atol=1e-5)


def test_recorded_student_logits_are_the_box_head_on_the_recorded_boxes():
    student = tiny_detector()
    d = DetectionDistiller(student, tiny_detector(seed=1)).train()
    keep = {}
    student.backbone.register_forward_pre_hook(lambda m, i: keep.setdefault("x", i[0]))
    step(d)
    samples = student.roi_heads.last_samples
    heads = student.roi_heads
    with torch.no_grad():
        feats = student.backbone(keep["x"])
        x = heads.box_head(heads.box_roi_pool(feats, samples.proposals, samples.image_shapes))
        logits, _ = heads.box_predictor(x)
    torch.testing.assert_close(samples.class_logits.detach(), logits, rtol=1e-5, atol=1e-5)
    labels = torch.cat(samples.labels)
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 2
    assert (labels > 0).any() and (labels == 0).any()  # gt boxes are foreground, most others not


def test_kd_term_is_the_mean_per_roi_kd():
    d = DetectionDistiller(
        tiny_detector(seed=0), tiny_detector(seed=1), build_loss("kd", temperature=2.0), weight=0.5
    )
    losses = step(d.train())
    s, t, _ = d.last_logits
    expected = 0.5 * kd_reference(s, t, 2.0).mean()
    torch.testing.assert_close(losses["loss_distill"], expected, rtol=1e-5, atol=1e-6)
    total = sum(v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], total)


def test_ea_weights_are_per_roi_with_log_k_plus_1():
    ea = EASettings(enabled=True, temperature=3.0)
    loss = build_distill_loss("kd", {"temperature": 1.0}, ea)
    d = DetectionDistiller(tiny_detector(seed=0), tiny_detector(seed=1), loss).train()
    losses = step(d)
    s, t, _ = d.last_logits
    w = loss.last_stats.weights
    assert w.shape == (s.shape[0],)
    torch.testing.assert_close(w, ea_weights(s, t, temperature=3.0, max_entropy=math.log(4)))
    torch.testing.assert_close(
        losses["loss_distill"], (w * kd_reference(s, t, 1.0)).mean(), rtol=1e-5, atol=1e-6
    )
    assert not w.requires_grad and float(w.max()) <= math.log(4) + 1e-6


def test_ea_with_unit_weights_equals_plain_kd():
    student = tiny_detector(seed=0)
    teacher = tiny_detector(seed=1)
    kd = build_loss("kd", temperature=1.0)
    plain = step(DetectionDistiller(copy.deepcopy(student), teacher, kd).train())
    ones = EntropyAdaptive(kd, kind="none")
    weighted = step(DetectionDistiller(copy.deepcopy(student), teacher, ones).train())
    assert float(plain["loss_distill"].detach()) > 0
    torch.testing.assert_close(weighted["loss_distill"], plain["loss_distill"])
    full = step(DetectionDistiller(copy.deepcopy(student), teacher, EntropyAdaptive(kd)).train())
    assert not torch.allclose(full["loss_distill"], plain["loss_distill"])


def test_dkd_uses_the_roi_labels_with_background_zero():
    loss = build_distill_loss("dkd", {"alpha": 1.0, "beta": 0.25, "temperature": 1.0})
    d = DetectionDistiller(tiny_detector(seed=0), tiny_detector(seed=1), loss).train()
    losses = step(d)
    s, t, labels = d.last_logits
    torch.testing.assert_close(losses["loss_distill"], loss(s, t, labels))
    shifted = (labels + 1) % 4
    assert not torch.allclose(loss(s, t, shifted), losses["loss_distill"])


def test_teacher_is_frozen_and_gets_no_gradient():
    teacher = tiny_detector(seed=1)
    d = DetectionDistiller(tiny_detector(seed=0), teacher).train()
    assert not teacher.training
    step(d)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    grads = [p.grad for p in d.student.roi_heads.box_predictor.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_eval_mode_returns_detections():
    d = DetectionDistiller(tiny_detector(seed=0), tiny_detector(seed=1)).eval()
    images, _ = batch()
    with torch.no_grad():
        out = d(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}


def test_class_count_mismatch_is_an_error():
    with pytest.raises(
        ValueError, match="teacher's box classifier has 6 outputs and the student's 4"
    ):
        DetectionDistiller(tiny_detector(num_classes=3), tiny_detector(num_classes=5))


def test_teacher_normalising_differently_is_an_error():
    teacher = tiny_detector(seed=1)
    teacher.transform.image_mean = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="normalises images differently"):
        DetectionDistiller(tiny_detector(seed=0), teacher)


def test_batch_level_loss_is_refused():
    with pytest.raises(ValueError, match="no per-RoI form"):
        build_distill_loss("mld_batch")


def test_recording_is_idempotent_and_survives_deepcopy():
    model = enable_roi_recording(enable_roi_recording(tiny_detector()))
    assert len(model.roi_heads.box_predictor._forward_hooks) == 1
    clone = copy.deepcopy(model).train()
    images, targets = batch()
    clone(images, targets)
    assert clone.roi_heads.last_samples is not None
    assert model.roi_heads.last_samples is None
    with pytest.raises(TypeError, match="Faster R-CNN"):
        enable_roi_recording(torch.nn.Linear(2, 2))
