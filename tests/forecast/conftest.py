import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small recurrent models run fastest on one thread, and CI's two cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
