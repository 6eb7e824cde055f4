"""ELBO estimators against the closed forms of probabilistic PCA.

Monte Carlo tolerances are in standard errors (s.e.) of the quantity tested; 4 s.e. is a two-sided
false-alarm rate of 6e-5 per check, 5 s.e. one of 6e-7 (used where 16 coordinates are tested at once:
16 × 6e-7 ≈ 1e-5).
"""

from __future__ import annotations

import inspect
import math
import typing
from functools import partial

import pyro
import pyro.distributions as dist
import pyro.infer.trace_elbo
import pytest
import torch
from ppca import PPCA
from pyro import poutine
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule
from torch import Tensor, nn

from inference.estimators import ESTIMATORS, DReG, log_mean_exp, make_estimator
from inference.gradients import GradientStatistics, gradient_statistics


class Model(PyroModule):
    """PPCA with learnable W, b (σ fixed); data plate of full size ``full_size`` (None: the batch),
    KL weight ``beta`` on z; a subclass may swap the prior family (location 0, scale 1)."""

    prior_family = dist.Normal

    def __init__(self, ppca: PPCA, full_size: int | None = None, beta: float = 1.0) -> None:
        super().__init__()
        self.W, self.b = nn.Parameter(ppca.W.clone()), nn.Parameter(ppca.b.clone())
        self.sigma, self.full_size, self.beta = ppca.sigma, full_size, beta

    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", self.full_size or len(x), subsample=torch.arange(len(x))):
            with poutine.scale(scale=self.beta):
                prior = self.prior_family(torch.zeros(self.W.shape[1]), 1.0).to_event(1)
                z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)


class Guide(PyroModule):
    """Linear amortized guide q(z | x) = N(A x + c, exp(log_s)²): the exact posterior at
    ``mismatch`` = 0; otherwise A gets mismatch × fixed noise, c and log_s get + mismatch."""

    def __init__(
        self, ppca: PPCA, mismatch: float = 0.0, full_size: int | None = None, beta: float = 1.0
    ) -> None:
        super().__init__()
        A, c, s = ppca.linear_encoder()
        noise = torch.randn(A.shape, generator=torch.Generator().manual_seed(3))
        self.A = nn.Parameter(A + mismatch * noise)
        self.c, self.log_s = nn.Parameter(c + mismatch), nn.Parameter(s.log() + mismatch)
        self.full_size, self.beta = full_size, beta

    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", self.full_size or len(x), subsample=torch.arange(len(x))):
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_s.exp()).to_event(1))


@pytest.fixture
def ppca() -> PPCA:
    return PPCA.make()


@pytest.fixture
def x(ppca: PPCA) -> Tensor:
    return ppca.sample(8)


def objectives(estimator, model, guide, x: Tensor, repeats: int) -> Tensor:
    return -torch.tensor(
        [estimator.loss(model, guide, x) for _ in range(repeats)], dtype=torch.float64
    )


def sem(t: Tensor) -> float:
    return t.std().item() / math.sqrt(len(t))


def test_trace_and_mean_field_agree_with_the_exact_elbo(ppca: PPCA, x: Tensor) -> None:
    # ELBO = log p(x) − KL(q ‖ p(z | x)), both closed forms; the guide is over-confident (scale
    # halved, the usual VAE failure), where the analytic KL removes the dominant noise of
    # log p(z) − log q(z): measured variance ratio mean_field/trace 0.16 (not a theorem: at the
    # exact posterior trace's objective is constant and mean_field's is not).
    guide = partial(ppca.guide, scale_mult=0.5)
    loc, scale = ppca.posterior(x)
    exact = (
        ppca.log_px(x).sum()
        - torch.distributions.kl_divergence(
            dist.Normal(loc, 0.5 * scale), dist.Normal(loc, scale)
        ).sum()
    )
    trace = objectives(make_estimator("trace"), ppca.model, guide, x, 400)
    mean_field = objectives(make_estimator("mean_field"), ppca.model, guide, x, 400)
    for draws in (trace, mean_field):
        assert abs(draws.mean() - exact) < 4 * sem(draws)
    # with 400 draws each, the sample variance ratio is within a factor 1.35 of the truth (3 s.d.)
    assert mean_field.var() < 0.5 * trace.var()


