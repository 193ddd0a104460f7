"""The LLM engine tests' tiny models and data (a BPE tokenizer, random Llama teacher and
student, Dolly-format examples), for the LLM kill-and-resume test here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_llm_fixtures", Path(__file__).resolve().parents[1] / "engines" / "llm" / "conftest.py"
)
_llm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_llm)

tiny_models = _llm.tiny_models
dolly_file = _llm.dolly_file
