"""Annealed importance sampling and BDMC against closed forms: probabilistic PCA, and a two-site
model whose log p(x) is a one-dimensional integral."""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppca import PPCA
from pyro import poutine
from torch import Tensor

from inference.ais import (
    AISOptions,
    AISResult,
    ais_log_marginal_likelihood,
    bdmc,
    beta_schedule,
    sandwich,
)
from inference.marginal import log_marginal_likelihood

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ppca() -> PPCA:
    return PPCA.make(P=6, d=2, sigma=0.5)


def poor(ppca: PPCA):  # type: ignore[no-untyped-def]
    """A guide 0.6 off in the mean (1.3–2.5 posterior s.d.) and 0.4× too narrow: importance
    weights with infinite variance (q is narrower than p(z|x)/√2)."""
    return functools.partial(ppca.guide, loc_shift=0.6, scale_mult=0.4)


def _mean_within(estimate: Tensor, exact: Tensor, stderr: Tensor, sds: float = 4.0) -> None:
    """The mean error over n independent points lies within ``sds`` standard errors of that mean,
    sqrt(Σ stderr²)/n."""
    error = (estimate - exact).mean().item()
    se = stderr.square().sum().sqrt().item() / len(stderr)
    assert abs(error) < sds * se, f"mean error {error:.4f} vs {sds} × {se:.4f}"


def test_one_step_from_the_guide_is_importance_sampling_on_the_same_draws(ppca: PPCA) -> None:
    x = ppca.sample(30)
    torch.manual_seed(3)
    is_ = log_marginal_likelihood(ppca.model, poor(ppca), x, num_samples=16)
    torch.manual_seed(3)
    ais = ais_log_marginal_likelihood(
        ppca.model, poor(ppca), x, options=AISOptions(num_chains=16, num_steps=1)
    )
    # T = 1: w = p(x, z₀)/q(z₀ | x) with no transition, and the chains are drawn as IS draws its
    # particles (same probes, same plate): the same numbers, up to float32 summation order.
    for field in ("log_px", "stderr", "ess", "elbo"):
        torch.testing.assert_close(getattr(ais, field), getattr(is_, field))
    assert ais.acceptance.isnan().all() and ais.step_size.isnan().all()
    assert (ais.stderr > 0.1).all()  # the weights do vary: the equality is not trivial


def test_exact_posterior_guide_gives_exact_log_px_in_every_chunk(ppca: PPCA, monkeypatch) -> None:
    # q₀ = p(z | x) makes every f_t the posterior and every increment h = log p(x): each chain's
    # log w is log p(x) whatever the transitions do. With chunks of 3 the 4 pilot chains run
    # alone first, then the 7 estimating chains as 3 + 3 + 1 on the recorded step sizes.
    import inference.ais

    chunks = []

    def three(bytes_per_chain: int, budget: float, total: int) -> int:
        chunks.append(total)
        return 3

    monkeypatch.setattr(inference.ais, "chunk_size_for_budget", three)
    x = ppca.sample(10)
    r = ais_log_marginal_likelihood(
        ppca.model, ppca.guide, x, options=AISOptions(num_chains=7, num_steps=5, leapfrog_steps=2)
    )
    assert chunks == [7 + 4]
    # float32 rounding only, as in the IS test of the exact guide (1e-5 relative).
    torch.testing.assert_close(r.log_px, ppca.log_px(x), rtol=1e-5, atol=1e-5)
    assert r.stderr.max() < 1e-4 and (r.acceptance > 0).all()
    assert r.step_size.shape == (10,) and (r.step_size != 0.05).all()  # adapted by the pilots


