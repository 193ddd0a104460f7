"""Every registered loss passes the same contract (registering a loss enrolls it here)."""

from __future__ import annotations

import pytest
import torch

import eakd
from eakd import EntropyAdaptive, build_loss, list_losses
from eakd.losses import LOSSES

# Feature losses (input_kind "features" / "models") take features or models, not logits: they
# have their own tests (tests/losses/feature).
ALL = [n for n in list_losses() if getattr(LOSSES.get(n), "input_kind", "logits") == "logits"]


def _inputs(name, shape=(6, 11), dtype=torch.float32, scale=2.0):
    s = (torch.randn(*shape) * scale).to(dtype).requires_grad_(True)
    t = (torch.randn(*shape) * scale).to(dtype).requires_grad_(True)
    y = torch.randint(0, shape[-1], shape[:-1])
    return s, t, y


def _per_item(name):
    return getattr(build_loss(name), "per_item", True)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(6, 11), (2, 3, 7)])
def test_per_item_shape_and_reductions(name, shape):
    loss = build_loss(name)
    s, t, y = _inputs(name, shape)
    if not loss.per_item:
        with pytest.raises(ValueError, match="no per-item form"):
            loss(s, t, y, reduction="none")
        assert loss(s, t, y).dim() == 0
        return
    per = loss(s, t, y, reduction="none")
    assert per.shape == shape[:-1]
    torch.testing.assert_close(loss(s, t, y, reduction="sum"), per.sum())
    torch.testing.assert_close(loss(s, t, y), per.mean())
    ones = torch.ones(shape[:-1])
    torch.testing.assert_close(loss(s, t, y, weight=ones), loss(s, t, y))
    w = torch.rand(shape[:-1])
    torch.testing.assert_close(loss(s, t, y, weight=w), (per * w).mean())


@pytest.mark.parametrize("name", ALL)
def test_no_gradient_reaches_teacher(name):
    loss = build_loss(name)
    s, t, y = _inputs(name)
    loss(s, t, y).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dtype_and_device_follow_inputs(name, dtype):
    loss = build_loss(name)
    s, t, y = _inputs(name, dtype=dtype)
    if loss.per_item:
        per = loss(s, t, y, reduction="none")
        assert per.dtype == dtype and per.device == s.device
    out = loss(s, t, y)
    out.float().backward()
    assert s.grad.dtype == dtype


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_for_extreme_logits(name, dtype):
    loss = build_loss(name)
    g = torch.Generator().manual_seed(1)
    s = (torch.randint(0, 2, (8, 10), generator=g) * 2e4 - 1e4).to(dtype).requires_grad_(True)
    t = (torch.randint(0, 2, (8, 10), generator=g) * 2e4 - 1e4).to(dtype)
    y = torch.randint(0, 10, (8,), generator=g)
    out = loss(s, t, y)
    out.float().backward()
    assert torch.isfinite(out.float())
    assert torch.isfinite(s.grad.float()).all()


@pytest.mark.parametrize("name", ALL)
def test_all_masked_gives_zero(name):
    loss = build_loss(name)
    s, t, y = _inputs(name)
    mask = torch.zeros(6, dtype=torch.bool)
    out = loss(s, t, y, mask=mask)
    assert out.item() == 0.0
    assert not torch.isnan(out)


@pytest.mark.parametrize("name", [n for n in ALL if _per_item(n)])
def test_entropy_adaptive_wraps_every_per_item_loss(name):
    loss = build_loss(name)
    s, t, y = _inputs(name)
    ea = EntropyAdaptive(loss, temperature=3.0)
    out = ea(s, t, y)
    w = eakd.ea_weights(s, t, temperature=3.0)
    expected = (loss(s, t, y, reduction="none") * w).mean()
    torch.testing.assert_close(out, expected)
    none = EntropyAdaptive(loss, kind="none")
    torch.testing.assert_close(none(s, t, y), loss(s, t, y))


@pytest.mark.parametrize("name", [n for n in ALL if not _per_item(n)])
def test_entropy_adaptive_refuses_batch_level_terms(name):
    with pytest.raises(ValueError, match="batch-level term with no per-item form"):
        EntropyAdaptive(build_loss(name))
