"""The VAE's fast importance-sampling path against the generic traced evaluator."""

import math

import pytest
import torch

from inference import log_marginal_likelihood
from pyro_vae.evaluate import evaluate, importance_log_px
from pyro_vae.spec import load_spec
from pyro_vae.vae import VAE


def small_vae(prior: str) -> tuple[VAE, torch.Tensor]:
    spec = load_spec(None, ["latent_dim=3", "encoder.hidden=[16]", "decoder.hidden=[16]",
                            f"prior.name={prior}", "prior.pseudo_inputs=5" if prior == "vamp"
                            else "beta=1"])
    x = (torch.rand(12, 16, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    vae = VAE.from_spec(spec, (1, 4, 4), train_data=x)
    vae.num_data, vae.kl_scale = 1000, 0.3  # neither N/B nor β may enter log p(x)
    return vae, x


@pytest.mark.parametrize("prior", ["standard_normal", "vamp"])
def test_fast_path_equals_the_generic_traced_path_on_the_same_draws(prior):
    vae, x = small_vae(prior)
    K = 256
    torch.manual_seed(7)
    generic = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=K)
    torch.manual_seed(7)
    fast = importance_log_px(vae, x, K, memory_budget_mb=64, points_per_call=len(x))
    # the same standard-normal draws in the same (K, B, D) layout: equal to float32 rounding
    for name in ("log_px", "stderr", "ess", "elbo"):
        assert torch.allclose(getattr(fast, name), getattr(generic, name), rtol=1e-5, atol=1e-4), name


def test_fast_path_agrees_with_the_generic_path_within_monte_carlo_error():
    vae, x = small_vae("mixture")
    K = 2000
    generic = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=K)
    fast = importance_log_px(vae, x, K, memory_budget_mb=64)  # one point per call, other draws
    z = (fast.log_px - generic.log_px) / (fast.stderr.square() + generic.stderr.square()).sqrt()
    assert (z.abs() < 4).all()  # independent estimates: 4 combined standard errors


def test_evaluate_summary_is_consistent():
    vae, x = small_vae("standard_normal")
    result = evaluate(vae, x, "test", num_samples=200, memory_budget_mb=64)
    assert result.num_points == 12 and result.latent_dim == 3
    assert result.elbo <= result.log_px + 3 * result.log_px_sem  # ELBO ≤ log p̂ in expectation
    assert result.bits_per_dim == pytest.approx(-result.log_px / (16 * math.log(2)))
    assert 0 <= result.active_units <= 3
    assert result.elbo == pytest.approx(result.recon - result.kl, abs=1e-4)
