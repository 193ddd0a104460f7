"""Loss landscapes: the origin is the model's loss, directions are filter-normalised, the
model comes back unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eakd.analysis.landscape import filter_normalized_direction, loss_surface, mean_loss


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x))).mean(-1)
        return self.fc(f), {"pooled_feat": f}


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = SmallNet()
    model.train()
    model(torch.randn(64, 1, 12))  # BN running statistics away from their initial values
    x = torch.randn(50, 1, 12)
    y = torch.randint(0, 4, (50,))
    return model, [(x[:32], y[:32]), (x[32:], y[32:])], (x, y)


def test_surface_at_the_origin_is_the_models_loss(setup):
    model, batches, (x, y) = setup
    model.eval()
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x)[0], y))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dirs = (filter_normalized_direction(model), filter_normalized_direction(model))
    xs = np.linspace(-1, 1, 3)
    surface = loss_surface(model, batches, dirs, xs, [-0.5, 0.0])
    assert surface.shape == (2, 3)
    assert surface[1, 1] == pytest.approx(expected, rel=1e-6)
    assert surface[0, 1] != pytest.approx(expected)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # weights and BN buffers
    assert mean_loss(model.eval(), batches) == pytest.approx(expected, rel=1e-6)


def test_surface_off_the_origin_is_the_perturbed_models_loss(setup):
    model, batches, (x, y) = setup
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    d1, d2 = filter_normalized_direction(model, g1), filter_normalized_direction(model, g2)
    surface = loss_surface(model, batches, (d1, d2), [0.0, 0.5], [-0.25, 0.0])
    moved = SmallNet()
    moved.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, u, v in zip(moved.parameters(), d1, d2, strict=True):
            p.add_(0.5 * u - 0.25 * v)
    moved.eval()
    with torch.no_grad():
        assert surface[0, 1] == pytest.approx(float(F.cross_entropy(moved(x)[0], y)), rel=1e-5)


def test_directions_are_filter_normalised(setup):
    model, _, _ = setup
    d = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    for p, u in zip(model.parameters(), d, strict=True):
        assert u.shape == p.shape
        if p.dim() <= 1:
            assert torch.count_nonzero(u) == 0  # biases and BN parameters stay fixed
        else:
            torch.testing.assert_close(u.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
    again = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    for u, v in zip(d, again, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_mismatched_directions_are_refused(setup):
    model, batches, _ = setup
    with pytest.raises(ValueError, match="filter_normalized_direction"):
        loss_surface(model, batches, ([torch.zeros(1)], [torch.zeros(1)]), [0.0])
