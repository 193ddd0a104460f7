"""ReviewKD: knowledge review with attention-based fusion (ABF) and the hierarchical context loss.

Chen, Liu, Zhao and Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021, as used by
mdistiller and by EA-KD's released ``ReviewKD.py``. The loss is computed
per sample (mean over C, H, W of each sample), so the EA weight of a sample, taken from the final
logits, multiplies that sample's loss at every level and every pooled sub-level, and the batch
mean happens once, in :func:`eakd.core.reduce`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import DistillationLoss
from ..registry import register_loss
from ._taps import probe, tap_error

__all__ = ["ABF", "ReviewKDLoss", "hcl_per_sample", "reviewkd_levels"]

Levels = Sequence[torch.Tensor]


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first, in float32: ``(N, ...) -> (N,)``."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def hcl_per_sample(
    student_feats: Levels, teacher_feats: Levels, pool_sizes: Sequence[int] = (4, 2, 1)
) -> torch.Tensor:
    r"""Hierarchical context loss per sample, summed over level pairs.

    For each level pair ``(F_s, F_t)`` of shape ``(N, C, h, w)``:

    .. math::
        \mathrm{HCL}_n = \frac{\mathrm{MSE}_n(F_s, F_t)
            + \sum_k 2^{-k}\,\mathrm{MSE}_n(P_{l_k}(F_s), P_{l_k}(F_t))}{1 + \sum_k 2^{-k}}

    where ``MSE_n`` is the mean over (C, h, w) of sample n, ``P_l`` adaptive average pooling to
    ``l x l`` and ``l_1, l_2, ...`` the entries of ``pool_sizes`` smaller than ``h`` (k counts the
    used ones). With every sample weighted 1, the batch mean of the result is the original
    ReviewKD loss.

    Args:
        student_feats, teacher_feats: matching lists of ``(N, C, h, w)`` maps.
        pool_sizes: the pyramid of pooled sizes (ReviewKD: 4, 2, 1).

    Returns:
        ``(N,)`` float32.
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(
            f"hcl needs matching non-empty level lists, got {len(student_feats)} student and "
            f"{len(teacher_feats)} teacher levels"
        )
    total = None
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        if fs.shape != ft.shape:
            raise ValueError(
                f"hcl level shapes differ: student {tuple(fs.shape)} vs teacher {tuple(ft.shape)}"
            )
        h = fs.shape[-2]
        loss = _per_sample_mse(fs, ft)
        factor, norm = 1.0, 1.0
        for size in pool_sizes:
            if size >= h:
                continue
            factor /= 2.0
            pooled = _per_sample_mse(
                F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)
            )
            loss = loss + factor * pooled
            norm += factor
        loss = loss / norm
        total = loss if total is None else total + loss
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student level with the fused level below it (ReviewKD).

    ``x`` -> 1x1 conv + BN to ``mid_channels``; if ``fuse``, the deeper residual is resized
    (nearest) to ``x``'s size and mixed in with two sigmoid attention maps from a 1x1 conv of
    ``[x; residual]``; the result is resized (nearest) to the teacher's size and mapped by a 3x3
    conv + BN to the teacher's channels. Returns ``(output, residual for the next level)``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.att_conv = nn.Conv2d(2 * mid_channels, 2, kernel_size=1) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        out_size: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, C_in, h, w), ``residual`` (N, mid, h', w') -> ``(out (N, C_out, H, W),
        fused (N, mid, H, W))`` with ``(H, W) = out_size`` (default: ``(h, w)``)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("this ABF level fuses: pass the residual of the deeper level")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = torch.sigmoid(self.att_conv(torch.cat([x, residual], dim=1)))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def reviewkd_levels(feats: Any, role: str, preact: bool = False) -> list[torch.Tensor]:
    """The maps ReviewKD distils, shallowest first: stage outputs 1.. (the stem is left out) and
    the pooled feature as a ``1x1`` map.

    ``feats`` is the zoo's feature dict (``preact`` picks ``preact_feats`` over ``feats``; the
    teacher side always uses pre-activations) or an explicit list of maps, used as
    given (a 2-D ``(N, D)`` entry becomes ``(N, D, 1, 1)``).
    """
    if isinstance(feats, Mapping):
        key = "preact_feats" if preact else "feats"
        missing = [k for k in (key, "pooled_feat") if k not in feats]
        if missing:
            raise TypeError(
                f"the {role} features lack {', '.join(missing)}; ReviewKD needs the feature dict "
                "of models returning (logits, feats) with feats['feats'], feats['preact_feats'] "
                "and feats['pooled_feat'] (the eakd.models contract)"
            )
        levels = [*feats[key][1:], feats["pooled_feat"]]
    elif isinstance(feats, Sequence) and not isinstance(feats, str):
        levels = list(feats)
    else:
        raise TypeError(
            f"the {role} features must be the models' feature dict or a list of maps, got "
            f"{type(feats).__name__}"
        )
    out = []
    for i, f in enumerate(levels):
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"{role} level {i} is {type(f).__name__}, not a tensor")
        if f.dim() == 2:
            f = f[:, :, None, None]
        if f.dim() != 4:
            raise ValueError(
                f"{role} level {i} has shape {tuple(f.shape)}; ReviewKD needs (N, C, H, W) maps "
                "(or the pooled (N, D) vector)"
            )
        out.append(f)
    return out


