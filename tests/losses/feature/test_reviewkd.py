"""ReviewKD: per-sample HCL against the formula, ABF, EA insertion, every paper pair, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_nets import TinyNet

from eakd import EntropyAdaptive, build_loss, ea_weights
from eakd.losses.feature import ABF, ReviewKDLoss, hcl_per_sample, reviewkd_levels
from eakd.models import build_model


def block_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average over equal blocks to ``size x size`` (divisible sizes only), float64."""
    n, c, h, w = x.shape
    return x.double().view(n, c, size, h // size, size, w // size).mean((3, 5))


def hcl_reference(fs_list, ft_list, pools=(4, 2, 1)):
    """HCL per sample from its definition (Chen et al., CVPR 2021), one sample at a time, in
    float64."""
    out = []
    for n in range(fs_list[0].shape[0]):
        total = 0.0
        for fs, ft in zip(fs_list, ft_list, strict=True):
            a, b = fs[n : n + 1].double(), ft[n : n + 1].double()
            h = a.shape[-2]
            used = [p for p in pools if p < h]
            num = ((a - b) ** 2).mean()
            den = 1.0
            for k, p in enumerate(used, 1):
                num = num + 2.0**-k * ((block_mean(a, p) - block_mean(b, p)) ** 2).mean()
                den += 2.0**-k
            total = total + num / den
        out.append(total)
    return torch.stack(out)


def original_hcl(fs_list, ft_list):
    """mdistiller's batch-level HCL: F.mse_loss means over the whole batch."""
    loss_all = 0.0
    for fs, ft in zip(fs_list, ft_list, strict=True):
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft)
        cnt, tot = 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            cnt /= 2.0
            loss = (
                loss
                + F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)) * cnt
            )
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def test_hcl_per_sample_matches_the_formula():
    shapes = [(5, 8, 8), (6, 4, 4), (3, 2, 2), (7, 1, 1), (2, 16, 16)]
    fs = [torch.randn(3, *s, requires_grad=True) for s in shapes]
    ft = [torch.randn(3, *s) for s in shapes]
    ours = hcl_per_sample(fs, ft)
    ref = hcl_reference(fs, ft)
    assert ours.shape == (3,) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    # the batch mean of the per-sample loss is the original batch-level loss
    torch.testing.assert_close(ours.mean(), original_hcl(fs, ft), rtol=1e-5, atol=1e-6)
    g_ours = torch.autograd.grad(ours.sum(), fs)
    g_ref = torch.autograd.grad(ref.sum(), fs)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_hcl_pyramid_is_an_argument():
    fs, ft = [torch.randn(2, 3, 8, 8)], [torch.randn(2, 3, 8, 8)]
    plain = ((fs[0] - ft[0]) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(hcl_per_sample(fs, ft, pool_sizes=()), plain)
    one = ((block_mean(fs[0], 1) - block_mean(ft[0], 1)) ** 2).flatten(1).mean(1).float()
    torch.testing.assert_close(hcl_per_sample(fs, ft, pool_sizes=(1,)), (plain + one / 2) / 1.5)
    with pytest.raises(ValueError, match="shapes differ"):
        hcl_per_sample([torch.randn(2, 3, 8, 8)], [torch.randn(2, 3, 4, 4)])


def test_abf_fusion_from_its_definition():
    abf = ABF(4, 6, 5, fuse=True).eval()
    for bn in (abf.conv1[1], abf.conv2[1]):  # non-trivial BN statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x, res = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 2, 2)
    out, fused = abf(x, res, (8, 8))
    # reference: 1x1 conv+BN, nearest 2x upsampling of the residual, sigmoid attention mix,
    # nearest resize to 8x8, 3x3 conv+BN
    a = abf.conv1(x)
    r = res.repeat_interleave(2, -1).repeat_interleave(2, -2)
    att = torch.sigmoid(abf.att_conv(torch.cat([a, r], 1)))
    mixed = a * att[:, :1] + r * att[:, 1:]
    up = mixed.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(fused, up)
    torch.testing.assert_close(out, abf.conv2(up))
    assert out.shape == (2, 5, 8, 8)
    with pytest.raises(ValueError, match="residual"):
        abf(x)


def test_levels_drop_the_stem_and_append_the_pooled_feature():
    model = build_model("resnet8x4").eval()
    _, feats = model(torch.randn(2, 3, 32, 32))
    levels = reviewkd_levels(feats, "student")
    assert [tuple(f.shape[1:]) for f in levels] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (256, 1, 1),
    ]
    assert levels[0] is feats["feats"][1]
    assert reviewkd_levels(feats, "teacher", preact=True)[1] is feats["preact_feats"][2]


