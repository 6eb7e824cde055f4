"""IS and AIS on models with a discrete latent (summed by enumeration) and with Pyro's
autoguides, against closed forms: the mixture-of-Gaussians pPCA and probabilistic PCA."""

from __future__ import annotations

import functools
import warnings

import pyro
import pytest
import torch
from mixture_ppca import MixturePPCA
from ppca import PPCA
from pyro.infer import autoguide
from pyro.nn import PyroParam
from torch import Tensor
from torch.distributions import constraints

from inference.ais import AISOptions, ais_log_marginal_likelihood, bdmc
from inference.marginal import log_marginal_likelihood

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def mix() -> MixturePPCA:
    return MixturePPCA.make(components=3, spread=2.5)


def assert_within(estimate: Tensor, exact: Tensor, stderr: Tensor, sds: float = 4.0) -> None:
    """The mean error over n independent points lies within ``sds`` standard errors of that
    mean, sqrt(Σ stderr²)/n (each point's delta-method s.e. of its estimate)."""
    error = (estimate - exact).mean().item()
    se = stderr.square().sum().sqrt().item() / len(stderr)
    assert abs(error) < sds * se, f"mean error {error:.4f} vs {sds} × {se:.4f}"


def test_is_sums_the_enumerated_site_as_the_mixture_prior_does(mix: MixturePPCA) -> None:
    x, K = mix.sample(100), 100
    exact = mix.log_px(x)
    narrow = functools.partial(mix.guide, scale_mult=0.8)

    def run(model, budget: float = 512.0):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = log_marginal_likelihood(model, narrow, x, num_samples=K, memory_budget_mb=budget)
        return r, [str(w.message) for w in caught]

    # One chunk of K each: the same draws for both models.
    (enum, enum_notes), (mixture, _) = run(mix.model), run(mix.mixture_prior_model)
    # log Σ_y p(y) p(z | y) p(x | z) by contraction is log p(z) p(x | z) with the mixture prior:
    # the same draws give the same weights, up to float32 rounding of terms of size ≲ 30.
    torch.testing.assert_close(enum.log_px, mixture.log_px, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enum.ess, mixture.ess, rtol=1e-4, atol=1e-3)
    assert not any("discrete site" in n for n in enum_notes)
    assert_within(enum.log_px, exact, enum.stderr)
    # The weights do vary (the guide is 0.8× too narrow), so the agreement says something.
    assert enum.stderr.mean() > 0.01

    # Drawn from the prior instead: named once (the chunks of 0.05 MiB make several runs), and
    # the ESS falls: measured 92 against 56 of K = 100 here, means over 100 points whose spread
    # (s.d. about 10) puts the s.e. of each mean near 1.
    sampled, notes = run(functools.partial(mix.model, enumerate=False), budget=0.05)
    named = [n for n in notes if "the discrete site 'y' is drawn from its prior" in n]
    assert len(named) == 1
    assert enum.ess.mean() > 1.4 * sampled.ess.mean()


def test_a_discrete_guide_site_is_drawn_from_the_guide_with_a_notice(mix: MixturePPCA) -> None:
    """y sampled by the guide from p(y | x), z from p(z | x, y) moment-matched over y: an
    ordinary importance sampler over (y, z); the notice names y once."""

    def guide(x: Tensor) -> None:
        r = mix._marginals(x).softmax(-1).float()  # p(y | x), exact
        mean, cov = mix.posterior_moments(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", pyro.distributions.Categorical(probs=r))
            pyro.sample("z", pyro.distributions.MultivariateNormal(mean.float(), cov.float()))

    x = mix.sample(50)
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="the discrete site 'y' is drawn from the guide"):
        r = log_marginal_likelihood(mix.model, guide, x, num_samples=200)
    assert_within(r.log_px, mix.log_px(x), r.stderr)