def test_poor_guide_ais_matches_exact_and_beats_is_at_equal_cost(ppca: PPCA) -> None:
    torch.manual_seed(0)
    x = ppca.sample(20)
    exact = ppca.log_px(x)
    chains, steps, leapfrog, pilot = 16, 200, 5, 4
    ais = ais_log_marginal_likelihood(
        ppca.model,
        poor(ppca),
        x,
        options=AISOptions(
            num_chains=chains, num_steps=steps, leapfrog_steps=leapfrog, adapt_chains=pilot
        ),
    )
    z = (ais.log_px - exact) / ais.stderr
    _mean_within(ais.log_px, exact, ais.stderr)
    # Per point: under a calibrated stderr, |z| > 4 has probability 6e-5, 1e-3 for 20 points.
    assert z.abs().max() < 4
    assert 0.45 < ais.acceptance.mean() < 0.9  # adapted toward 0.65 from a small start
    # IS with as many model evaluations as AIS made (pilot chains included, gradients free):
    # its weights have infinite variance, and it stays about 2 nats low.
    k = (chains + pilot) * (steps - 1) * leapfrog + chains
    is_ = log_marginal_likelihood(ppca.model, poor(ppca), x, num_samples=k)
    ais_error, is_error = (ais.log_px - exact).abs().mean(), (is_.log_px - exact).abs().mean()
    assert is_error > 1.0
    assert ais_error < 0.1 * is_error


def test_bdmc_sandwiches_the_exact_value_and_narrows_with_steps(ppca: PPCA) -> None:
    torch.manual_seed(1)
    template = torch.zeros(20, ppca.P)
    gaps = []
    for steps in (10, 100):
        r = bdmc(
            ppca.model,
            poor(ppca),
            template,
            options=AISOptions(num_chains=8, num_steps=steps, leapfrog_steps=5),
        )
        exact = ppca.log_px(r.x)
        assert not torch.equal(r.x, template)  # simulated from the model, not the template
        # Stochastic bounds: in expectation lower ≤ log p(x) ≤ upper; the means over points may
        # cross the exact value only by Monte Carlo error (4 s.e. of the mean).
        lower_se = r.lower.stderr.square().sum().sqrt() / len(exact)
        upper_se = r.upper.stderr.square().sum().sqrt() / len(exact)
        assert r.lower.log_px.mean() < exact.mean() + 4 * lower_se
        assert r.upper.log_px.mean() > exact.mean() - 4 * upper_se
        gaps.append(r.gap.mean().item())
    # Measured: about 0.6 nats at 10 steps, 0.01 at 100.
    assert gaps[0] > 0.2 and gaps[1] < 0.25 * gaps[0]


PPCA_TWO = PPCA.make(P=6, d=2, sigma=0.5)
SHIFT = torch.tensor([0.5, -0.3, 0.2, 0.0, 0.3, -0.2])  # the direction r moves the mean along
GAMMA = (2.0, 2.0)  # r ~ Gamma(2, 2): mean 1, s.d. 0.7


def two_site_model(x: Tensor) -> None:
    """z ~ N(0, I₂), r ~ Gamma(2, 2), x | z, r ~ N(W z + b + r c, σ² I₆): the data pin r only
    loosely (s.d. about σ/‖c‖ ≈ 0.7), so its posterior is wide in log r, where the Jacobian
    term log|dr/du| = u matters."""
    W, b, sigma = PPCA_TWO.W, PPCA_TWO.b, PPCA_TWO.sigma
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        r = pyro.sample("r", dist.Gamma(*GAMMA))
        loc = z @ W.T + b + r.unsqueeze(-1) * SHIFT
        pyro.sample("x", dist.Normal(loc, sigma).to_event(1), obs=x)


def two_site_guide(x: Tensor) -> None:
    """z from the pPCA posterior that ignores r (1.5× too wide), r from about its prior."""
    loc, scale = PPCA_TWO.posterior(x)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 1.5 * scale).to_event(1))
        pyro.sample("r", dist.LogNormal(0.0, 0.7))


def two_site_log_px(x: Tensor) -> Tensor:
    """log ∫ N(x; b + r c, W Wᵀ + σ² I) Gamma(r; 2, 2) dr by the trapezoid rule in v = log r on
    [−12, 3] (4001 nodes): the integrand is smooth and negligible (below e⁻¹⁰ of its peak) at
    both ends."""
    v = torch.linspace(-12.0, 3.0, 4001, dtype=torch.float64)
    W, b = PPCA_TWO.W.double(), PPCA_TWO.b.double()
    cov = W @ W.T + PPCA_TWO.sigma**2 * torch.eye(len(b), dtype=torch.float64)
    loc = b + v.exp()[:, None] * SHIFT.double()  # (G, P)
    log_lik = dist.MultivariateNormal(loc, covariance_matrix=cov).log_prob(x.double()[:, None])
    rate = torch.tensor(GAMMA, dtype=torch.float64)
    log_prior = dist.Gamma(rate[0], rate[1]).log_prob(v.exp()) + v  # dr = r dv
    dv = v[1] - v[0]
    weights = torch.full_like(v, dv.item()).index_fill(0, torch.tensor([0, len(v) - 1]), dv / 2)
    return torch.logsumexp(log_lik + log_prior + weights.log(), dim=-1)


