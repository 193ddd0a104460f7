"""The numbers behind the figures: quantile loss shares, entropy segments, cluster separability.

Plain NumPy (no matplotlib, no scikit-learn), so they are cheap to import and to test against
direct computations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy_by_segment",
    "area_below",
    "calinski_harabasz",
    "entropy_segments",
    "quantile_loss_shares",
    "quantile_loss_shares_exact",
    "quantile_share_uncertainty",
    "top_fraction",
]


def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _rank_overlap(counts: np.ndarray, parts: int) -> np.ndarray:
    """``(bins, parts)`` fraction of each bin's samples that falls in each rank quantile.

    Bin ``b`` holds the samples of ranks ``[C_{b-1}, C_b)`` (``C`` the cumulative count);
    quantile ``k`` holds ranks ``[k N / parts, (k + 1) N / parts)``. A bin that straddles a
    boundary is split in proportion to the ranks on either side.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if np.any(counts < 0):
        raise ValueError("histogram counts must be >= 0")
    hi = np.cumsum(counts)
    lo = hi - counts
    total = hi[-1] if hi.size else 0.0
    edges = np.linspace(0.0, total, parts + 1)
    overlap = np.clip(
        np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]),
        0.0,
        None,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, overlap / counts[:, None], 0.0)


def quantile_loss_shares(
    hist_count: Sequence[float], hist_loss: Sequence[float], parts: int = 4
) -> np.ndarray:
    r"""Share of the loss contributed by each teacher-entropy quantile, from a histogram.

    The training engine records, per epoch, the number of samples ``n_b`` and the summed
    distillation loss ``L_b`` in each teacher-entropy bin (bins uniform over ``[0, log C]`` at
    the EA temperature ``T'``). The samples are ranked by entropy; quantile ``Q_k`` holds ranks
    ``[k N / parts, (k + 1) N / parts)`` of ``N = sum_b n_b``. A bin that straddles a quantile
    boundary gives each side a part of ``L_b`` proportional to its samples on that side (the
    samples of a bin are taken to carry equal loss), so the result is exact when no bin
    straddles a boundary; :func:`quantile_share_uncertainty` bounds the error otherwise.

    .. math::  s_k = \frac{\sum_b L_b\, |{\rm ranks}(b) \cap Q_k| / n_b}{\sum_b L_b}

    This is the quantity of EA-KD's Figure 5 (Q1 lowest entropy ... Q4 highest).

    Args:
        hist_count: ``(bins,)`` sample counts per entropy bin, in increasing entropy.
        hist_loss: ``(bins,)`` loss summed per bin (weighted by the EA weight for the loss that
            EA-KD optimises, ``hist_weighted`` in a run's diagnostics).
        parts: number of equal-count quantiles (4: quartiles).

    Returns:
        ``(parts,)`` shares summing to 1 (all NaN when the total loss is 0).
    """
    counts = _as_1d(hist_count, "hist_count")
    losses = _as_1d(hist_loss, "hist_loss")
    if counts.shape != losses.shape:
        raise ValueError(f"hist_count {counts.shape} and hist_loss {losses.shape} differ in size")
    sums = (_rank_overlap(counts, parts) * losses[:, None]).sum(0)
    total = sums.sum()
    if not total > 0:
        return np.full(parts, math.nan)
    return sums / total


def quantile_share_uncertainty(
    hist_count: Sequence[float], hist_loss: Sequence[float], parts: int = 4
) -> float:
    """Largest possible error of :func:`quantile_loss_shares` (as a share of the total loss).

    Only bins that straddle a quantile boundary are split by assumption; however their loss is
    really distributed among their samples, no share can move by more than the loss these bins
    hold. Returns that loss over the total (0: the shares are exact).
    """
    counts = _as_1d(hist_count, "hist_count")
    losses = _as_1d(hist_loss, "hist_loss")
    frac = _rank_overlap(counts, parts)
    straddle = ((frac > 1e-12) & (frac < 1 - 1e-12)).any(1)
    total = losses.sum()
    return float(losses[straddle].sum() / total) if total > 0 else 0.0


