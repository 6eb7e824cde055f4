"""The Bernoulli likelihood's fused log density against torch's Bernoulli; the discretized
logistic's masses sum to one."""

import pyro.distributions as dist
import pytest
import torch

from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.likelihoods import BernoulliLikelihood


def test_bernoulli_log_prob_equals_torch_bernoulli_after_plate_expansion():
    logits = 20 * torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(0))
    x = torch.bernoulli(torch.rand(4, 10, generator=torch.Generator().manual_seed(1)))
    p = BernoulliLikelihood()(logits).expand((2, 3, 4))  # as a particle plate broadcasts it
    expected = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    assert p.batch_shape == (2, 3, 4) and p.event_shape == (10,)
    # |log p| ~ 10² here; float32 rounding of a 10-term sum stays below 1e-4 relative
    assert torch.allclose(p.log_prob(x), expected.expand(2, 3, 4), rtol=1e-5, atol=1e-4)


def discretized_logistic(unit: bool, levels: int = 256, components: int = 3, pixels: int = 4):
    """A built likelihood and decoder output spanning sharp, wide and off-range logistics."""
    lik = LIKELIHOODS.instantiate(
        LIKELIHOODS.parse(
            {
                "name": "discretized_logistic",
                "components": components,
                "values": "unit" if unit else "integer",
            }
        )
    ).build(pixels, levels)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, components, pixels, generator=g)
    loc = 1.5 * torch.randn(2, components, pixels, generator=g)  # some beyond [−1, 1]
    log_scale = torch.linspace(-6, 1, 2 * components * pixels).reshape(2, components, pixels)
    return lik, torch.cat([logits, loc, log_scale], 1).flatten(1)  # parameter-major (2, 3C·P)


@pytest.mark.parametrize("unit", [False, True])
def test_discretized_logistic_probabilities_over_all_256_values_sum_to_one(unit):
    """In float32 each of the 256 log-probabilities is exact to ~1e-6 relative; the sum of the
    masses is 1 to 1e-5. Dropping the open ends (k = 0, 255) loses the tails' mass (≥ 1e-2 here)."""
    lik, out = discretized_logistic(unit)
    k = torch.arange(256.0)
    values = (k / 255 if unit else k).reshape(256, 1, 1).expand(256, 2, 4)
    pixels = lik(out).base_dist  # one distribution per pixel, batch (2, 4)
    total = pixels.log_prob(values).logsumexp(0).exp()
    assert torch.allclose(total, torch.ones(2, 4), atol=1e-5)
    inner = pixels.log_prob(values[1:-1]).logsumexp(0).exp()
    assert float((1 - inner).max()) > 1e-2


def test_discretized_logistic_unit_and_integer_data_get_the_same_masses():
    lik_int, out = discretized_logistic(unit=False)
    lik_unit, _ = discretized_logistic(unit=True)
    k = torch.randint(0, 256, (2, 4), generator=torch.Generator().manual_seed(3)).float()
    assert torch.allclose(lik_int(out).log_prob(k), lik_unit(out).log_prob(k / 255))
    assert lik_int.support_error(k) is None and lik_unit.support_error(k / 255) is None
    assert "set likelihood.values" in lik_unit.support_error(k + 1)
    draws = lik_unit(out).sample((100,))
    assert lik_unit.support_error(draws.flatten(0, 1)) is None
