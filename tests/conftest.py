"""Shared fixtures: every test starts with an empty Pyro param store and a fixed seed; under
pytest-xdist (``make test`` runs ``-n auto``) each worker's torch gets its share of the cores."""

import os

import pyro
import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """W workers on C cores: ⌊C/W⌋ torch threads each (at least 1), so that W processes do not
    each start C threads on the same C cores."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
