import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every feature-loss test runs on one thread (``one_thread`` in tests/conftest.py)."""
