"""Fixtures: the tiny models and tokenizer of tiny_lms.py."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    pytest.importorskip("transformers")
    from tiny_lms import make_tokenizer

    return make_tokenizer()


@pytest.fixture
def student():
    pytest.importorskip("transformers")
    from tiny_lms import make_lm

    return make_lm(1)


@pytest.fixture
def teacher():
    """Wider and deeper than the student: only the vocabulary is shared."""
    pytest.importorskip("transformers")
    from tiny_lms import make_lm

    return make_lm(2, n_layer=3, n_embd=48)