def test_iwae_bounds_increase_with_k_up_to_log_px(ppca: PPCA, x: Tensor) -> None:
    # L_1 = ELBO ≤ E L_8 ≤ E L_16 ≤ log p(x) (Burda et al. 2015, Thm 1), strictly for a
    # mismatched guide: each gap below is > 5 s.e. of the difference, so each order is asserted
    # with a 4 s.e. margin (a bound that ignored k, or overshot log p(x), would fail).
    model, guide = Model(ppca), Guide(ppca, mismatch=0.3)
    draws = {
        k: objectives(make_estimator("iwae", particles=k), model, guide, x, 100) for k in (1, 8, 16)
    }
    log_px = ppca.log_px(x).sum().item()

    def gap(lo: Tensor, hi: Tensor) -> float:  # (E hi − E lo) in s.e. of the difference
        return ((hi.mean() - lo.mean()) / math.hypot(sem(lo), sem(hi))).item()

    assert gap(draws[1], draws[8]) > 4
    assert gap(draws[8], draws[16]) > 4
    assert (log_px - draws[16].mean()) / sem(draws[16]) > 4


def test_stl_guide_gradient_vanishes_at_the_exact_posterior(ppca: PPCA, x: Tensor) -> None:
    # With q = p(z | x), log p(x, z) − log q(z) = log p(x) for every z: the path gradient is 0 per
    # sample (float32: measured 8e-6), while Trace_ELBO's keeps its score term (measured 26).
    model, guide = Model(ppca), Guide(ppca)

    def rms(stats: GradientStatistics) -> Tensor:
        g = stats.groups["guide"]
        return (g.mean.square() + g.variance).sqrt()  # ≥ every sample's |g| / √R

    stl = gradient_statistics(model, guide, make_estimator("stl", particles=4), x, repeats=20)
    trace = gradient_statistics(model, guide, make_estimator("trace", particles=4), x, repeats=20)
    assert rms(stl).max() < 1e-4
    assert rms(trace).max() > 1.0
    assert stl.groups["model"].variance.max() > 0  # the model gradient is a real estimate


class IWAESTL(DReG):
    """A biased control: Σ_j w̃_j ∇_path log w_j (weights not squared; Roeder et al.'s IWAE-STL)."""

    def objective(self, weights):
        log_w = weights.log_w
        normalized = (log_w.detach() - log_w.detach().logsumexp(0)).exp()
        return log_mean_exp(log_w), (normalized * log_w).sum(0)


def z_scores(a: GradientStatistics, b: GradientStatistics, group: str) -> Tensor:
    ga, gb = a.groups[group], b.groups[group]
    return (ga.mean - gb.mean) / ((ga.variance / a.repeats + gb.variance / b.repeats).sqrt())


@pytest.mark.parametrize(
    "path, reference, particles, beta",
    [
        ("stl", "trace", 1, 1.0),
        ("dreg", "iwae", 8, 1.0),
        ("stl", "trace", 1, 0.5),
        ("dreg", "iwae", 8, 0.5),
    ],
)
def test_path_gradients_are_unbiased(
    ppca: PPCA, x: Tensor, path: str, reference: str, particles: int, beta: float
) -> None:
    # Same expected guide gradient as the plain estimator of the same bound: every one of the 16
    # coordinates within 5 s.e. (family-wise false alarm ≈ 1e-5, see the module docstring); at
    # β = 0.5 (a KL weight or warm-up) the bound's log weights are log p(x|z) + β log p(z) −
    # β log q(z|x).
    model, guide = Model(ppca, beta=beta), Guide(ppca, mismatch=0.3, beta=beta)
    draws = {
        name: gradient_statistics(
            model, guide, make_estimator(name, particles=particles), x, repeats=100
        )
        for name in (path, reference)
    }
    assert z_scores(draws[path], draws[reference], "guide").abs().max() < 5
    if path == "dreg" and beta == 1:  # the test has power: IWAE-STL's bias shows at |z| ≈ 24
        biased = gradient_statistics(model, guide, IWAESTL(particles=particles), x, repeats=100)
        assert z_scores(biased, draws[reference], "guide").abs().max() > 10


