"""Network sizes checked before anything is allocated: depth, memory, int64 overflow."""

import pytest
from torch import nn

from pyro_vae import networks
from pyro_vae.prepared import prepare
from pyro_vae.registry import SpecError
from pyro_vae.spec import load_spec


class Pair(nn.Module):
    """Two parts sharing one layer: 10·5 + 5 = 55 parameters in ``a``, 3·2 + 2 = 8 more in
    ``b``, whose copy of ``a``'s layer is counted once."""

    def __init__(self) -> None:
        super().__init__()
        shared = nn.Linear(10, 5)
        self.a = shared
        self.b = nn.Sequential(shared, nn.Linear(3, 2))


def test_the_training_state_is_16_bytes_a_parameter(monkeypatch):
    need = (55 + 8) * networks.BYTES_PER_PARAMETER
    monkeypatch.setattr(networks, "available_memory", lambda: need)
    networks.check_fits(Pair, "sizes")  # exactly fits
    monkeypatch.setattr(networks, "available_memory", lambda: need - 1)
    with pytest.raises(SpecError, match=r"^model: 63 parameters \(a 55, b 8\) need .* sizes$"):
        networks.check_fits(Pair, "sizes")


def test_the_check_builds_nothing_real(monkeypatch):
    """10¹³ parameters are counted on the meta device in no time and no memory."""
    monkeypatch.setattr(networks, "available_memory", lambda: 2**40)
    with pytest.raises(SpecError, match="1e[+]13 parameters"):
        networks.check_fits(lambda: nn.Linear(10**6, 10**7), "sizes")


@pytest.mark.parametrize(
    "override", ["encoder.hidden=[4611686018427387904]", "latent_dim=4611686018427387904"]
)
def test_sizes_that_overflow_int64_are_refused(override):
    with pytest.raises(SpecError, match="^model: too large to build .*(?i:overflow)"):
        prepare(load_spec(None, [override, "data.limit=200"]))


def test_depth_is_bounded():
    with pytest.raises(SpecError, match="1001 layers; at most 1000"):
        load_spec(None, [f"decoder.hidden=[{', '.join(['2'] * 1001)}]"])
    load_spec(None, [f"decoder.hidden=[{', '.join(['2'] * 1000)}]"])
