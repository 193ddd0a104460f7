import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many small ops, where a second OpenMP thread only adds synchronisation
    (and stalls badly on a busy machine); the setting is restored after each test."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