def test_dreg_model_gradient_is_iwae_model_gradient(ppca: PPCA, x: Tensor) -> None:
    # Σ_j w̃_j ∇_θ log p(x, z_j) for both: equal sample by sample on the same seed.
    model, guide = Model(ppca, beta=0.7), Guide(ppca, mismatch=0.3, beta=0.7)
    grads = {}
    for name in ("dreg", "iwae"):
        pyro.set_rng_seed(1)
        loss = make_estimator(name, particles=8)(model, guide)(x)
        grads[name] = torch.autograd.grad(loss, list(model.parameters()))
    for a, b in zip(grads["dreg"], grads["iwae"]):
        torch.testing.assert_close(a, b)


def test_dreg_snr_holds_as_k_grows_while_iwae_snr_decays(ppca: PPCA, x: Tensor) -> None:
    # Rainforth et al. 2018: IWAE's guide SNR falls as O(1/√k); DReG's does not (Tucker et al. 2018).
    # Guide near the posterior, so k = 64 is in the large-k regime. Measured median SNR over the
    # 16 guide coordinates, 200 draws, 4 seeds: IWAE k=64/k=1 ratio 0.18–0.25 (0.2 is above the
    # estimate's noise floor ≈ 0.67/√200 ≈ 0.05); DReG 2.3–3.1.
    model, guide = Model(ppca), Guide(ppca, mismatch=0.1)

    def snr(name: str, k: int) -> float:
        stats = gradient_statistics(model, guide, make_estimator(name, particles=k), x, repeats=200)
        return stats.groups["guide"].median_snr

    assert snr("iwae", 64) < 0.5 * snr("iwae", 1)
    assert snr("dreg", 64) > snr("dreg", 1)


def exact_bound(
    name: str,
    estimator,
    ppca: PPCA,
    model: Model,
    guide: Guide,
    x: Tensor,
    seed: int,
    particles: int,
) -> float:
    """The estimator's bound by hand from the guide's own draws (same seed), in closed forms."""
    pyro.set_rng_seed(seed)
    with pyro.plate("particles", particles, dim=-2):
        z = poutine.trace(guide).get_trace(x).nodes["z"]["value"].detach()  # (k, B, d)
    beta, loc, scale = model.beta, x @ guide.A.T + guide.c, guide.log_s.exp()
    log_lik = dist.Normal(z @ ppca.W.T + ppca.b, ppca.sigma).log_prob(x).sum(-1)
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_w = log_lik + beta * (log_prior - dist.Normal(loc, scale).log_prob(z).sum(-1))
    if name == "mean_field":
        kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum(
            -1
        )
        per_point = log_lik.mean(0) - beta * kl
    elif name in ("trace", "stl", "enum", "reinforce", "gumbel"):  # ELBOs: no discrete latent here
        per_point = log_w.mean(0)
    else:
        alpha = getattr(estimator, "alpha", 0.0)
        per_point = log_mean_exp((1 - alpha) * log_w) / (1 - alpha)
    return ((model.full_size or len(x)) / len(x) * per_point.sum()).item()


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_loss_values(ppca: PPCA, x: Tensor, name: str) -> None:
    # differentiable_loss (through the ELBOModule) = loss on the same seed = −(N/B) Σ_b bound_b,
    # with subsampling (N = 100, B = 8) and β = 0.5.
    model, guide = Model(ppca, full_size=100, beta=0.5), Guide(ppca, 0.3, full_size=100, beta=0.5)
    estimator = make_estimator(name, particles=4)
    pyro.set_rng_seed(7)
    loss = estimator.loss(model, guide, x)
    pyro.set_rng_seed(7)
    module_loss = estimator(model, guide)(x)
    assert module_loss.requires_grad
    assert module_loss.item() == pytest.approx(loss, rel=1e-5)
    bound = exact_bound(name, estimator, ppca, model, guide, x, seed=7, particles=4)
    assert loss == pytest.approx(-bound, rel=1e-5)