def quantile_loss_shares_exact(
    values: Sequence[float], losses: Sequence[float], parts: int = 4
) -> np.ndarray:
    """The shares of :func:`quantile_loss_shares` from per-sample values (no binning).

    Samples are ranked by ``values`` (ties in input order); each sample occupies one rank, so a
    quantile boundary that falls inside a rank (``N`` not divisible by ``parts``) splits that
    sample's loss between the two quantiles.
    """
    v = _as_1d(values, "values")
    loss = _as_1d(losses, "losses")
    if v.shape != loss.shape:
        raise ValueError(f"values {v.shape} and losses {loss.shape} differ in size")
    order = np.argsort(v, kind="stable")
    return quantile_loss_shares(np.ones_like(v), loss[order], parts)


def entropy_segments(values: Sequence[float], segments: int = 5) -> list[np.ndarray]:
    """Indices of ``segments`` equal-count groups of samples, from the lowest ``values`` up.

    Sizes differ by at most one (``np.array_split`` of the ranking; ties in input order).
    """
    v = _as_1d(values, "values")
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    if v.size < segments:
        raise ValueError(f"cannot split {v.size} samples into {segments} segments")
    return list(np.array_split(np.argsort(v, kind="stable"), segments))


def accuracy_by_segment(correct: Sequence[bool], segments: Sequence[np.ndarray]) -> np.ndarray:
    """Top-1 accuracy (%) within each segment: ``100 * mean(correct[idx])``.

    Args:
        correct: ``(N,)`` booleans, whether each sample's top-1 prediction is its label.
        segments: index arrays, as from :func:`entropy_segments`.
    """
    c = np.asarray(correct, dtype=bool)
    return np.array([100.0 * c[idx].mean() if len(idx) else math.nan for idx in segments])


def top_fraction(values: Sequence[float], fraction: float = 0.1) -> np.ndarray:
    """Indices of the ``ceil(fraction * N)`` largest ``values`` (the paper's "top 10 %")."""
    v = _as_1d(values, "values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, math.ceil(fraction * v.size - 1e-9))
    return np.argsort(-v, kind="stable")[:k]


def calinski_harabasz(features, labels) -> float:
    r"""Calinski-Harabasz index of labelled points (higher: better separated classes).

    .. math::
        CH = \frac{\sum_k n_k \lVert \mu_k - \mu \rVert^2 / (K - 1)}
                  {\sum_k \sum_{i \in k} \lVert x_i - \mu_k \rVert^2 / (N - K)}

    (Calinski & Harabasz, 1974); EA-KD reports it for students' features (Figures 6, B3).
    Returns 1.0 when every class collapses to a point, as scikit-learn does.

    Args:
        features: ``(N, D)`` points.
        labels: ``(N,)`` class of each point; needs ``2 <= K < N`` distinct classes.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, D) and labels (N,), got {x.shape} and {y.shape}")
    classes, inverse = np.unique(y, return_inverse=True)
    n, k = x.shape[0], classes.size
    if not 2 <= k < n:
        raise ValueError(f"the CH index needs 2 <= classes < samples, got {k} classes, {n} samples")
    mean = x.mean(0)
    between = within = 0.0
    for c in range(k):
        xc = x[inverse == c]
        mu = xc.mean(0)
        between += xc.shape[0] * float(((mu - mean) ** 2).sum())
        within += float(((xc - mu) ** 2).sum())
    if within == 0.0:
        return 1.0
    return between * (n - k) / (within * (k - 1))


def area_below(surface, level: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Area of the part of a 2-D loss surface below ``level`` (EA-KD's Area@1.6, Figure 7).

    The trapezoid rule over the grid on the indicator ``loss < level``: interior points stand
    for a ``dx * dy`` cell, edge points for half of one and corners for a quarter, so a surface
    entirely below the level gives exactly the grid's area. In squared direction units.
    """
    s = np.asarray(surface, dtype=np.float64)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if s.shape != (ys.size, xs.size):
        raise ValueError(f"surface {s.shape} does not match the grid ({ys.size}, {xs.size})")
    dx = (xs[-1] - xs[0]) / max(xs.size - 1, 1)
    dy = (ys[-1] - ys[0]) / max(ys.size - 1, 1)
    wx = np.ones(xs.size)
    wy = np.ones(ys.size)
    if xs.size > 1:
        wx[[0, -1]] = 0.5
    if ys.size > 1:
        wy[[0, -1]] = 0.5
    return float(dx * dy * (np.outer(wy, wx) * (s < level)).sum())
