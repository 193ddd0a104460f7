"""Numbers in scientific notation are floats in config files, overrides and a run's config.yaml
(the YAML 1.2 float rule; YAML 1.1 would read ``5e-4`` as a string)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from eakd.cli import main
from eakd.config import (
    ConfigError,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    yaml_dumps,
    yaml_loads,
)

FLOATS = {
    "5e-4": 5e-4,
    "1e-4": 1e-4,
    "1.0e6": 1.0e6,
    "-2.5E+3": -2500.0,
    "+1.5e3": 1500.0,
    "1E6": 1e6,
    ".5": 0.5,
    "-.5": -0.5,
    "1.": 1.0,
    "1.e2": 100.0,
    "0.1": 0.1,
    "3.0": 3.0,
    "1_000.5": 1000.5,  # YAML 1.1 forms keep reading as before
    "1:30.5": 90.5,
    ".inf": math.inf,
    "-.inf": -math.inf,
    "+.INF": math.inf,
}
INTS = {"10": 10, "-3": -3, "0": 0, "1_000": 1000, "0x1F": 31}
ROOT = Path(__file__).resolve().parents[2]
STRINGS = ["1e", "e5", "1.2.3", "abc", ".", "5e-4x", "1e-4.5", "inf", "nan"]


@pytest.mark.parametrize("text", sorted(FLOATS))
def test_floats(text):
    value = yaml_loads(text)
    assert type(value) is float and value == FLOATS[text]


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN"])
def test_nan(text):
    value = yaml_loads(text)
    assert type(value) is float and math.isnan(value)


@pytest.mark.parametrize("text", sorted(INTS))
def test_ints_stay_ints(text):
    value = yaml_loads(text)
    assert type(value) is int and value == INTS[text]


@pytest.mark.parametrize("text", STRINGS)
def test_other_scalars_stay_strings(text):
    assert yaml_loads(text) == text


def test_quoted_numbers_stay_strings():
    assert yaml_loads("a: '5e-4'\nb: \"1.0e6\"") == {"a": "5e-4", "b": "1.0e6"}


def test_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "optim:\n  lr: 1e-4\n  weight_decay: 5e-4\n  milestones: [150, 180]\n"
        "train:\n  epochs: 240\n  scale: 1.0e6\n  eps: -2.5E+3\n  name: run1\n"
    )
    data = load_yaml(path)
    assert data == {
        "optim": {"lr": 1e-4, "weight_decay": 5e-4, "milestones": [150, 180]},
        "train": {"epochs": 240, "scale": 1e6, "eps": -2500.0, "name": "run1"},
    }
    assert type(data["train"]["epochs"]) is int and type(data["optim"]["lr"]) is float


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("optim.weight_decay=5e-4", ["optim", "weight_decay"], 5e-4),
        ("train.lr=1e-4", ["train", "lr"], 1e-4),
        ("train.lr=1.0e6", ["train", "lr"], 1e6),
        ("train.lr=-2.5E+3", ["train", "lr"], -2500.0),
        ("train.lr=.5", ["train", "lr"], 0.5),
        ("train.epochs=3", ["train", "epochs"], 3),
        ("x.values=[1e-3, 2, .5]", ["x", "values"], [1e-3, 2, 0.5]),
    ],
)
def test_overrides(text, keys, value):
    got_keys, got = parse_override(text)
    assert got_keys == keys and got == value and type(got) is type(value)


def test_dump_then_load_round_trips():
    """Strings that read as numbers are quoted on the way out; floats come back exact."""
    data = {
        "s": ["5e-4", "1.0e6", ".5", "1.", "10", "abc"],
        "f": [5e-4, 1e-10, 1e6, -2500.0, 0.1, math.inf],
        "i": [10, -3],
        "nested": {"lr": 1e-4},
    }
    text = yaml_dumps(data)
    assert "'5e-4'" in text and "'1.0e6'" in text
    assert yaml_loads(text) == data
    assert list(yaml_loads(text)) == list(data)  # key order kept


def test_run_config_round_trips(tmp_path):
    from eakd.engines.run import RunDir

    run = RunDir(tmp_path / "run")
    data = {"optim": {"lr": 1e-4, "weight_decay": 5e-4}, "name": "1e3", "tag": "5e-4"}
    run.write_config(data)
    assert run.read_config() == data


def test_bad_yaml_is_still_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(path)


def test_classification_config_binds_scientific_notation():
    from eakd.engines.classification.config import ExperimentConfig

    config = sorted((ROOT / "configs" / "cifar100").rglob("*.yaml"))[0]
    overrides = ["optim.weight_decay=5e-4", "optim.lr=5e-2"]
    cfg = from_dict(ExperimentConfig, load_config(config, overrides))
    assert cfg.optim.lr == 0.05 and cfg.optim.weight_decay == 5e-4


def _help_example(argv: list[str], capsys) -> list[str]:
    """The ``key=value`` overrides of the ``e.g.`` in a command's ``--help``."""
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    example = re.search(r"dotted overrides, e\.g\. ((?:\S+=\S+ ?)+)", text)
    assert example, text
    return example.group(1).split()


def test_llm_train_help_example_binds(capsys):
    """``eakd llm train --help`` shows ``train.lr=1e-4``: it binds, with the weight decay too."""
    from eakd.engines.llm.config import bind_config

    overrides = _help_example(["llm", "train"], capsys)
    assert "train.lr=1e-4" in overrides, overrides
    config = sorted((ROOT / "configs" / "llm").rglob("*.yaml"))[0]
    cfg = bind_config(load_config(config, [*overrides, "train.weight_decay=5e-4"]))
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 5e-4
