"""FCFD: candidate paths, sampling, per-path BatchNorm statistics, the loss against the released
code's batch-level formulas, EA insertion, gradients, errors."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from tiny_nets import TinyNet

from eakd import EntropyAdaptive, build_loss, ea_weights
from eakd.losses.feature import FCFDLoss, PerItemValues, candidate_paths, path_name


def tiny_pair(**kw):
    """Student with smaller maps than the teacher from stage 2 on (stride-2 and transposed-conv
    bridges), teacher with linear stage outputs."""
    student = TinyNet((4, 6, 8, 10), (1, 2, 2, 2))
    teacher = TinyNet((5, 7, 9, 12), (1, 2, 1, 2), relu=False).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher, FCFDLoss(student, teacher, **kw)


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_b" in k}


def test_candidate_paths_follow_fcfd():
    assert candidate_paths(4) == [(0, 0, 1, 1), (0, 0, 0, 1), (1, 1, 0, 0), (1, 1, 1, 0)]
    assert [path_name(p) for p in candidate_paths(5)] == [
        "ttsss",
        "tttss",
        "tttts",
        "sstttt"[:5],
        "sssttt"[:5],
        "sssst",
    ]
    assert candidate_paths(4, "t2s") == [(0, 0, 1, 1), (0, 0, 0, 1)]
    assert candidate_paths(4, "s2t") == [(1, 1, 0, 0), (1, 1, 1, 0)]
    with pytest.raises(ValueError, match="path_mode"):
        candidate_paths(4, "both")


def test_two_distinct_paths_per_call_covering_every_pair():
    loss = tiny_pair()[2]
    names = {path_name(p) for p in loss.candidates}
    seen = set()
    for _ in range(200):
        drawn = [path_name(p) for p in loss.sample_paths()]
        assert len(drawn) == 2 and len(set(drawn)) == 2 and set(drawn) <= names
        seen.add(tuple(sorted(drawn)))
    assert seen == {tuple(sorted(c)) for c in itertools.combinations(names, 2)}
    torch.manual_seed(3)
    a = loss.sample_paths()
    torch.manual_seed(3)
    assert loss.sample_paths() == a  # the global generator drives it (seeded by the loop)


def test_bridges_and_parameters_are_owned_models_are_not():
    loss = tiny_pair()[2]
    names = {n.split(".")[0] for n, _ in loss.named_parameters()}
    assert names == {"to_teacher", "to_student"}
    assert sorted(loss.to_teacher) == ["1", "2", "3"]
    assert sorted(loss.to_student) == ["1", "2"]  # the switch points of ttss and ttts
    # student maps are half the teacher's from stage 2: transposed conv into the teacher,
    # stride-2 conv out of it; LeakyReLU only into the post-ReLU student
    assert isinstance(loss.to_teacher["2"][0], torch.nn.ConvTranspose2d)
    assert loss.to_student["2"][0].stride == (2, 2)
    assert len(loss.to_teacher["1"]) == 2 and len(loss.to_student["1"]) == 3
    assert not any(k.startswith(("_nets", "student", "teacher")) for k in loss.state_dict())
    assert set(loss.path_stats) == {"tts", "ttss", "ttts", "sst", "sstt", "ssst"}


def reference_loss(loss, student, teacher, x, paths, t=4.0, l2_weight=5.0, warm=1.0):
    """FCFD's objective written with the released code's batch-level formulas: F.kl_div
    batchmean * T^2 and F.mse_loss element means, on copies of the networks in train mode."""
    nets = {0: copy.deepcopy(teacher).train(), 1: copy.deepcopy(student).train()}
    n = teacher.num_stages

    def stages(net, x):
        maps = []
        for i in range(n):
            x = net.forward_stage(i, x)
            maps.append(x)
        return maps

    t_maps = stages(nets[0], x)
    s_maps = stages(nets[1], x)
    zt = nets[0].forward_head(t_maps[-1])[0].detach()
    zs = nets[1].forward_head(s_maps[-1])[0]

    def kl(z):
        return F.kl_div(F.log_softmax(z / t, 1), F.softmax(zt / t, 1), reduction="batchmean") * (
            t * t
        )

    space = {i: [loss.to_teacher[str(i)](s_maps[i])] for i in range(1, n)}
    total = kl(zs)
    for name in paths:
        p = [0 if c == "t" else 1 for c in name]
        k = next(i for i, m in enumerate(p) if m != p[0])
        x = space[k - 1][0] if p[0] == 1 else loss.to_student[str(k - 1)](t_maps[k - 1])
        for i in range(k, n):
            x = nets[p[i]].forward_stage(i, x)
            if p[i] == 0:
                space[i].append(x)
        total = total + kl(nets[p[-1]].forward_head(x)[0])
    l2 = 0.0
    for i in range(1, n):
        target = t_maps[i].detach()
        for f in space[i]:
            l2 = l2 + F.mse_loss(f, target)
            if i == n - 1:
                gap = lambda m: F.adaptive_avg_pool2d(F.relu(m), 1).flatten(1)  # noqa: E731
                l2 = l2 + F.mse_loss(gap(f), gap(target))
    return total + l2_weight * warm * l2, zs, zt


@pytest.mark.parametrize("paths", [["ttss", "sstt"], ["ttts", "ssst"], ["ttss", "ttts"]])
def test_loss_equals_the_released_formulas(paths):
    student, teacher, loss = tiny_pair()
    x = torch.randn(6, 3, 16, 16)
    loss.set_epoch(5)
    ref, zs, zt = reference_loss(loss, student, teacher, x, paths, warm=5 / 20)
    out = loss(x, paths=paths)
    torch.testing.assert_close(out.loss, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.student_logits, zs)
    torch.testing.assert_close(out.teacher_logits, zt)  # teacher_bn="batch": batch statistics
    assert sorted(out.path_logits) == sorted(paths) and loss.last_paths == paths
    assert set(out.terms) == {"kd", "mix_kd", "l2"} and out.per_item.shape == (6,)
    # reduction="none" gives the per-sample terms whose mean is the loss
    per = loss(x, paths=paths, reduction="none").loss
    assert per.shape == (6,)
    torch.testing.assert_close(per.mean(), out.loss)


def test_l2_warmup_and_term_weights():
    student, teacher, loss = tiny_pair(l2_weight=2.0, kl_weight=0.5, mix_weight=0.2)
    x = torch.randn(4, 3, 16, 16)
    full = loss(x, paths=["sstt"]).terms
    loss.set_epoch(1)
    first = loss(x, paths=["sstt"]).terms
    torch.testing.assert_close(first["l2"], full["l2"] / 20)
    torch.testing.assert_close(first["kd"], full["kd"])
    loss.set_epoch(25)
    torch.testing.assert_close(loss(x, paths=["sstt"]).terms["l2"], full["l2"])
    plain = FCFDLoss(student, teacher)
    plain.load_state_dict(loss.state_dict())
    ref = plain(x, paths=["sstt"]).terms
    torch.testing.assert_close(full["kd"], 0.5 * ref["kd"])
    torch.testing.assert_close(full["mix_kd"], 0.2 * ref["mix_kd"])
    torch.testing.assert_close(full["l2"], 2.0 / 5.0 * ref["l2"])


@pytest.mark.parametrize("teacher_bn", ["batch", "running"])
def test_per_path_batchnorm_statistics(teacher_bn):
    student, teacher, loss = tiny_pair(teacher_bn=teacher_bn)
    for bn in teacher.bns:  # a "trained" teacher: non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    teacher_before = copy.deepcopy(teacher.state_dict())
    plain_student = copy.deepcopy(student)
    originals = [(bn.running_mean, bn.running_var) for bn in (*student.bns, *teacher.bns)]
    x = torch.randn(8, 3, 16, 16)
    out = loss(x, paths=["ttss", "sstt"])
    out.loss.backward()
    # the teacher's statistics are untouched, the student's saw only the student path
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, teacher_before[k], rtol=0, atol=0)
    plain_student(x)
    assert bn_state(student).keys() == bn_state(plain_student).keys()
    for k, v in bn_state(student).items():
        torch.testing.assert_close(v, bn_state(plain_student)[k])
    assert originals == [(bn.running_mean, bn.running_var) for bn in (*student.bns, *teacher.bns)]
    # each mixed stage kept its own statistics; paths not drawn kept theirs untouched
    for key, stats in loss.path_stats.items():
        counts = [int(c) for name, c in stats.named_buffers() if name.startswith("count")]
        drawn = key in ("tts", "ttss", "sst", "sstt")
        assert counts == [int(drawn)] * len(counts), key
    # the student stage 2 statistics of path "tts" are those of its input (teacher map bridged)
    with torch.no_grad():
        bridged = loss.to_student["1"](teacher_map(teacher, x, 1, teacher_bn))
        pre = student.convs[2](bridged)
    mean = 0.1 * pre.mean((0, 2, 3))
    torch.testing.assert_close(loss.path_stats["tts"].mean0, mean, rtol=1e-4, atol=1e-6)
    # the teacher logits follow teacher_bn
    with torch.no_grad():
        ref = copy.deepcopy(teacher).train() if teacher_bn == "batch" else teacher
        z = ref(x)[0]
    torch.testing.assert_close(out.teacher_logits, z)


def teacher_map(teacher, x, stage, teacher_bn):
    net = copy.deepcopy(teacher).train() if teacher_bn == "batch" else teacher
    for i in range(stage + 1):
        x = net.forward_stage(i, x)
    return x


def test_eval_mode_uses_the_paths_own_running_statistics():
    student, _, loss = tiny_pair()
    x = torch.randn(4, 3, 16, 16)
    loss(x, paths=["sstt"])
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    student.eval()
    loss.eval()
    with torch.no_grad():
        a = loss(x, paths=["sstt"]).loss
        b = loss(x[:2], paths=["sstt"]).path_logits["sstt"]
        c = loss(x, paths=["sstt"]).path_logits["sstt"][:2]
    assert torch.isfinite(a)
    torch.testing.assert_close(b, c)  # per-sample: running statistics, not the batch's
    for k, v in loss.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_ea_weighting_of_the_chosen_terms():
    student, teacher, loss = tiny_pair()
    x = torch.randn(6, 3, 16, 16)
    paths = ["ttss", "sstt"]
    plain = loss(x, paths=paths)
    ones = loss(x, paths=paths, weighting=EntropyAdaptive(PerItemValues(), kind="none"))
    torch.testing.assert_close(ones.loss, plain.loss)
    ea = EntropyAdaptive(PerItemValues(), temperature=3.0)
    out = loss(x, paths=paths, weighting=ea)
    w = ea_weights(out.student_logits, out.teacher_logits, temperature=3.0)
    torch.testing.assert_close(out.weights, w)
    per = per_sample_terms(loss, x, paths)
    torch.testing.assert_close(
        out.loss, (w * (per["kd"] + per["mix_kd"])).mean() + per["l2"].mean(), rtol=1e-5, atol=1e-5
    )
    both = FCFDLoss(student, teacher, ea_targets=["kd", "mix_kd", "l2"])
    both.load_state_dict(loss.state_dict())
    out = both(x, paths=paths, weighting=ea)
    total = per["kd"] + per["mix_kd"] + per["l2"]
    torch.testing.assert_close(out.loss, (w * total).mean(), rtol=1e-5, atol=1e-5)
    only_l2 = FCFDLoss(student, teacher, ea_targets="l2")
    only_l2.load_state_dict(loss.state_dict())
    out = only_l2(x, paths=paths, weighting=ea)
    expect = (w * per["l2"]).mean() + (per["kd"] + per["mix_kd"]).mean()
    torch.testing.assert_close(out.loss, expect, rtol=1e-5, atol=1e-5)


def per_sample_terms(loss, x, paths):
    """Each term alone, per sample, via single-term FCFDs sharing the bridges."""
    student, teacher = loss._nets[1], loss._nets[0]
    out = {}
    for name, kw in {
        "kd": {"mix_weight": 0.0, "l2_weight": 0.0},
        "mix_kd": {"kl_weight": 0.0, "l2_weight": 0.0},
        "l2": {"kl_weight": 0.0, "mix_weight": 0.0},
    }.items():
        one = FCFDLoss(student, teacher, **kw)
        one.load_state_dict(loss.state_dict())
        out[name] = one(x, paths=paths, reduction="none").loss.detach()
    return out


def test_gradients_reach_student_and_bridges_not_teacher():
    student, teacher, loss = tiny_pair()
    out = loss(torch.randn(4, 3, 16, 16), paths=["sstt", "ssst"])
    (F.cross_entropy(out.student_logits, torch.arange(4)) + out.loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad.abs().sum() > 0 for p in loss.to_teacher.parameters())
    # no sampled path used the teacher->student bridges: they get a zero gradient, so every
    # parameter takes part in the step (what DistributedDataParallel requires)
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in loss.to_student.parameters())


def test_unmatched_pairs_name_both_architectures_and_shapes():
    with pytest.raises(ValueError) as err:
        FCFDLoss(TinyNet((4, 6, 8), (1, 1, 2)), TinyNet((4, 6, 8, 10)))
    msg = str(err.value)
    assert "TinyNet" in msg and "3 stages" in msg and "4x32x32, 6x32x32, 8x16x16" in msg
    with pytest.raises(ValueError, match="factor of 2") as err:
        FCFDLoss(TinyNet((4, 6, 8, 10), (1, 4, 1, 1)), TinyNet((4, 6, 8, 10)))
    assert "6x8x8" in str(err.value) and "6x32x32" in str(err.value)
    with pytest.raises(TypeError, match="stage interface"):
        FCFDLoss(torch.nn.Linear(2, 2), TinyNet())
    with pytest.raises(ValueError, match="ea_targets"):
        FCFDLoss(TinyNet(), TinyNet(), ea_targets=["ce"])
    with pytest.raises(ValueError, match="num_paths"):
        FCFDLoss(TinyNet(), TinyNet(), num_paths=5)
    with pytest.raises(ValueError, match="unknown path"):
        FCFDLoss(TinyNet(), TinyNet())(torch.randn(2, 3, 8, 8), paths=["tsts"])
    with pytest.raises(TypeError, match="unknown keyword"):
        build_loss("fcfd", student=TinyNet(), teacher=TinyNet(), weight_l2=5)


def test_state_dict_round_trip_restores_bridges_and_path_statistics():
    student, teacher, loss = tiny_pair()
    loss(torch.randn(4, 3, 16, 16), paths=["ttss", "sstt"])
    other = FCFDLoss(student, teacher)
    other.load_state_dict(loss.state_dict())
    for k, v in loss.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)
