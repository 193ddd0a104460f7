"""Both feature methods on every teacher/student pair of the paper's CIFAR-100 Table 2 (feature
rows): levels and stages read from the zoo models, per-sample shapes, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eakd import EntropyAdaptive
from eakd.losses.feature import FCFDLoss, ReviewKDLoss
from eakd.models import build_model

PAIRS = [
    ("resnet32x4", "resnet8x4"),
    ("wrn_28_4", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("vgg13", "vgg8"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
    ("resnet32x4", "ShuffleV2"),
]


@pytest.mark.parametrize(("teacher_name", "student_name"), PAIRS)
def test_pair(teacher_name, student_name):
    student = build_model(student_name, num_classes=100)
    teacher = build_model(teacher_name, num_classes=100).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])

    # ReviewKD: the student's stages 1.. and pooled feature against the teacher's
    review = ReviewKDLoss(student, teacher)
    zs, fs = student(x)
    with torch.no_grad():
        zt, ft = teacher(x)
    assert review.student_channels == [f.shape[1] for f in fs["feats"][1:]] + [
        fs["pooled_feat"].shape[1]
    ]
    assert review.teacher_channels == [f.shape[1] for f in ft["preact_feats"][1:]] + [
        ft["pooled_feat"].shape[1]
    ]
    ea = EntropyAdaptive(review)
    per = review(fs, ft, reduction="none")
    assert per.shape == (2,) and torch.isfinite(per).all()
    ea(fs, ft, logits=(zs, zt)).backward()
    assert all(p.grad is not None for p in review.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    student.zero_grad(set_to_none=True)

    # FCFD: one bridge per stage past the stem, in both directions where paths switch
    fcfd = FCFDLoss(student, teacher)
    assert fcfd.num_stages == student.num_stages == teacher.num_stages
    assert sorted(fcfd.to_teacher, key=int) == [str(i) for i in range(1, fcfd.num_stages)]
    out = fcfd(x, y, paths=["ttts", "ssst"] if fcfd.num_stages == 4 else ["tttts", "sssst"])
    assert out.per_item.shape == (2,) and torch.isfinite(out.loss)
    assert out.student_logits.shape == out.teacher_logits.shape == (2, 100)
    (F.cross_entropy(out.student_logits, y) + out.loss).backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in fcfd.parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize(
    ("name", "last_channels", "before_relu"),
    [
        ("vgg8", 512, True),
        ("vgg13", 512, True),
        ("MobileNetV2", 1280, True),
        ("ShuffleV2", 1024, False),
    ],
)
def test_fcfd_stage_split_follows_fcfd_released_models(name, last_channels, before_relu):
    """FCFD's own split (``fcfd_stage``/``fcfd_head``) where it differs from ``feats``: VGG and
    MobileNetV2 stages end before their ReLU, MobileNetV2 and ShuffleV2 run their final 1x1
    conv in the last stage; chaining it gives the model's logits."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = []
    h = x
    for i in range(model.num_stages):
        h = model.fcfd_stage(i, h)
        maps.append(h)
    logits, pooled = model.fcfd_head(h)
    ref_logits, feats = model(x)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(pooled, feats["pooled_feat"])
    assert maps[-1].shape[1] == last_channels
    assert bool((maps[0] < 0).any()) == (name != "ShuffleV2")  # stems before their ReLU
    for m in maps[1:-1]:
        assert bool((m < 0).any()) == before_relu
    if name in ("MobileNetV2", "ShuffleV2"):  # the paper's pairs bridge from those channels
        teacher = build_model("vgg13" if name == "MobileNetV2" else "resnet32x4", num_classes=10)
        fcfd = FCFDLoss(model, teacher)
        bridge = fcfd.to_teacher[str(model.num_stages - 1)]
        conv = next(m for m in bridge.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
        assert conv.in_channels == last_channels
