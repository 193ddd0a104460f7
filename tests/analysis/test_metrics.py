"""The numbers behind the figures, against direct computations from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eakd.analysis.metrics import (
    accuracy_by_segment,
    area_below,
    calinski_harabasz,
    entropy_segments,
    quantile_loss_shares,
    quantile_loss_shares_exact,
    quantile_share_uncertainty,
    top_fraction,
)


def direct_shares(values, losses, parts=4):
    """Rank the samples, give sample i the rank interval [i, i + 1), split at k N / parts."""
    order = np.argsort(values, kind="stable")
    loss = np.asarray(losses, dtype=float)[order]
    n = len(loss)
    sums = np.zeros(parts)
    for i, value in enumerate(loss):
        for k in range(parts):
            lo, hi = k * n / parts, (k + 1) * n / parts
            sums[k] += value * max(0.0, min(i + 1, hi) - max(i, lo))
    return sums / sums.sum()


def histogram(values, losses, bins, upper):
    idx = np.clip((np.asarray(values) / upper * bins).astype(int), 0, bins - 1)
    return np.bincount(idx, minlength=bins), np.bincount(idx, weights=losses, minlength=bins)


def test_quartile_shares_of_a_hand_example():
    # 8 samples, one per bin: quartiles are bins {0,1}, {2,3}, {4,5}, {6,7}
    counts = [1, 1, 0, 1, 1, 1, 1, 1, 1]
    losses = [1.0, 1.0, 0.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    shares = quantile_loss_shares(counts, losses)
    np.testing.assert_allclose(shares, np.array([2, 4, 6, 8]) / 20)
    assert quantile_share_uncertainty(counts, losses) == 0.0


def test_straddling_bin_is_split_by_count():
    # bins of 2, 4 and 2 samples; quartile ranks [0,2), [2,4), [4,6), [6,8)
    shares = quantile_loss_shares([2, 4, 2], [2.0, 8.0, 10.0])
    np.testing.assert_allclose(shares, np.array([2.0, 4.0, 4.0, 10.0]) / 20)
    assert shares.sum() == pytest.approx(1.0)
    # the middle bin straddles the Q2/Q3 boundary: its 8 of 20 may be split otherwise
    assert quantile_share_uncertainty([2, 4, 2], [2.0, 8.0, 10.0]) == pytest.approx(0.4)
    # bins that end exactly on boundaries are never split
    assert quantile_share_uncertainty([2, 0, 2, 2, 2], [1.0, 0.0, 2.0, 3.0, 4.0]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_histogram_shares_stay_within_the_bound_of_the_exact_ones(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    h = rng.uniform(0, math.log(10), n)
    loss = rng.gamma(2.0, 1.0, n) * (1 + h)  # loss grows with entropy, as it tends to
    exact = direct_shares(h, loss)
    np.testing.assert_allclose(quantile_loss_shares_exact(h, loss), exact, atol=1e-12)
    counts, sums = histogram(h, loss, 16, math.log(10))
    est = quantile_loss_shares(counts, sums)
    assert est.sum() == pytest.approx(1.0)
    bound = quantile_share_uncertainty(counts, sums)
    assert 0 < bound < 1
    assert np.abs(est - exact).max() <= bound + 1e-12
    # one sample per bin (fine bins over sorted distinct values): exact
    fine_counts, fine_sums = np.ones(n), loss[np.argsort(h)]
    np.testing.assert_allclose(quantile_loss_shares(fine_counts, fine_sums), exact, atol=1e-12)


def test_exact_shares_split_a_sample_when_n_is_not_divisible():
    # 6 samples, quartiles of 1.5 ranks: sample 1 (loss 2) is half in Q1, half in Q2
    shares = quantile_loss_shares_exact([0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(shares * 21, [2.0, 4.0, 6.5, 8.5])


def test_shares_reject_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        quantile_loss_shares([1, 2], [1.0])
    with pytest.raises(ValueError, match=">= 0"):
        quantile_loss_shares([-1, 2], [1.0, 1.0])
    assert np.isnan(quantile_loss_shares([1, 1], [0.0, 0.0])).all()


def test_segment_accuracy_matches_a_direct_count():
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 2.3, 103)
    correct = rng.random(103) < 1 - h / 3  # high entropy: more mistakes
    segs = entropy_segments(h, 5)
    assert sorted(np.concatenate(segs).tolist()) == list(range(103))
    assert [len(s) for s in segs] == [21, 21, 21, 20, 20]
    ranked = np.argsort(h)
    start = 0
    for s, acc in zip(segs, accuracy_by_segment(correct, segs), strict=True):
        members = ranked[start : start + len(s)]
        start += len(s)
        assert set(members) == set(s)
        assert h[s].max() <= h[ranked[start:]].min(initial=np.inf)
        hits = sum(bool(correct[i]) for i in members)
        assert acc == pytest.approx(100.0 * hits / len(members))
    with pytest.raises(ValueError, match="cannot split 3 samples"):
        entropy_segments([0.1, 0.2, 0.3], 5)


def test_top_fraction():
    v = np.array([0.5, 3.0, 1.0, 2.0, 0.1, 4.0, 0.2, 0.3, 0.4, 0.6, 0.7])
    assert top_fraction(v, 0.1).tolist() == [5, 1]  # ceil(1.1) = 2 samples
    assert top_fraction(v[:10], 0.1).tolist() == [5]
    with pytest.raises(ValueError, match="fraction"):
        top_fraction(v, 0)


def test_calinski_harabasz_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.make_blobs(300, n_features=5, centers=4, cluster_std=1.5, random_state=0)
    ours = calinski_harabasz(x, y)
    assert ours == pytest.approx(sklearn_metrics.calinski_harabasz_score(x, y), rel=1e-10)
    # tighter clusters separate better
    x2, y2 = datasets.make_blobs(300, n_features=5, centers=4, cluster_std=0.5, random_state=0)
    assert calinski_harabasz(x2, y2) > ours
    # two points per class on a line: B = 2 * (1 + 1) = 4 (k - 1 = 1), W = 4 * 0.25 = 1 (n - k = 2)
    pts = np.array([[-1.5], [-0.5], [0.5], [1.5]])
    assert calinski_harabasz(pts, [0, 0, 1, 1]) == pytest.approx(4 / 1 / (1 / 2))
    with pytest.raises(ValueError, match="2 <= classes"):
        calinski_harabasz(pts, [0, 0, 0, 0])


def test_area_below_is_the_trapezoid_rule_on_the_indicator():
    xs = np.linspace(-1, 1, 5)  # spacing 0.5
    surface = np.add.outer(xs**2, xs**2)  # x^2 + y^2
    # points with x^2 + y^2 < 0.6: the centre and its 4 neighbours at 0.25, 4 corners at 0.5,
    # all interior points of the 5 x 5 grid, each standing for a full 0.5 x 0.5 cell
    assert area_below(surface, 0.6, xs, xs) == pytest.approx(9 * 0.25)
    assert area_below(surface, -1.0, xs, xs) == 0.0
    # a surface entirely below the level covers exactly the grid's [-1, 1]^2 = 4
    assert area_below(surface, 10.0, xs, xs) == pytest.approx(4.0)
    # a single edge point: half a cell; a single corner: a quarter
    one = np.full((5, 5), 9.0)
    one[0, 2] = 0.0
    assert area_below(one, 1.0, xs, xs) == pytest.approx(0.5 * 0.25)
    one[0, 2], one[4, 4] = 9.0, 0.0
    assert area_below(one, 1.0, xs, xs) == pytest.approx(0.25 * 0.25)
    with pytest.raises(ValueError, match="does not match"):
        area_below(surface[:, :3], 1.0, xs, xs)
