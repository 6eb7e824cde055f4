"""The inference tests hold parameters in modules, as pyro-vae does."""

from collections.abc import Iterator

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _module_local_params():
    with pyro.settings.context(module_local_params=True):
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for tests of many tiny tensor ops (``pytestmark``): a second thread on
    a busy core only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
