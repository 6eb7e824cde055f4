"""The Bernoulli likelihood's fused log density against torch's Bernoulli."""

import pyro.distributions as dist
import torch

from pyro_vae.likelihoods import BernoulliLikelihood


def test_bernoulli_log_prob_equals_torch_bernoulli_after_plate_expansion():
    logits = 20 * torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(0))
    x = torch.bernoulli(torch.rand(4, 10, generator=torch.Generator().manual_seed(1)))
    p = BernoulliLikelihood()(logits).expand((2, 3, 4))  # as a particle plate broadcasts it
    expected = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    assert p.batch_shape == (2, 3, 4) and p.event_shape == (10,)
    # |log p| ~ 10² here; float32 rounding of a 10-term sum stays below 1e-4 relative
    assert torch.allclose(p.log_prob(x), expected.expand(2, 3, 4), rtol=1e-5, atol=1e-4)
