"""Shared fixtures for the sampling tests.

Tests run under pytest-xdist with two workers on a shared 2-core machine; with
torch's default of one intra-op thread per core, a busy neighbour makes every
small op wait for a descheduled thread (10x slower). One thread per test keeps
the suite fast and the numbers unchanged; it is restored afterwards.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20261126)