def test_ea_with_weights_of_ones_equals_plain_reviewkd():
    student, teacher = TinyNet((4, 6, 8, 10)), TinyNet((5, 7, 9, 12), (1, 2, 2, 1)).eval()
    loss = build_loss("reviewkd", student=student, teacher=teacher)
    x = torch.randn(4, 3, 16, 16)
    zs, fs = student(x)
    with torch.no_grad():
        zt, ft = teacher(x)
    plain = loss(fs, ft)
    per = loss(fs, ft, reduction="none")
    assert per.shape == (4,)
    torch.testing.assert_close(loss(fs, ft, weight=torch.ones(4)), plain)
    ones = EntropyAdaptive(loss, kind="none")(fs, ft, logits=(zs, zt))
    torch.testing.assert_close(ones, plain)
    # EA off is the released ReviewKD's loss: original batch-level HCL of the fused maps
    t_levels = reviewkd_levels(ft, "teacher", preact=True)
    fused = loss.fuse(reviewkd_levels(fs, "student"), [t.shape[-2:] for t in t_levels])
    assert [f.shape for f in fused] == [t.shape for t in t_levels]
    torch.testing.assert_close(plain, original_hcl(fused, t_levels), rtol=1e-5, atol=1e-6)
    # EA: the weight from the final logits multiplies every level of the sample
    ea = EntropyAdaptive(loss, temperature=3.0)
    weighted = ea(fs, ft, logits=(zs, zt))
    w = ea_weights(zs, zt, temperature=3.0)
    torch.testing.assert_close(weighted, (w * per).mean())
    torch.testing.assert_close(ea.last_stats.weights, w)
    with pytest.raises(TypeError, match="logits="):
        ea(fs, ft)


def test_imagenet_pair_with_student_preactivations():
    student = build_model("imagenet_resnet18", num_classes=10)
    teacher = build_model("imagenet_resnet34", num_classes=10).eval()
    loss = ReviewKDLoss(student, teacher, student_preact=True)
    assert loss.student_channels == [64, 128, 256, 512, 512]  # mdistiller's IN_CHANNELS
    x = torch.randn(2, 3, 32, 32)
    _, fs = student(x)
    with torch.no_grad():
        _, ft = teacher(x)
    per = loss(fs, ft, reduction="none")
    assert per.shape == (2,)
    per.sum().backward()
    assert next(iter(student.parameters())).grad.abs().sum() > 0


def test_unmatched_pair_names_both_architectures_and_shapes():
    with pytest.raises(ValueError) as err:
        ReviewKDLoss(build_model("resnet8x4"), build_model("vgg13"))
    msg = str(err.value)
    assert "ResNet" in msg and "VGG" in msg
    assert "64x32x32" in msg and "512x4x4" in msg and "4 levels" in msg


def test_bad_inputs_are_reported():
    loss = ReviewKDLoss([4, 8, 8], [6, 8, 8])
    assert loss.num_levels == 3 and len(list(loss.parameters())) > 0
    fs = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 8)]
    ft = [torch.randn(2, 6, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 8)]
    assert loss(fs, ft, reduction="none").shape == (2,)
    with pytest.raises(ValueError, match="channels"):
        loss(fs, [torch.randn(2, 5, 8, 8), *ft[1:]])
    with pytest.raises(TypeError, match="feats"):
        loss({"feats": []}, ft)
    with pytest.raises(TypeError, match="logits, feats"):
        ReviewKDLoss(torch.nn.Conv2d(3, 4, 3), [4, 4])
    with pytest.raises(TypeError, match="unknown keyword"):
        build_loss("reviewkd", student=[4], teacher=[4], pyramid=(4,))


def test_dtype_follows_features_and_math_runs_in_float32():
    loss = ReviewKDLoss([4, 4], [4, 4]).to(torch.bfloat16)
    fs = [torch.randn(2, 4, 4, 4, dtype=torch.bfloat16), torch.randn(2, 4, dtype=torch.bfloat16)]
    ft = [torch.randn(2, 4, 4, 4, dtype=torch.bfloat16), torch.randn(2, 4, dtype=torch.bfloat16)]
    per = loss(fs, ft, reduction="none")
    assert per.dtype == torch.bfloat16 and torch.isfinite(per).all()
    assert math.isfinite(float(loss(fs, ft).detach()))
