import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Run these small-tensor tests on one intra-op thread.

    With two threads on a busy 2-core machine the OpenMP workers spin-wait and the
    suite gets an order of magnitude slower; one thread is as fast when the machine
    is idle. The previous setting is restored for the rest of the session.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
