"""Multi-Level Logit Distillation (Jin, Wang & Lin, CVPR 2023).

Three terms, each at several temperatures:

* instance level (per item): ``sum_T T^2 KL(softmax(z^t/T) || softmax(z^s/T))``;
* class level (batch-level term): ``sum_T ||P_t^T P_t - P_s^T P_s||_F^2 / C``;
* batch level (batch-level term): ``sum_T ||P_t P_t^T - P_s P_s^T||_F^2 / B``;

with ``P = softmax(z/T)`` of shape ``(B, C)``. Only the instance term has a per-item form, so
only it can be EA-weighted; the class/batch terms refuse ``reduction="none"`` and EA.

Confidence masks, from the teacher's weak-view softmax at ``T = 1``: a sample mask
``m_n = [max_c p_nc <= median_n max_c p]`` and a class mask ``k_c = [sum_n p_nc <= median_c]``.
``confidence_mask="official"`` reproduces the released code, where the mask multiplies an
already-averaged loss and so only scales it by ``mean(m)`` (or ``mean(k)``);
``"per_sample"`` applies ``m_n`` per sample (``k_c`` per class row) as the MLD paper describes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core.reduction import reduce
from ...core.transforms import standardize_logits
from ...core.validation import check_finite, check_pair
from ..base import DistillationLoss, finish, prepare_logits
from ..registry import register_loss
from ._common import as_rows, kl_rows, log_softmax_t

__all__ = [
    "MASK_MODES",
    "MLDBatchLoss",
    "MLDClassLoss",
    "MLDLoss",
    "confidence_masks",
    "mld_batch_loss",
    "mld_class_loss",
    "mld_loss",
]

MASK_MODES = (None, "official", "per_sample")
DEFAULT_TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)


def _check_mode(mode):
    if mode not in MASK_MODES:
        raise ValueError(f"confidence_mask must be one of {MASK_MODES}, got {mode!r}")


def _median_lower(x: torch.Tensor) -> torch.Tensor:
    """numpy's linear-interpolation median (``torch.median`` returns the lower middle value)."""
    return torch.quantile(x.float(), 0.5, interpolation="linear")