def test_ais_moves_the_continuous_site_with_the_discrete_one_summed(mix: MixturePPCA) -> None:
    torch.manual_seed(2)
    x = mix.sample(10)
    exact = mix.log_px(x)
    poor = functools.partial(mix.guide, scale_mult=0.5)  # weights of infinite variance
    r = ais_log_marginal_likelihood(
        mix.model, poor, x, options=AISOptions(num_chains=8, num_steps=40, leapfrog_steps=3)
    )
    assert_within(r.log_px, exact, r.stderr)
    # Per point: under a calibrated stderr |z| > 4 has probability 6e-5, 6e-4 for 10 points.
    assert ((r.log_px - exact) / r.stderr).abs().max() < 4
    # T = 1 on the same draws is IS with K = C, the enumerated sum included.
    torch.manual_seed(3)
    one = ais_log_marginal_likelihood(
        mix.model, poor, x, options=AISOptions(num_chains=8, num_steps=1)
    )
    torch.manual_seed(3)
    is_ = log_marginal_likelihood(mix.model, poor, x, num_samples=8)
    torch.testing.assert_close(one.log_px, is_.log_px)


def test_bdmc_sandwiches_a_model_with_an_enumerated_site(mix: MixturePPCA) -> None:
    torch.manual_seed(4)
    r = bdmc(
        mix.model,
        mix.guide,
        torch.zeros(10, mix.ppca.P),
        options=AISOptions(num_chains=4, num_steps=20, leapfrog_steps=3),
    )
    exact = mix.log_px(r.x)
    lower_se = r.lower.stderr.square().sum().sqrt() / len(exact)
    upper_se = r.upper.stderr.square().sum().sqrt() / len(exact)
    # Stochastic bounds: the means may cross the exact value by Monte Carlo error only.
    assert r.lower.log_px.mean() < exact.mean() + 4 * lower_se
    assert r.upper.log_px.mean() > exact.mean() - 4 * upper_se


@pytest.mark.parametrize("kind", [autoguide.AutoNormal, autoguide.AutoNormalMessenger])
def test_ais_with_an_autoguide_matches_the_exact_log_px(kind: type) -> None:
    """The autoguide set to the poor guide of the pPCA AIS tests: the exact posterior mean
    shifted by 0.6, its s.d. times 0.4 (importance weights of infinite variance). AutoNormal's
    chains move its own draws u (the auxiliary ``z_unconstrained``), the model seeing z = T(u);
    AutoNormalMessenger samples z itself. Same parametrization, same numbers."""
    ppca = PPCA.make(P=6, d=2, sigma=0.5)
    x = ppca.sample(10)
    exact = ppca.log_px(x)
    guide = kind(ppca.model)
    guide(x)  # creates the parameters, as a first SVI step would
    loc, scale = ppca.posterior(x)
    guide.locs.z = PyroParam(loc + 0.6)
    guide.scales.z = PyroParam(0.4 * scale.expand_as(loc), constraints.positive)
    torch.manual_seed(5)
    r = ais_log_marginal_likelihood(
        ppca.model, guide, x, options=AISOptions(num_chains=8, num_steps=60, leapfrog_steps=3)
    )
    assert_within(r.log_px, exact, r.stderr)
    assert ((r.log_px - exact) / r.stderr).abs().max() < 4  # as above, 10 points
    assert r.stderr.mean() > 0.1  # the chains' weights vary: there is error to be within
    # IS with as many model evaluations stays low: measured 2.25 nats.
    is_ = log_marginal_likelihood(ppca.model, guide, x, num_samples=8 * 60 * 3)
    assert (exact - is_.log_px).mean() > 1.0


def test_autoguides_that_couple_the_points_and_bdmc_from_auxiliary_sites_are_refused() -> None:
    ppca = PPCA.make(P=6, d=2, sigma=0.5)
    x = ppca.sample(4)
    tiny = AISOptions(num_chains=2, num_steps=2)
    low_rank = autoguide.AutoLowRankMultivariateNormal(ppca.model)
    low_rank(x)
    with pytest.raises(ValueError, match="outside the data plate 'data'"):
        ais_log_marginal_likelihood(ppca.model, low_rank, x, options=tiny)
    normal = autoguide.AutoNormal(ppca.model)
    normal(x)
    with pytest.raises(ValueError, match=r"no value for the sites \['z_unconstrained'\]"):
        bdmc(ppca.model, normal, x, options=tiny)
