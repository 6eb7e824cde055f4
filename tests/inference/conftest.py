"""The inference tests hold parameters in modules, as pyro-vae does."""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _module_local_params():
    with pyro.settings.context(module_local_params=True):
        yield