def _on_simulated(model, guide, log_px, seed: int, steps: int):  # type: ignore[no-untyped-def]
    """AIS (16 chains × ``steps``, 5 leapfrog steps) on 16 points drawn from ``model``, its
    result and the exact ``log_px`` of those points; the mean error is checked within 4 s.e."""
    torch.manual_seed(seed)
    trace = poutine.trace(poutine.uncondition(model)).get_trace(torch.zeros(16, 6))
    x = trace.nodes["x"]["value"]
    exact = log_px(x)
    options = AISOptions(num_chains=16, num_steps=steps, leapfrog_steps=5)
    r = ais_log_marginal_likelihood(model, guide, x, options=options)
    _mean_within(r.log_px, exact.float(), r.stderr)
    return r, exact


def test_two_sites_one_positive_match_the_integrated_log_px() -> None:
    r, exact = _on_simulated(two_site_model, two_site_guide, two_site_log_px, seed=2, steps=100)
    # Calibration: under a correct stderr the z² of 16 points average 1 with s.d. sqrt(2/16) =
    # 0.35, and the delta method is optimistic for AIS's skewed weights (measured 1.4);
    # leaving out log|dr/du| in HMC (a wrong stationary law) gave 42.
    z = (r.log_px - exact) / r.stderr
    assert z.square().mean() < 3.0
    assert r.stderr.mean() > 0.05  # the test has Monte Carlo error to be within


MIX_LOC = torch.tensor([[-1.0, 0.5], [1.0, -0.5]])  # a two-component mixture prior on z
MIX_SCALE, MIX_WEIGHTS = torch.tensor([[0.7, 0.5], [0.5, 0.8]]), torch.tensor([0.3, 0.7])


def mixture_prior() -> dist.MixtureSameFamily:
    """p(z) = Σ_k π_k N(z; μ_k, diag s_k²): a VampPrior's shape, whose support torch wraps."""
    return dist.MixtureSameFamily(
        dist.Categorical(MIX_WEIGHTS), dist.Normal(MIX_LOC, MIX_SCALE).to_event(1)
    )


def mixture_model(x: Tensor) -> None:
    """z ~ mixture_prior(), x | z ~ N(W z + b, σ² I₆)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", mixture_prior())
        pyro.sample(
            "x", dist.Normal(z @ PPCA_TWO.W.T + PPCA_TWO.b, PPCA_TWO.sigma).to_event(1), obs=x
        )


def mixture_guide(x: Tensor) -> None:
    """A broad Gaussian that knows nothing of x: AIS has the whole way to anneal."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.5).to_event(1))


def mixture_log_px(x: Tensor) -> Tensor:
    """log Σ_k π_k N(x; W μ_k + b, W diag(s_k²) Wᵀ + σ² I): linear-Gaussian per component."""
    W, b, sigma = PPCA_TWO.W.double(), PPCA_TWO.b.double(), PPCA_TWO.sigma
    parts = [
        torch.distributions.MultivariateNormal(
            W @ MIX_LOC[k].double() + b,
            W @ torch.diag(MIX_SCALE[k].double() ** 2) @ W.T + sigma**2 * torch.eye(len(b)),
        ).log_prob(x.double())
        + MIX_WEIGHTS[k].double().log()
        for k in range(len(MIX_WEIGHTS))
    ]
    return torch.stack(parts).logsumexp(0)