def test_iwae_subsampling_scales_the_per_point_bound(ppca: PPCA, x: Tensor) -> None:
    # N/B multiplies the sum of per-point bounds; it does not enter the log-sum-exp.
    N, beta = 1000, 0.7
    estimator = make_estimator("iwae", particles=16)
    losses = {}
    for full_size in (None, N):
        pyro.set_rng_seed(3)
        model, guide = Model(ppca, full_size, beta), Guide(ppca, 0.3, full_size, beta)
        losses[full_size] = estimator.loss(model, guide, x)
    assert losses[N] == pytest.approx(N / len(x) * losses[None], rel=1e-5)
    # Pyro's RenyiELBO keeps N/B inside the log-sum-exp: a different number (the test can fail).
    pyro.set_rng_seed(3)
    naive = RenyiELBO(alpha=0, num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    assert naive.loss(model, guide, x) < losses[N] - 10


def test_renyi_at_alpha_zero_is_iwae(ppca: PPCA, x: Tensor) -> None:
    model, guide = Model(ppca), Guide(ppca, 0.3)
    losses = []
    for estimator in (
        make_estimator("renyi", alpha=0.0, particles=8),
        make_estimator("iwae", particles=8),
    ):
        pyro.set_rng_seed(5)
        losses.append(estimator.loss(model, guide, x))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_svi_lowers_the_loss(ppca: PPCA, name: str) -> None:
    # 40 Adam steps from a mismatched guide and a shrunk W. The loss is judged by 20 fresh draws
    # before and after (s.e. ≤ 5 nats); the measured drop is 140–250 nats (3 seeds, each estimator).
    data = ppca.sample(32, seed=2)
    model, guide = Model(ppca), Guide(ppca, mismatch=0.5)
    with torch.no_grad():
        model.W.mul_(0.7)
    estimator = make_estimator(name, particles=4)

    def mean_loss() -> float:
        return sum(estimator.loss(model, guide, data) for _ in range(20)) / 20

    # SVI collects parameters from Pyro's global param store (module-local ones lack
    # .unconstrained() in pyro 1.9.2), so this test runs the classic way.
    with pyro.settings.context(module_local_params=False):
        before = mean_loss()
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=estimator)
        for _ in range(40):
            svi.step(data)
        assert mean_loss() < before - 50


def test_make_estimator_errors() -> None:
    with pytest.raises(
        ValueError, match="unknown estimator 'iwea'; choices: dreg, enum, gumbel, iwae, mean_field"
    ):
        make_estimator("iwea")
    with pytest.raises(ValueError, match="particles must be >= 1, got 0"):
        make_estimator("iwae", particles=0)
    with pytest.raises(ValueError, match="particles must be an integer, got 2.5"):
        make_estimator("trace", particles=2.5)
    with pytest.raises(ValueError, match="alpha must be a finite number other than 1"):
        make_estimator("renyi", alpha=1.0)
    with pytest.raises(ValueError, match="estimator 'stl' has no parameter 'alpha'"):
        make_estimator("stl", alpha=0.5)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_constructors_are_typed_keyword_params_with_defaults(name: str) -> None:
    # The spec layer validates YAML against these annotations.
    cls = ESTIMATORS[name]
    hints = typing.get_type_hints(cls.__init__)
    for p in inspect.signature(cls).parameters.values():
        assert p.name in hints and p.default is not p.empty, p.name
    assert hints["particles"] is int
    assert isinstance(cls(), pyro.infer.ELBO)


def test_importance_weighted_estimators_need_rsample_and_a_data_plate(
    ppca: PPCA, x: Tensor
) -> None:
    def discrete_model(x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1) * torch.ones(6), 1.0).to_event(1), obs=x)

    def discrete_guide(x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="guide site 'c' .* is not reparameterized"):
        make_estimator("dreg").loss(discrete_model, discrete_guide, x)

    def global_model(x: Tensor) -> None:
        pyro.sample("x", dist.Normal(torch.zeros(x.shape), 1.0).to_event(2), obs=x)

    with pytest.raises(ValueError, match="every sample site inside one vectorized data plate"):
        make_estimator("iwae").loss(global_model, lambda x: None, x)