@torch.no_grad()
def confidence_masks(teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MLD's sample mask ``(N,)`` and class mask ``(C,)`` as float 0/1 tensors."""
    p = torch.softmax(as_rows(teacher_logits).float(), -1)
    conf = p.amax(-1)
    class_mass = p.sum(0)
    return (conf <= _median_lower(conf)).float(), (class_mass <= _median_lower(class_mass)).float()


def _temps(temperatures: Sequence[float]) -> tuple[float, ...]:
    temps = tuple(float(x) for x in temperatures)
    if not temps or any(not x > 0 for x in temps):
        raise ValueError(f"temperatures must be a non-empty list of positive floats, got {temps}")
    return temps


def mld_per_item(s, t, temperatures=DEFAULT_TEMPERATURES, confidence_mask=None, standardize=False):
    """Per-item multi-temperature KD, with the sample mask folded in per ``confidence_mask``."""
    _check_mode(confidence_mask)
    s2, t2, _ = prepare_logits(s, t, standardize=standardize)
    zs, zt = as_rows(s2), as_rows(t2)
    per = zs.new_zeros(zs.shape[0], dtype=torch.float32)
    for temp in _temps(temperatures):
        per = per + temp * temp * kl_rows(log_softmax_t(zt, temp), log_softmax_t(zs, temp))
    if confidence_mask is not None:
        m, _ = confidence_masks(as_rows(t.detach()))
        per = per * (m.mean() if confidence_mask == "official" else m)
    return finish(per.view(s.shape[:-1]), s, t)


def mld_loss(
    student_logits,
    teacher_logits,
    target=None,
    *,
    temperatures=DEFAULT_TEMPERATURES,
    confidence_mask=None,
    standardize=False,
    weight=None,
    mask=None,
    reduction="mean",
    num_items=None,
):
    r"""MLD's instance-level term, per item: ``sum_{T in temperatures} T^2 KL_T``.

    ``temperatures`` defaults to ``(T0, 3, 5, 2, 6)`` with ``T0 = 4`` (CIFAR-100);
    ``confidence_mask`` is ``None``, ``"official"`` or ``"per_sample"`` (module docstring).
    """
    per = mld_per_item(student_logits, teacher_logits, temperatures, confidence_mask, standardize)
    return reduce(per, weight=weight, mask=mask, reduction=reduction, num_items=num_items)


def _gram_term(s, t, temperatures, mode, standardize, level, mask):
    s, t = check_pair(s, t)
    zs, zt = as_rows(s).float(), as_rows(t.detach()).float()
    if mask is not None:
        keep = mask.reshape(-1)
        zs, zt = zs[keep], zt[keep]
        if zs.shape[0] == 0:
            return s.new_zeros((), dtype=torch.float32)
    if standardize:
        zs, zt = standardize_logits(zs), standardize_logits(zt)
    _check_mode(mode)
    m, k = confidence_masks(zt) if mode is not None else (None, None)
    total = zs.new_zeros(())
    for temp in _temps(temperatures):
        ps, pt = torch.softmax(zs / temp, -1), torch.softmax(zt / temp, -1)
        if level == "class":
            diff = (pt.t() @ pt - ps.t() @ ps) ** 2  # (C, C)
            row_mask, norm = k, zs.shape[1]
        else:
            diff = (pt @ pt.t() - ps @ ps.t()) ** 2  # (B, B)
            row_mask, norm = m, zs.shape[0]
        if mode == "per_sample":
            diff = diff * row_mask.unsqueeze(1)
        term = diff.sum() / norm
        if mode == "official":
            term = term * row_mask.mean()
        total = total + term
    check_finite(total.view(1), ("student_logits", s), ("teacher_logits", t))
    return total


def mld_class_loss(
    student_logits,
    teacher_logits,
    target=None,
    *,
    temperatures=DEFAULT_TEMPERATURES,
    confidence_mask=None,
    standardize=False,
    mask=None,
    reduction="mean",
):
    """MLD's class-level consistency ``sum_T ||G^t - G^s||^2 / C``, ``G = P^T P``: a batch term."""
    _refuse_none(reduction, "mld_class")
    return _gram_term(
        student_logits, teacher_logits, temperatures, confidence_mask, standardize, "class", mask
    )


def mld_batch_loss(
    student_logits,
    teacher_logits,
    target=None,
    *,
    temperatures=DEFAULT_TEMPERATURES,
    confidence_mask=None,
    standardize=False,
    mask=None,
    reduction="mean",
):
    """MLD's batch-level consistency ``sum_T ||M^t - M^s||^2 / B``, ``M = P P^T``: a batch term."""
    _refuse_none(reduction, "mld_batch")
    return _gram_term(
        student_logits, teacher_logits, temperatures, confidence_mask, standardize, "batch", mask
    )


def _refuse_none(reduction, name):
    if reduction == "none":
        raise ValueError(
            f"{name} is a batch-level term with no per-item form, so reduction='none' (and EA "
            "weighting) is not defined for it; use reduction='mean'"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


@register_loss("mld")
class MLDLoss(DistillationLoss):
    """MLD instance-level term (CVPR 2023); see :func:`mld_loss`."""

    def __init__(self, temperatures=DEFAULT_TEMPERATURES, confidence_mask=None, standardize=False):
        super().__init__()
        _check_mode(confidence_mask)
        self.temperatures = _temps(temperatures)
        self.confidence_mask = confidence_mask
        self.standardize = bool(standardize)

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        return mld_per_item(
            student_logits,
            teacher_logits,
            self.temperatures,
            self.confidence_mask,
            self.standardize,
        )

    def extra_repr(self) -> str:
        return (
            f"temperatures={self.temperatures}, confidence_mask={self.confidence_mask!r}, "
            f"standardize={self.standardize}"
        )


class _BatchTerm(DistillationLoss):
    per_item = False
    _fn = None
    _name = ""

    def __init__(self, temperatures=DEFAULT_TEMPERATURES, confidence_mask=None, standardize=False):
        super().__init__()
        _check_mode(confidence_mask)
        self.temperatures = _temps(temperatures)
        self.confidence_mask = confidence_mask
        self.standardize = bool(standardize)

    def per_item_loss(self, student_logits, teacher_logits, target=None):
        _refuse_none("none", self._name)

    def forward(
        self,
        student_logits,
        teacher_logits,
        target=None,
        *,
        weight=None,
        mask=None,
        reduction="mean",
        num_items=None,
    ):
        if weight is not None:
            raise ValueError(
                f"{self._name} is a batch-level term with no per-item form; it cannot take "
                "per-item weights"
            )
        _refuse_none(reduction, self._name)
        return type(self)._fn(
            student_logits,
            teacher_logits,
            temperatures=self.temperatures,
            confidence_mask=self.confidence_mask,
            standardize=self.standardize,
            mask=mask,
        )


@register_loss("mld_class")
class MLDClassLoss(_BatchTerm):
    """MLD class-level consistency (batch-level term); see :func:`mld_class_loss`."""

    _fn = staticmethod(mld_class_loss)
    _name = "mld_class"


@register_loss("mld_batch")
class MLDBatchLoss(_BatchTerm):
    """MLD batch-level consistency (batch-level term); see :func:`mld_batch_loss`."""

    _fn = staticmethod(mld_batch_loss)
    _name = "mld_batch"
