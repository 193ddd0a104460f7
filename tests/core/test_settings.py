"""EASettings: validation, the keyword form, and the official preset's per-method values."""

from __future__ import annotations

import math

import pytest
import torch

from eakd import EntropyAdaptive, build_loss
from eakd.config import ConfigError, from_dict
from eakd.core import EASettings, segment_means, sequence_means


def test_defaults_are_the_papers():
    ea = EASettings()
    assert (ea.enabled, ea.temperature, ea.max_entropy, ea.kind) == (False, 3.0, None, "ea")
    assert (ea.weight_logits, ea.normalize, ea.granularity, ea.preset) == (
        "raw",
        False,
        "item",
        "paper",
    )
    assert ea.max_entropy_for(100) == pytest.approx(math.log(100))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "ea.temperature must be > 0"),
        ({"temperature": "3"}, "ea.temperature must be > 0"),
        ({"max_entropy": -1.0}, "max_entropy must be > 0"),
        ({"kind": "entropy"}, r"ea.kind must be one of \['ea', 'base'"),
        ({"weight_logits": "zscore"}, "ea.weight_logits must be one of"),
        ({"granularity": "token"}, "'token' is now 'item'"),
        ({"granularity": "batch"}, "ea.granularity must be one of"),
        ({"preset": "released"}, "ea.preset must be one of"),
    ],
)
def test_bad_values_name_the_key(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        EASettings(**kwargs)


def test_config_binding_builds_and_checks_it():
    @__import__("dataclasses").dataclass
    class Cfg:
        ea: EASettings = __import__("dataclasses").field(default_factory=EASettings)

    cfg = from_dict(Cfg, {"ea": {"enabled": True, "temperature": 2, "max_entropy": 100}})
    assert cfg.ea == EASettings(enabled=True, temperature=2.0, max_entropy=100.0)
    with pytest.raises(ConfigError, match=r"unknown key 'temprature' in config.ea"):
        from_dict(Cfg, {"ea": {"temprature": 2.0}})
    with pytest.raises(ConfigError, match="ea.kind must be one of"):
        from_dict(Cfg, {"ea": {"kind": "nope"}})


def test_keyword_options_apply_over_the_settings():
    base = EASettings(enabled=True, temperature=2.0, kind="base")
    assert EASettings.from_options(base, kind="ea") == base.replace(kind="ea")
    assert EASettings.from_options(None) == EASettings(enabled=True)
    with pytest.raises(TypeError, match="unknown EA option"):
        EASettings.from_options(base, tempreature=1.0)
    wrapper = EntropyAdaptive(build_loss("kd"), base, temperature=4.0)
    assert wrapper.settings == base.replace(temperature=4.0)
    assert (wrapper.temperature, wrapper.kind) == (4.0, "base")


@pytest.mark.parametrize(
    ("method", "classes", "standardized", "expected"),
    [
        # the released code's deviations (H_ub, T', weight logits)
        ("kd", 100, False, (100.0, 2.5, "raw")),
        ("kd", 200, False, (100.0, 2.5, "raw")),
        ("kd", 1000, False, (math.log(1000), 2.5, "raw")),
        ("dkd", 100, False, (100.0, 3.0, "raw")),
        ("dkd", 1000, True, (math.log(1000), 3.0, "standardized")),
        ("mld", 100, True, (math.log(100), 3.0, "raw")),
        ("reviewkd", 1000, False, (math.log(100), 2.5, "raw")),
        ("ctkd", 100, False, (None, 2.5, "raw")),
    ],
)
def test_official_preset_per_method(method, classes, standardized, expected):
    ea = EASettings(enabled=True, temperature=2.5, preset="official")
    resolved = ea.resolve(method, classes, standardized)
    assert (resolved.max_entropy, resolved.temperature, resolved.weight_logits) == expected
    assert resolved.resolve(method, classes, standardized) == resolved  # idempotent
    paper = ea.replace(preset="paper")
    assert paper.resolve(method, classes, standardized) == paper


def test_sequence_and_segment_means_agree():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    per_seq = sequence_means(h, mask)
    expected = torch.stack([h[b][mask[b]].mean() for b in range(3)])
    torch.testing.assert_close(per_seq[:, 0], expected)
    rows = mask.nonzero()
    flat = segment_means(h[mask], rows[:, 0])
    torch.testing.assert_close(flat, per_seq[mask])