class CauchyModel(Model):
    """PPCA with a Cauchy prior on z: torch registers no KL(Normal ‖ Cauchy)."""

    prior_family = dist.Cauchy


PYRO_CLASSES = {"trace": Trace_ELBO, "mean_field": TraceMeanField_ELBO}


def importance_traces_taken(monkeypatch) -> list[None]:
    """A list that grows by one whenever Pyro's path builds its traces (get_importance_trace)."""
    calls: list[None] = []
    original = pyro.infer.trace_elbo.get_importance_trace

    def counted(*args, **kwargs):
        calls.append(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(pyro.infer.trace_elbo, "get_importance_trace", counted)
    return calls


def assert_pyros_loss_and_gradients(
    name: str, particles: int, model, guide, x: Tensor, params: list[Tensor], seed: int
) -> tuple[Tensor, ...]:
    """Ours and Pyro's class on the same seed, validation off: the same loss value and the same
    gradients of ``params``. Returns our gradients."""
    reference = PYRO_CLASSES[name](
        num_particles=particles, vectorize_particles=True, max_plate_nesting=1
    )
    results = []
    for estimator in (make_estimator(name, particles=particles), reference):
        pyro.set_rng_seed(seed)
        with pyro.validation_enabled(False):
            loss = estimator.differentiable_loss(model, guide, x)
        results.append((loss, torch.autograd.grad(loss, params)))
    (loss, grads), (expected, expected_grads) = results
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)
    return grads


@pytest.mark.parametrize("particles", [1, 4])
@pytest.mark.parametrize(
    "name, prior, masked",
    [
        ("trace", Model, False),
        ("trace", Model, True),
        ("mean_field", Model, False),
        ("mean_field", Model, True),
        ("mean_field", CauchyModel, False),
    ],
)
def test_fast_path_is_pyros_estimator_on_the_same_draws(
    ppca: PPCA, x: Tensor, monkeypatch, name: str, prior: type[Model], masked: bool, particles: int
) -> None:
    # With validation off and a reparameterized guide, trace and mean_field sum the sites' scaled
    # log densities themselves (the analytic KL for Normal ‖ Normal, log q − log p for the Cauchy
    # prior) instead of going through Pyro's get_importance_trace. Subsampling (N = 100, B = 8),
    # β = 0.5, a mask over some points and k vectorized particles all enter both sides.
    # Same seed, same draws, the same sum in the same order: the values and gradients agree to
    # float32 rounding (measured: bit for bit).
    model, guide = prior(ppca, full_size=100, beta=0.5), Guide(ppca, 0.3, full_size=100, beta=0.5)
    params = [*model.parameters(), *guide.parameters()]
    mask = torch.arange(len(x)) % 3 != 0
    run_model, run_guide = (
        (poutine.mask(model, mask=mask), poutine.mask(guide, mask=mask))
        if masked
        else (model, guide)
    )
    taken = importance_traces_taken(monkeypatch)
    assert_pyros_loss_and_gradients(name, particles, run_model, run_guide, x, params, seed=11)
    assert len(taken) == 1  # Pyro's reference only: ours took the fast path
    # through the ELBO module, as training runs it
    pyro.set_rng_seed(11)
    with pyro.validation_enabled(False):
        module_loss = make_estimator(name, particles=particles)(model, guide)(x)
    pyro.set_rng_seed(11)
    with pyro.validation_enabled(False):
        direct = make_estimator(name, particles=particles).differentiable_loss(model, guide, x)
    assert module_loss.item() == direct.item() and len(taken) == 1


