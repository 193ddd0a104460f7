"""Reading runs: every engine's run through one reader, EA settings as recorded or resolved."""

from __future__ import annotations

import pytest

from eakd.analysis import analyze, find_runs, group_runs
from eakd.core import EASettings
from eakd.engines.run import RunDir, RunLogger


def _write(path, config, results=None, log_rows=()):
    run = RunDir(path)
    run.write_config(config)
    if results is not None:
        run.write_results(results)
    logger = RunLogger(run, step_key="step")
    for row in log_rows:
        logger.log(row)
    logger.close()
    return run


def _detection_run(path):
    config = {
        "name": "det",
        "output_dir": str(path.parent),
        "student": {"name": "fasterrcnn_mobilenet_v3_large_fpn"},
        "teacher": {"name": "fasterrcnn_resnet50_fpn", "checkpoint": None},
        "distill": {"loss": "kd"},
        "ea": {"enabled": True, "temperature": 2.0},
        "train": {"seed": 3},
    }
    ea = EASettings(enabled=True, temperature=2.0).to_dict()
    rows = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}]
    return _write(path, config, {"method": "kd", "ea": ea, "bbox_ap": 31.5}, rows)


def _llm_run(path):
    """An LLM run still training: a config and a checkpoint folder, no results yet."""
    config = {
        "name": "llm",
        "model": {"teacher": "gpt2-xl", "student": "gpt2"},
        "loss": {"divergence": "forward_kl"},
        "ea": {"enabled": True, "granularity": "sequence", "temperature": 1.0},
        "train": {"seed": 10},
    }
    run = _write(path, config)
    (run.checkpoints / "last").mkdir(parents=True)
    (run.checkpoints / "last" / "model.safetensors").write_bytes(b"")
    return run


def test_runs_of_every_engine_are_read_by_one_reader(tmp_path):
    _detection_run(tmp_path / "sweep" / "det")
    _llm_run(tmp_path / "sweep" / "llm")
    RunDir(tmp_path / "sweep" / "empty").write_config({"method": {"name": "kd"}})  # not started
    det, llm = find_runs([tmp_path / "sweep"])
    assert (det.engine, llm.engine) == ("detection", "llm")
    assert (det.method, llm.method) == ("kd", "n/a")  # the LLM run has no results yet
    assert det.ea_settings == EASettings(enabled=True, temperature=2.0)  # as recorded
    assert llm.ea_settings == EASettings(enabled=True, granularity="sequence", temperature=1.0)
    assert (det.seed, llm.seed) == (3, 10)
    assert det.metric("bbox_ap") == 31.5 and llm.metric("bbox_ap") is None
    assert det.train_log() == [{"step": 1.0, "loss": 2.5}, {"step": 2.0, "loss": 2.0}]
    assert llm.train_log() == [] and det.diagnostics() == []
    assert det.missing() == [
        "diagnostics.jsonl",
        "entropies/teacher.pt",
        "checkpoints/last.pt",
        "student entropies in entropies/",
    ]
    assert llm.missing()[0] == "results.json"


@pytest.mark.parametrize("recorded", [True, False])
def test_ea_settings_are_resolved_from_the_config_where_not_recorded(
    tmp_path, make_config, recorded
):
    # DKD under the official preset: T' = 3 whatever the config says, H_ub = 100 below 1000
    # classes. Runs written before results.json recorded the settings keep "ea": true.
    cfg = make_config(tmp_path, method={"name": "dkd"}, ea={"enabled": True, "preset": "official"})
    cfg["ea"]["temperature"] = 2.0
    cfg["train"]["amp"] = "none"  # a run written before train.amp was renamed still reads
    resolved = EASettings(enabled=True, temperature=3.0, max_entropy=100.0, preset="official")
    results = {"ea": resolved.to_dict() if recorded else True, "best_top1": 50.0}
    (run,) = find_runs([_write(tmp_path / "run", cfg, results).root])
    assert run.ea_settings == resolved
    assert run.ea and run.base_label == "EA-DKD"


def test_methods_are_ordered_as_the_tables_list_them(tmp_path):
    ea = EASettings().to_dict()
    for method in ("fcfd", "reviewkd", "kd", "vanilla", "dkd"):
        cfg = {"method": {"name": method}, "train": {"seed": 0}}
        _write(tmp_path / method / "seed0", cfg, {"ea": ea})
    labels = [g.label for g in group_runs(find_runs([tmp_path]))]
    assert labels == ["CE", "KD", "DKD", "REVIEWKD", "FCFD"]


def test_the_report_lists_other_engines_with_what_they_lack(tmp_path, sweep):
    pytest.importorskip("matplotlib")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "kd").symlink_to(sweep / "kd+method.loss.temperature=2", target_is_directory=True)
    _detection_run(demo / "det")
    _llm_run(demo / "llm")
    report = analyze([demo], tmp_path / "out", ["time"])
    text = report.report.read_text()
    assert report.figures[0].path is not None and "| KD | 1 |" in text
    assert "Runs of other engines, left out of the figures" in text
    assert (
        "| ../demo/det | detection | kd | 3 | on | 2 | 0 | diagnostics.jsonl, "
        "entropies/teacher.pt, checkpoints/last.pt, student entropies in entropies/ |" in text
    )
    assert "| ../demo/llm | llm | n/a | 10 | on | 0 | 0 | results.json, " in text
    # without a classification run every figure is skipped, with the reason
    only = analyze([demo / "det", demo / "llm"], tmp_path / "other")
    assert all(f.path is None for f in only.figures)
    assert "Skipped: the figures read what classification runs record; these runs are " in (
        only.report.read_text()
    )
    assert "detection, llm" in only.figures[0].skipped
