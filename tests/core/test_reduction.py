"""The single reduction point (eakd.core.reduce)."""

from __future__ import annotations

import pytest
import torch

import eakd


def test_reduce_mean_sum_none_mask_num_items():
    per = torch.tensor([1.0, 2.0, 3.0, float("nan")])
    w = torch.tensor([1.0, 0.5, 2.0, 1.0])
    mask = torch.tensor([True, True, True, False])
    # the NaN at a masked position never leaks in
    assert eakd.reduce(per, w, mask).item() == pytest.approx((1 + 1 + 6) / 3)
    assert eakd.reduce(per, w, mask, reduction="sum").item() == pytest.approx(8.0)
    assert eakd.reduce(per, w, mask, num_items=8).item() == pytest.approx(1.0)
    assert eakd.reduce(per, w, mask, num_items=torch.tensor(16)).item() == pytest.approx(0.5)
    torch.testing.assert_close(
        eakd.reduce(per, w, mask, reduction="none"), torch.tensor([1, 1, 6, 0.0])
    )
    assert eakd.reduce(per, mask=torch.zeros(4, dtype=torch.bool)).item() == 0.0