def test_a_mixture_prior_anneals_to_its_closed_form() -> None:
    # torch wraps a MixtureSameFamily's support (MixtureSameFamilyConstraint), for which
    # biject_to has no bijection: AIS unwraps it to the components' support
    r, exact = _on_simulated(mixture_model, mixture_guide, mixture_log_px, seed=5, steps=200)
    z = (r.log_px - exact) / r.stderr
    assert z.square().mean() < 3.0  # calibration, as for the two-site model
    assert r.stderr.mean() > 0.01  # there is Monte Carlo error to be within


def test_prior_init_anneals_from_the_prior(ppca: PPCA) -> None:
    torch.manual_seed(4)
    x = ppca.sample(12)
    exact = ppca.log_px(x)
    r = ais_log_marginal_likelihood(
        ppca.model,
        poor(ppca),
        x,
        options=AISOptions(init="prior", num_chains=16, num_steps=100, leapfrog_steps=5),
    )
    _mean_within(r.log_px, exact, r.stderr)
    # With T = 1 the weights are the likelihoods p(x | z₀), z₀ ~ p(z): the guide plays no part.
    one = ais_log_marginal_likelihood(
        ppca.model, None, x, options=AISOptions(init="prior", num_chains=4000, num_steps=1)
    )
    _mean_within(one.log_px, exact, one.stderr, sds=5.0)


def test_schedules_run_from_zero_to_one() -> None:
    for name in ("linear", "geometric", "sigmoid"):
        betas = beta_schedule(name, 50)
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert beta_schedule("geometric", 50)[1] == pytest.approx(1e-4)
    # Sigmoidal: symmetric about the middle step, slow at both ends.
    s = beta_schedule("sigmoid", 10)
    torch.testing.assert_close(s + s.flip(0), torch.ones(11, dtype=torch.float64))
    assert s[1] < 0.1 * 0.5 and s.diff()[5] > s.diff()[0]
    torch.testing.assert_close(
        beta_schedule("sigmoid", 1), torch.tensor([0.0, 1.0], dtype=torch.float64)
    )


def test_bad_arguments_name_what_is_wrong(ppca: PPCA) -> None:
    x = ppca.sample(3)
    with pytest.raises(ValueError, match="schedule must be one of linear, geometric, sigmoid"):
        AISOptions(schedule="cosine")
    with pytest.raises(ValueError, match="init must be one of guide, prior"):
        AISOptions(init="posterior")

    def no_guide(x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("other", dist.Normal(0.0, 1.0))

    with pytest.raises(
        ValueError,
        match=r"the guide misses \['z'\], and the model lacks "
        r"\['other'\]",
    ):
        ais_log_marginal_likelihood(ppca.model, no_guide, x, options=AISOptions(num_steps=2))

    def two_observed(x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(ppca.d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ ppca.W.T, 1.0).to_event(1), obs=x)
            pyro.sample("y", dist.Normal(z.sum(-1), 1.0), obs=x[:, 0])

    with pytest.raises(ValueError, match=r"one observed site, found \['x', 'y'\]"):
        bdmc(two_observed, None, x, options=AISOptions(num_steps=2))
    with pytest.raises(ValueError, match=r"one observed site, found \[\]"):
        bdmc(no_guide, None, x, options=AISOptions(num_steps=2))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_chains", 0, "num_chains must be an integer >= 1, got 0"),
        ("num_steps", 2.5, "num_steps must be an integer >= 1, got 2.5"),
        ("leapfrog_steps", True, "leapfrog_steps must be an integer >= 1, got True"),
        ("adapt_chains", -1, "adapt_chains must be an integer >= 0, got -1"),
        ("max_plate_nesting", 0, "max_plate_nesting must be an integer >= 1, got 0"),
        ("step_size", 0.0, "step_size must be a finite number > 0, got 0.0"),
        ("step_size", float("nan"), "step_size must be a finite number > 0, got nan"),
        ("memory_budget_mb", float("inf"), "memory_budget_mb must be a finite number > 0, got inf"),
        ("target_accept", 1.0, r"target_accept must be in \(0, 1\), got 1.0"),
        ("data_plate", 3, "data_plate must be a plate's name or None, got 3"),
        ("progress", "yes", "progress must be True or False, got 'yes'"),
    ],
)
def test_options_name_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        AISOptions(**{field: value})


