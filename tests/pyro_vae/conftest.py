"""The pyro_vae tests hold parameters in modules, as the training loop does; the tests of Pyro's
default (global param store) mode live in test_vae_pyro_native.py."""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _module_local_params():
    with pyro.settings.context(module_local_params=True):
        yield