# (mean_field with k > 1 hits a torch bug, KL(Bernoulli ‖ Bernoulli) of unequal batch shapes, on
# Pyro's path as well)
@pytest.mark.parametrize("name, particles", [("trace", 1), ("trace", 3), ("mean_field", 1)])
def test_non_reparameterized_guides_get_pyros_estimator(
    x: Tensor, monkeypatch, name: str, particles: int
) -> None:
    # A Bernoulli latent has no rsample: Pyro's path runs on the draws the guide already made
    # (replayed), so value and gradients equal Pyro's on the same seed; trace's guide gradient is
    # then the score-function surrogate's, which the fast path's sum would not give.
    logits = torch.linspace(-1.0, 1.0, len(x)).requires_grad_()
    shift = torch.ones(x.shape[-1], requires_grad=True)

    def model(x: Tensor) -> None:
        with pyro.plate("data", 100, subsample=torch.arange(len(x))):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1) * shift, 1.0).to_event(1), obs=x)

    def guide(x: Tensor) -> None:
        with pyro.plate("data", 100, subsample=torch.arange(len(x))):
            pyro.sample("c", dist.Bernoulli(logits=logits))

    taken = importance_traces_taken(monkeypatch)
    grads = assert_pyros_loss_and_gradients(
        name, particles, model, guide, x, [logits, shift], seed=5
    )
    assert len(taken) == 2 and grads[0].abs().max() > 0


@pytest.mark.parametrize("name", ["iwae", "renyi", "stl", "dreg"])
def test_the_data_plate_is_taken_by_name_as_log_px_takes_it(name: str) -> None:
    """z and x in plates "a" (points) and "b" (coordinates); the guide is the exact posterior
    N(x/2, 1/2), so every weight is p(x) and each bound is exactly Σ_a log p(x_a), with
    x_a ~ N(0, 2) per coordinate. Without the name the plate is ambiguous."""

    def model(x: Tensor) -> None:
        with pyro.plate("a", x.shape[0], dim=-2), pyro.plate("b", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: Tensor) -> None:
        with pyro.plate("a", x.shape[0], dim=-2), pyro.plate("b", x.shape[1], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))

    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="cannot tell the data plate"):
        make_estimator(name, max_plate_nesting=2)(model, guide)(x)
    loss = make_estimator(name, max_plate_nesting=2, data_plate="a")(model, guide)(x)
    exact = dist.Normal(0.0, 2**0.5).log_prob(x).sum()
    torch.testing.assert_close(-loss, exact, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["stl", "dreg"])
@pytest.mark.parametrize(
    "prior, family", [(dist.Normal, dist.Normal), (dist.LogNormal, dist.LogNormal)]
)
def test_path_estimators_on_an_autoguide_equal_the_same_guide_written_by_hand(
    name: str, prior, family
) -> None:
    """AutoNormal draws u ~ N(loc, scale) (an auxiliary site) and sets z = T(u) in a Delta site
    with log_density log |∂T⁻¹/∂z|: for a real z, T = id; for a positive one, z = exp(u), the
    LogNormal(loc, scale) written by hand. On the same draws (seed), both guides give the same
    loss and the same path gradient, sample by sample. Hooking the Delta's value as well as u
    multiplied DReG's weight twice; detaching its log_density dropped the Jacobian's path term
    (STL's gradient was then 1 per point at the exact posterior)."""
    x = torch.tensor([-1.0, 0.5, 2.0])

    def model(x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior(0.0, 1.0))
            pyro.sample("x", dist.Normal(z if prior is dist.Normal else z.log(), 1.0), obs=x)

    auto = AutoNormal(model, init_scale=0.5)
    auto(x)
    with torch.no_grad():  # the exact posterior of u = T⁻¹(z) shifted: N(x/2 + 0.3, 1/2)
        auto.locs.z = x / 2 + 0.3
        auto.scales.z = torch.full((len(x),), 0.5**0.5)

    def by_hand(x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("z", family(auto.locs.z, auto.scales.z))

    params = list(auto.parameters())
    grads = {}
    for guide in (auto, by_hand):
        pyro.set_rng_seed(2)
        loss = make_estimator(name, particles=4)(model, guide)(x)
        grads[guide] = loss, torch.autograd.grad(loss, params)
    (loss_auto, grad_auto), (loss_hand, grad_hand) = grads[auto], grads[by_hand]
    torch.testing.assert_close(loss_auto, loss_hand)
    for a, b in zip(grad_auto, grad_hand):
        assert b.abs().max() > 0.01  # off the posterior: a real gradient, not 0 = 0
        torch.testing.assert_close(a, b)
