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
        # methods the released code does not cover: the paper's values, written out
        ("ctkd", 100, False, (math.log(100), 2.5, "raw")),
    ],
)
def test_official_preset_per_method(method, classes, standardized, expected):
    ea = EASettings(enabled=True, temperature=2.5, preset="official")
    resolved = ea.resolve(method, classes, standardized)
    assert (resolved.temperature, resolved.weight_logits) == expected[1:]
    assert resolved.max_entropy == pytest.approx(expected[0])
    assert resolved.resolve(method, classes, standardized) == resolved  # idempotent
    paper = ea.replace(preset="paper").resolve(method, classes, standardized)
    assert paper == ea.replace(preset="paper", max_entropy=math.log(classes))


@pytest.mark.parametrize("kind", ["base", "interact", "student", "inverse_teacher", "none"])
def test_official_preset_leaves_the_ablation_kinds_alone(kind):
    """The released code has only the EA weight: the ablations keep the paper's H_ub and T'."""
    ea = EASettings(enabled=True, kind=kind, temperature=2.0, preset="official")
    for method in ("kd", "dkd", "mld"):
        resolved = ea.resolve(method, 100)
        assert resolved.max_entropy == pytest.approx(math.log(100))
        assert resolved.temperature == 2.0


def test_resolve_writes_the_class_count_bound_out():
    assert EASettings().resolve(None, 50).max_entropy == pytest.approx(math.log(50))
    assert EASettings(max_entropy=7.0).resolve("kd", 50).max_entropy == 7.0
    assert EASettings().resolve("kd").max_entropy is None  # no class count: left to the loss


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
