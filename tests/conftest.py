"""Shared fixtures: every test starts with an empty Pyro param store and a fixed seed."""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
