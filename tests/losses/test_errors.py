"""Bad input raises errors that name the argument, what was given and what is expected."""

from __future__ import annotations

import pytest
import torch

import eakd
from eakd import EntropyAdaptive, build_loss, functional


def test_mismatched_shapes():
    with pytest.raises(ValueError, match=r"student_logits has shape \(4, 10\).*\(4, 12\)"):
        functional.kd_loss(torch.randn(4, 10), torch.randn(4, 12))


def test_class_dimension_of_one():
    with pytest.raises(ValueError, match="class dimension.*size 1, expected at least 2"):
        functional.kd_loss(torch.randn(4, 1), torch.randn(4, 1))


def test_integer_logits():
    with pytest.raises(TypeError, match="student_logits must be a floating-point tensor"):
        functional.kd_loss(torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3))


def test_not_a_tensor():
    with pytest.raises(TypeError, match="teacher_logits must be a torch.Tensor, got list"):
        functional.kd_loss(torch.randn(2, 3), [[1.0, 2.0, 3.0]] * 2)


@pytest.mark.parametrize(
    ("side", "bad"),
    # -inf in the teacher masks a class (accepted, tests/reliability/test_library_inputs.py)
    [("teacher", float("nan")), ("teacher", float("inf"))]
    + [("student", bad) for bad in (float("nan"), float("inf"), float("-inf"))],
)
@pytest.mark.parametrize("name", ["kd", "dkd", "mld", "ttm", "ctkd"])
def test_non_finite_logits(side, bad, name):
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    (t if side == "teacher" else s)[2, 1] = bad
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(
        ValueError, match=rf"{side}_logits has NaN or inf values \(first rows: \[2\]\)"
    ):
        build_loss(name)(s, t, y)


def test_non_finite_in_entropy_adaptive():
    s = torch.randn(3, 4)
    s[0, 0] = float("nan")
    with pytest.raises(ValueError, match="student_logits has NaN"):
        EntropyAdaptive(build_loss("kd"))(s, torch.randn(3, 4))


def test_target_out_of_range():
    with pytest.raises(ValueError, match=r"target holds class index 7, outside \[0, 5\)"):
        functional.dkd_loss(torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 7, 1]))
    with pytest.raises(ValueError, match="class index -1"):
        functional.dkd_loss(torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, -1, 1]))


def test_target_missing_or_wrong_shape_or_dtype():
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match="target is required"):
        build_loss("dkd")(s, t)
    with pytest.raises(ValueError, match=r"target has shape \(2\).*\(3\)"):
        build_loss("dkd")(s, t, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        build_loss("dkd")(s, t, torch.tensor([0.0, 1.0, 2.0]))


def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown loss 'dkdd' \(did you mean 'dkd'\?\); valid names: .*kd"
    ):
        build_loss("dkdd")


def test_unknown_keyword_lists_valid_keywords():
    with pytest.raises(
        TypeError, match=r"unknown keyword 'temprature' \(did you mean 'temperature'\?\)"
    ):
        build_loss("kd", temprature=4.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "foo"}, "kind must be one of"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"weight_logits": "zscore"}, "weight_logits must be one of"),
        ({"granularity": "batch"}, "granularity must be one of"),
        ({"max_entropy": -1.0}, "max_entropy must be > 0"),
    ],
)
def test_entropy_adaptive_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EntropyAdaptive(build_loss("kd"), **kwargs)


def test_entropy_adaptive_rejects_non_per_item_callable():
    def batch_mean(s, t, target=None, reduction="mean"):
        return (s - t).pow(2).mean()

    with pytest.raises(ValueError, match="must return one value per item"):
        EntropyAdaptive(batch_mean)(torch.randn(4, 3), torch.randn(4, 3))


def test_bad_reduction_and_weights():
    per = torch.rand(4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        eakd.reduce(per, reduction="avg")
    with pytest.raises(ValueError, match="does not broadcast"):
        eakd.reduce(per, weight=torch.rand(3))
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        eakd.reduce(per, mask=torch.ones(4))


def test_bad_temperature_and_mask_mode():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_loss("kd", temperature=-1.0)
    with pytest.raises(ValueError, match="confidence_mask must be one of"):
        build_loss("mld", confidence_mask="median")
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        build_loss("ttm", gamma=2.0)
    with pytest.raises(ValueError, match="base must be 'kd' or 'dkd'"):
        build_loss("ctkd", base="mld")
