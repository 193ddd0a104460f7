"""Input checks shared by every loss: one place, one wording for every error."""

from __future__ import annotations

import math

import torch

__all__ = [
    "MASKED_LOGIT",
    "NonFiniteInput",
    "check_finite",
    "check_logits",
    "check_pair",
    "check_target",
    "mask_teacher",
]

#: The finite stand-in for a ``-inf`` (masked) teacher logit in the logit losses. Its softmax
#: probability underflows to exactly 0 (``exp`` of anything below about -104 is 0 in float32)
#: at any temperature up to 1e27, and it stays finite divided by temperatures down to 1e-8.
#: So a masked class contributes exactly 0 to every ``p_c (log p_c - log q_c)`` term and to
#: the teacher's entropy, as ``p_c = 0`` does in exact arithmetic, where IEEE arithmetic would
#: give ``0 * inf = NaN``.
MASKED_LOGIT = -1e30

#: Inputs whose ``-inf`` entries the losses accept (masked teacher classes): :func:`check_finite`
#: does not name them as the cause of a non-finite loss.
_MASKABLE = ("teacher_logits", "teacher logits")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Check that ``logits`` is a floating tensor with a class dimension of at least 2."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float32, float16 or bfloat16), "
            f"got dtype {logits.dtype}; cast it with .float()"
        )
    if logits.dim() < 1:
        raise ValueError(f"{name} must have a class dimension, got a 0-d tensor")
    if logits.shape[-1] < 2:
        raise ValueError(
            f"{name} has shape {_shape(logits)}: the class dimension (last) has size "
            f"{logits.shape[-1]}, expected at least 2 classes"
        )
    return logits


def check_pair(
    student_logits: object,
    teacher_logits: object,
    student_name: str = "student_logits",
    teacher_name: str = "teacher_logits",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a student/teacher logit pair: floating tensors of the same shape and device."""
    s = check_logits(student_logits, student_name)
    t = check_logits(teacher_logits, teacher_name)
    if s.shape != t.shape:
        raise ValueError(
            f"{student_name} has shape {_shape(s)} but {teacher_name} has shape {_shape(t)}; "
            "they must match (same items, same classes in the last dimension)"
        )
    if s.device != t.device:
        raise ValueError(
            f"{student_name} is on {s.device} but {teacher_name} is on {t.device}; "
            "move both to the same device"
        )
    return s, t


def check_target(target: object, logits: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Check class indices: integer tensor of the logits' leading shape, values in [0, C)."""
    if target is None:
        raise ValueError(f"{name} is required by this loss (class indices), got None")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(target)}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer class indices (torch.long), got dtype {target.dtype}"
        )
    lead = logits.shape[:-1]
    if target.shape != lead:
        raise ValueError(
            f"{name} has shape {_shape(target)} but the logits' leading shape is "
            f"({', '.join(map(str, lead))}); expected one class index per item"
        )
    num_classes = logits.shape[-1]
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} holds class index {bad}, outside [0, {num_classes}) for logits with "
                f"{num_classes} classes; check the dataset's labels and the model's num_classes"
            )
    return target


def mask_teacher(
    teacher_logits: torch.Tensor, name: str = "teacher_logits", standardize: bool = False
) -> torch.Tensor:
    """Teacher logits with ``-inf`` entries (masked classes) replaced by :data:`MASKED_LOGIT`.

    ``-inf`` is the usual way to mask vocabulary entries or classes out of a teacher's
    distribution: there ``p_c = 0``, which adds 0 to KL-type divergences ``sum_c p_c (log p_c -
    log q_c)`` and to the entropy. A row needs at least one finite logit (a row of ``-inf`` has
    no distribution). The tensor is returned as is, at the cost of one sum, when it holds no
    ``-inf``; NaN and ``+inf`` are left for :func:`check_finite` to refuse. Standardised logits
    (``standardize=True``) cannot take ``-inf``: a row's mean and standard deviation would not
    be finite.
    """
    # a float32 sum is -inf only with a -inf entry and no NaN or +inf (a sum of finite logits
    # does not overflow float32; if it ever did, the check below finds nothing to mask)
    if float(teacher_logits.detach().sum(dtype=torch.float32)) != -math.inf:
        return teacher_logits
    masked = torch.isneginf(teacher_logits)
    if not bool(masked.any()):
        return teacher_logits
    empty = masked.reshape(-1, teacher_logits.shape[-1]).all(-1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{name} is -inf in every class of rows {rows}: a masked teacher needs at least "
            "one finite logit per item (a row of -inf has no distribution)"
        )
    if standardize:
        raise ValueError(
            f"{name} has -inf entries (masked classes), which logit standardisation cannot "
            "take (a row's mean and standard deviation would not be finite); mask with a "
            "finite value or turn standardisation off"
        )
    if teacher_logits.dtype not in (torch.float32, torch.float64):
        teacher_logits = teacher_logits.float()  # float16 cannot hold MASKED_LOGIT
    return torch.where(masked, MASKED_LOGIT, teacher_logits)


class NonFiniteInput(ValueError):
    """A loss met NaN/inf logits (or overflowed): in training, the model diverged."""


def check_finite(per_item: torch.Tensor, *inputs: tuple[str, torch.Tensor]) -> None:
    """Raise if ``per_item`` holds NaN/inf, naming which input carried non-finite values.

    Checking the small per-item result instead of the (N, C) logits keeps the check to one
    cheap reduction; the inputs are only inspected on the error path. ``-inf`` in the teacher
    logits (masked classes, see :func:`mask_teacher`) is not reported as a cause.
    """
    # One reduction decides the common case: the sum of finite values is finite (an overflow
    # of the sum itself falls through to the element-wise check below).
    if math.isfinite(float(per_item.detach().sum())) or bool(torch.isfinite(per_item).all()):
        return
    culprits = []
    for name, tensor in inputs:
        bad = ~torch.isfinite(tensor)
        if name in _MASKABLE:
            bad &= ~torch.isneginf(tensor)
        if bool(bad.any()):
            rows = bad.reshape(-1, tensor.shape[-1]).any(-1).nonzero().flatten()[:5].tolist()
            culprits.append(f"{name} has NaN or inf values (first rows: {rows})")
    detail = "; ".join(culprits) if culprits else "the loss overflowed for finite inputs"
    raise NonFiniteInput(
        f"non-finite distillation loss: {detail}. Logits must be finite (the teacher's may be "
        "-inf for masked classes): check the model for divergence (learning rate, mixed "
        "precision overflow) or the data for NaNs"
    )
