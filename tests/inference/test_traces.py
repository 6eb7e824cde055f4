"""The trace machinery shared by the estimators and log p(x): scales and the data plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import Tensor

from inference.estimators import make_estimator
from inference.traces import particle_traces, point_log_weights

N, BETA = 1000, 0.3


def model(x: Tensor) -> None:
    with pyro.plate("data", N, subsample=torch.arange(len(x))):
        with poutine.scale(scale=BETA):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x: Tensor) -> None:
    with pyro.plate("data", N, subsample=torch.arange(len(x))), poutine.scale(scale=BETA):
        pyro.sample("z", dist.Normal(x / 2, 1.0))


def test_unscaled_drops_beta_and_default_keeps_it_on_the_same_draws() -> None:
    x = torch.randn(8)
    model_trace, guide_trace = particle_traces(
        model, guide, (x,), {}, particles=5, max_plate_nesting=1
    )
    scaled = point_log_weights(model_trace, guide_trace, 1)
    unscaled = point_log_weights(model_trace, guide_trace, 1, unscaled=True)
    z = guide_trace.nodes["z"]["value"]  # (5, 8)
    log_pz, log_qz = dist.Normal(0.0, 1.0).log_prob(z), dist.Normal(x / 2, 1.0).log_prob(z)
    log_px_z = dist.Normal(z, 1.0).log_prob(x)
    # Closed forms on the same draws; float32 rounding of sums of three O(10) terms only.
    tol = {"rtol": 1e-6, "atol": 1e-5}
    torch.testing.assert_close(unscaled.log_p, log_pz + log_px_z, **tol)
    torch.testing.assert_close(unscaled.log_q, log_qz, **tol)
    torch.testing.assert_close(scaled.log_p, BETA * log_pz + log_px_z, **tol)
    torch.testing.assert_close(scaled.log_q, BETA * log_qz, **tol)
    assert scaled.scale == unscaled.scale == N / len(x)


def test_estimators_find_the_data_plate_as_log_px_does() -> None:
    def global_model(x: Tensor) -> None:
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(theta, 1.0), obs=x)

    def global_guide(x: Tensor) -> None:
        pyro.sample("theta", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'theta' is outside the data plate 'data'"):
        make_estimator("iwae").loss(global_model, global_guide, torch.zeros(5))


@pytest.mark.parametrize("stop_guide_params", [False, True])
def test_a_factor_in_the_guide_is_part_of_log_q_as_in_pyro(stop_guide_params: bool) -> None:
    """A ``pyro.factor`` in the guide (an observed guide site) enters log q as Pyro's
    ``Trace_ELBO`` counts it (``guide_trace.log_prob_sum()``): on the same draws, log q with the
    factor c(x) is log q without it plus c(x) exactly, and its gradient is kept even where the
    draws' densities are stopped (STL, DReG)."""
    x = torch.randn(8)
    weight = torch.tensor(0.7, requires_grad=True)

    def factored(x: Tensor) -> None:
        with pyro.plate("data", N, subsample=torch.arange(len(x))):
            with poutine.scale(scale=BETA):
                pyro.sample("z", dist.Normal(x / 2, 1.0))
            pyro.factor("f", weight * x, has_rsample=True)

    torch.manual_seed(0)
    _, plain = particle_traces(model, guide, (x,), {}, particles=5, max_plate_nesting=1)
    torch.manual_seed(0)
    model_trace, with_factor = particle_traces(
        model, factored, (x,), {}, particles=5, max_plate_nesting=1
    )
    log_q = point_log_weights(model_trace, plain, 1, stop_guide_params, unscaled=True).log_q
    got = point_log_weights(model_trace, with_factor, 1, stop_guide_params, unscaled=True).log_q
    assert torch.allclose(got, log_q + 0.7 * x, atol=1e-5)
    (grad,) = torch.autograd.grad(got.sum(), weight)
    assert torch.allclose(grad, 5 * x.sum(), rtol=1e-5)  # 5 particles × Σ_b x_b