def test_every_keyword_but_options_goes_to_the_model() -> None:
    """A model keyword named like an option (here ``step_size``, the prior's scale s) reaches the
    model: z ~ N(0, s²), x | z ~ N(z, 1), and the guide is the exact posterior, so every chain's
    weight is log p(x) = log N(x; 0, s² + 1)."""
    x = torch.tensor([-1.0, 0.5, 2.0])

    def model(x: Tensor, step_size: float) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, step_size))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: Tensor, step_size: float) -> None:
        shrink = step_size**2 / (step_size**2 + 1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(shrink * x, shrink**0.5))

    exact = dist.Normal(0.0, 5**0.5).log_prob(x).double()
    r = ais_log_marginal_likelihood(
        model, guide, x, step_size=2.0, options=AISOptions(num_chains=2, num_steps=3, step_size=0.3)
    )
    torch.testing.assert_close(r.log_px, exact, rtol=0, atol=1e-5)
    with pytest.raises(TypeError):
        AISOptions(16)  # type: ignore[misc]  # keyword-only: no option is taken by position


def test_results_of_batches_join() -> None:
    parts = [
        AISResult(
            log_px=torch.zeros(n),
            stderr=torch.zeros(n),
            ess=torch.ones(n),
            elbo=torch.zeros(n),
            num_samples=4,
            acceptance=torch.full((n,), 0.5),
            step_size=torch.ones(n),
            num_steps=10,
        )
        for n in (2, 3)
    ]
    joined = AISResult.cat(parts)
    assert len(joined.acceptance) == 5 and joined.num_steps == 10 and joined.num_samples == 4
    assert "4 chains × 10 steps" in str(joined)


def test_a_data_plate_that_draws_its_own_subsample_is_refused_by_every_evaluator() -> None:
    """With ``subsample_size`` and no indices, every run of the model and guide scores other
    points (each chunk of particles, chain or step): IS, AIS and BDMC refuse such a plate by
    name; the same plate given its indices is scored."""
    x = torch.tensor([0.0, 3.0, 6.0, 9.0])

    def plate(idx: Tensor | None) -> pyro.plate:
        return pyro.plate("data", 4, subsample_size=2, subsample=idx)

    def model(x: Tensor, idx: Tensor | None = None) -> None:
        with plate(idx) as i:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[i])

    def guide(x: Tensor, idx: Tensor | None = None) -> None:  # the exact posterior N(x/2, 1/2)
        with plate(idx) as i:
            pyro.sample("z", dist.Normal(x[i] / 2, 0.5**0.5))

    random = "the plate 'data' draws a random subsample of 2 of its 4 points"
    with pytest.raises(ValueError, match=random):
        log_marginal_likelihood(model, guide, x, num_samples=8)
    tiny = AISOptions(num_chains=2, num_steps=2)
    with pytest.raises(ValueError, match=random):
        ais_log_marginal_likelihood(model, guide, x, options=tiny)
    with pytest.raises(ValueError, match=random):
        bdmc(model, guide, x, options=tiny)
    idx = torch.tensor([3, 1])
    exact = dist.Normal(0.0, 2**0.5).log_prob(x[idx])
    torch.testing.assert_close(
        log_marginal_likelihood(model, guide, x, idx, num_samples=8).log_px,
        exact.double(),
        rtol=0,
        atol=1e-5,
    )
    torch.testing.assert_close(
        ais_log_marginal_likelihood(
            model, guide, x, idx, options=AISOptions(num_chains=2, num_steps=3)
        ).log_px,
        exact.double(),
        rtol=0,
        atol=1e-5,
    )


def test_the_sandwich_is_written_as_bounds_only_where_they_do_not_cross() -> None:
    # Each bound is stochastic: with few chains the mean lower bound can exceed the mean upper
    # one, and "−23.16 ≤ log p(x) ≤ −23.37" would be a false statement.
    assert sandwich(-23.5, -23.25) == "-23.50 ≤ log p(x) ≤ -23.25 nats"
    crossed = sandwich(-23.164, -23.367, 3)
    assert crossed.startswith("lower -23.164 > upper -23.367 nats: the bounds cross")
    assert "≤" not in crossed