@register_loss("reviewkd")
class ReviewKDLoss(DistillationLoss):
    r"""ReviewKD's ABF modules and hierarchical context loss, per sample.

    The student's levels (stage outputs 1.. and the pooled feature) are fused deepest first by
    one :class:`ABF` per level and compared with the teacher's pre-activation levels by
    :func:`hcl_per_sample`:

    .. math:: \ell_n = \sum_{\text{levels}} \mathrm{HCL}_n(\mathrm{ABF}(F^S), F^T),\qquad
              L = \frac1N \sum_n w_n\,\ell_n

    with ``w_n = 1`` here and the EA weight under :class:`eakd.EntropyAdaptive` (pass
    ``logits=(student_logits, teacher_logits)``: the weights come from the final logits and
    multiply every level). The ABF modules are trainable: give ``loss.parameters()`` to the
    optimiser with the student's. The training recipe's ``lambda_R * min(epoch / 20, 1)`` factor
    is the caller's (CIFAR: 5, ImageNet: 1 with ``student_preact=True``).

    Args:
        student, teacher: the two models (``logits, feats = model(x)``, the eakd.models
            contract; one dummy forward reads their channels, no reference is kept) or, for
            other networks, the level channel lists, shallowest first with the pooled
            dimension last.
        student_preact: distil the student's pre-activation maps (ImageNet recipe).
        pool_sizes: HCL's pyramid of pooled sizes.
        max_mid_channels: ABF width cap: ``mid = min(max_mid_channels, pooled dimension)``.
        input_size: spatial size of the dummy forward (channels do not depend on it; at run
            time the maps' actual sizes are used).

    Inputs of :meth:`forward`/:meth:`per_item_loss`: the models' feature dicts (or level lists)
    ``(student_feats, teacher_feats)``; the teacher's are detached. Output ``(N,)`` per sample.

    Raises:
        ValueError: when the two models' level counts differ (the message names both
            architectures and the shapes found).
    """

    input_kind = "features"
    per_item = True
    needs_target = False

    def __init__(
        self,
        student: nn.Module | Sequence[int],
        teacher: nn.Module | Sequence[int],
        *,
        student_preact: bool = False,
        pool_sizes: Sequence[int] = (4, 2, 1),
        max_mid_channels: int = 512,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        pool_sizes = tuple(int(p) for p in pool_sizes)
        if any(p < 1 for p in pool_sizes):
            raise ValueError(f"pool_sizes must be positive, got {pool_sizes}")
        if max_mid_channels < 1:
            raise ValueError(f"max_mid_channels must be >= 1, got {max_mid_channels}")
        self.student_preact = bool(student_preact)
        self.pool_sizes = pool_sizes
        s_shapes = self._channels_or_shapes(student, "student", self.student_preact)
        t_shapes = self._channels_or_shapes(teacher, "teacher", True)
        if len(s_shapes) != len(t_shapes):
            raise tap_error(
                "reviewkd",
                student,
                teacher,
                s_shapes,
                t_shapes,
                f"the student has {len(s_shapes)} levels (stages 1.. and the pooled feature) "
                f"and the teacher {len(t_shapes)}",
            )
        self.student_channels = [s[0] for s in s_shapes]
        self.teacher_channels = [t[0] for t in t_shapes]
        mid = min(int(max_mid_channels), self.student_channels[-1])
        n = len(self.student_channels)
        # stored deepest first, the order they run in: the pooled level does not fuse
        self.abfs = nn.ModuleList(
            ABF(self.student_channels[i], mid, self.teacher_channels[i], fuse=i < n - 1)
            for i in reversed(range(n))
        )

    @staticmethod
    def _channels_or_shapes(model: Any, role: str, preact: bool) -> list[tuple[int, ...]]:
        if isinstance(model, Sequence) and not isinstance(model, str):
            chans = [int(c) for c in model]
            if not chans or any(c < 1 for c in chans):
                raise ValueError(f"{role} channels must be positive ints, got {list(model)}")
            return [(c,) for c in chans]
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{role} must be a model or a list of level channels, got {type(model).__name__}"
            )
        out = probe(model)
        if not (isinstance(out, tuple | list) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise TypeError(
                f"the {role} {type(model).__name__} does not return (logits, feats); ReviewKD "
                "needs the eakd.models forward contract (feats['feats'], feats['preact_feats'], "
                "feats['pooled_feat'])"
            )
        return [tuple(f.shape[1:]) for f in reviewkd_levels(out[1], role, preact)]

    @property
    def num_levels(self) -> int:
        return len(self.student_channels)

    def fuse(
        self, student_levels: Levels, out_sizes: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """ABF outputs, shallowest first, each resized to ``out_sizes[i]`` (the teacher's)."""
        xs = list(student_levels)[::-1]
        sizes = list(out_sizes)[::-1]
        out, residual = self.abfs[0](xs[0], None, sizes[0])
        results = [out]
        for x, abf, size in zip(xs[1:], self.abfs[1:], sizes[1:], strict=True):
            out, residual = abf(x, residual, size)
            results.append(out)
        return results[::-1]

    def per_item_loss(self, student_feats: Any, teacher_feats: Any, target=None) -> torch.Tensor:
        """``(N,)`` ReviewKD loss per sample (see the class docstring)."""
        s_levels = reviewkd_levels(student_feats, "student", self.student_preact)
        t_levels = [t.detach() for t in reviewkd_levels(teacher_feats, "teacher", True)]
        for role, levels, chans in (
            ("student", s_levels, self.student_channels),
            ("teacher", t_levels, self.teacher_channels),
        ):
            got = [f.shape[1] for f in levels]
            if got != chans:
                raise ValueError(
                    f"the {role} levels have channels {got}, but this ReviewKD was built for "
                    f"{chans}; build it from the models being distilled"
                )
        fused = self.fuse(s_levels, [t.shape[-2:] for t in t_levels])
        per = hcl_per_sample(fused, t_levels, self.pool_sizes)
        out_dtype = torch.promote_types(fused[0].dtype, t_levels[0].dtype)
        return per if per.dtype == out_dtype else per.to(out_dtype)

    def per_item_with_entropies(self, student, teacher, target, entropy_temperature):
        raise TypeError(
            "ReviewKD's inputs are features, not logits: give EntropyAdaptive the logits for the "
            "weights, e.g. ea(student_feats, teacher_feats, logits=(student_logits, "
            "teacher_logits))"
        )

    def extra_repr(self) -> str:
        return (
            f"student_channels={self.student_channels}, teacher_channels="
            f"{self.teacher_channels}, student_preact={self.student_preact}, "
            f"pool_sizes={self.pool_sizes}"
        )
