"""The ablation sweeps (paper Tables 1, 8 and 9) and their tables."""

from __future__ import annotations

import pytest

from eakd.analysis import ABLATION_KINDS, run_ablation
from eakd.cli.main import main

ACC = {
    "none": 73.0,
    "base": 75.0,
    "student": 74.5,
    "interact": 74.0,
    "ea": 75.5,
    "inverse_teacher": 72.5,
    "inverse_student": 69.0,
}


def fake_train(calls):
    def train(cfg, resume=False, quiet=True):
        calls.append((cfg.ea.kind, cfg.ea.temperature, cfg.train.seed, cfg.ea.enabled))
        acc = ACC[cfg.ea.kind] + {2.0: -1.0, 3.0: 0.0, 4.0: -0.5}[cfg.ea.temperature]
        acc += 0.2 * cfg.train.seed
        return {"best_top1": acc, "last_top1": acc - 0.1}

    return train


def test_ablation_tables_follow_the_papers_layout(tmp_path, make_config):
    calls: list = []
    base = make_config(tmp_path, "abl", method={"name": "kd"}, ea={"enabled": False})
    res = run_ablation(base, [0, 1], train_fn=fake_train(calls))
    # EA is switched on for every run; T' = 3 (the config's) is not trained twice
    assert all(enabled for *_, enabled in calls)
    assert len(calls) == 2 * (len(ABLATION_KINDS) + 2)
    assert sorted({(k, t) for k, t, _, _ in calls if k == "ea"}) == [
        ("ea", 2.0),
        ("ea", 3.0),
        ("ea", 4.0),
    ]
    assert res.kinds["base"] == [75.0, 75.2]
    assert res.temperatures[3.0] == res.kinds["ea"] == [75.5, 75.7]
    assert res.temperatures[2.0] == [74.5, 74.7]
    text = res.markdown()
    # Table 1: mean +/- std over the two seeds, and the difference to unweighted KD (73.1)
    assert "| L_KD (w = 1) | 73.10 +/- 0.14 | |" in text
    assert "| w * L_KD | 75.10 +/- 0.14 (+2.00) | 74.60 +/- 0.14 (+1.50) |" in text
    assert "| (H_ub - w) * L_KD | 72.60 +/- 0.14 (-0.50) | 69.10 +/- 0.14 (-4.00) |" in text
    # Table 9 and Table 8
    assert (
        "| KD | 73.10 +/- 0.14 | 75.10 +/- 0.14 (+2.00) | 74.10 +/- 0.14 (+1.00) | "
        "75.60 +/- 0.14 (+2.50) |" in text
    )
    assert "| teacher | student | T' = 2 | T' = 3 | T' = 4 |" in text
    assert (
        "| tiny_models:Tiny1d | tiny_models:Tiny1d | 74.60 +/- 0.14 | 75.60 +/- 0.14 | "
        "75.10 +/- 0.14 |" in text
    )
    assert (tmp_path / "runs/abl-ablation/ablation.md").read_text() == text


def test_ablation_refuses_what_it_cannot_run(tmp_path, make_config):
    with pytest.raises(ValueError, match="reweight a distillation loss"):
        run_ablation(make_config(tmp_path, method={"name": "vanilla"}), [0])
    with pytest.raises(ValueError, match="unknown weight kind"):
        run_ablation(make_config(tmp_path), [0], kinds=["ea", "entropy"])
    calls: list = []
    official = make_config(tmp_path, method={"name": "dkd"}, ea={"preset": "official"})
    res = run_ablation(official, [0], kinds=["none"], train_fn=fake_train(calls))
    assert res.temperatures == {} and "fixes T' = 3" in res.markdown()


def test_ablate_command_trains_and_prints_the_tables(tmp_path, make_config, teacher_ckpt, capsys):
    import yaml

    cfg = make_config(
        tmp_path, "abl", teacher={"checkpoint": str(teacher_ckpt)}, train={"epochs": 1}
    )
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["ablate", str(path), "--seeds", "1", "--kinds", "none,ea", "--temperatures", "2,3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "## Table 9: reweighting factors" in out and "| KD | " in out
    assert "| T' = 2 | T' = 3 |" in out
    runs = tmp_path / "runs/abl-ablation"
    assert (runs / "weights/ea.kind=ea/seed0/results.json").is_file()
    assert (runs / "temperature/ea.temperature=2/seed0/results.json").is_file()
    assert not (runs / "temperature/ea.temperature=3").exists()  # taken from the kind sweep
    assert main(["ablate", str(path), "--kinds", "", "--temperatures", ""]) == 2
    assert "nothing to run" in capsys.readouterr().err
