"""The discrete-latent estimators (enum, reinforce, gumbel) against a closed form.

The model has one discrete latent per point, y_b ~ Cat(π), one-hot, and x_b | y_b ~ N(μ·y_b, σ²);
the guide q(y_b) = Cat(softmax(φ_b)) has a free row φ_b per point. With q_b = softmax(φ_b),

    ELBO = Σ_b Σ_c q_bc [log π_c + log N(x_b; μ_c, σ²) − log q_bc],

a finite sum, and its gradient with respect to φ comes from autograd on that sum: the exact
values every estimator is checked against (float64 throughout).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from inference.compare import compare_estimators
from inference.estimators import Gumbel, Relax, make_estimator
from inference.gradients import gradient_statistics

PI = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MU = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
SIGMA = 0.8
X = torch.tensor([0.3, 1.7, -0.9], dtype=torch.float64)
PHI = torch.tensor(
    [[0.2, -0.4, 0.1], [-0.3, 0.5, 0.3], [0.6, 0.0, -0.8]], dtype=torch.float64
)  # not the posterior, so that the gradient is far from zero


class Model(PyroModule):
    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.OneHotCategorical(probs=PI))
            pyro.sample("x", dist.Normal(y @ MU, SIGMA), obs=x)


class Guide(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.phi = nn.Parameter(PHI.clone())

    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.OneHotCategorical(logits=self.phi))


pytestmark = pytest.mark.usefixtures("one_thread")


def exact(guide: Guide) -> tuple[float, Tensor]:
    """The ELBO and its gradient with respect to φ, by the finite sum of the module docstring."""
    log_q = guide.phi.log_softmax(-1)
    log_joint = PI.log() + dist.Normal(MU, SIGMA).log_prob(X[:, None])
    elbo = (log_q.exp() * (log_joint - log_q)).sum()
    (grad,) = torch.autograd.grad(elbo, guide.phi)
    return elbo.item(), grad.flatten()


def draws(name: str, repeats: int, **params):
    """Mean and variance of ``repeats`` draws of the objective's gradient in φ (the loss's,
    negated), and the objective's mean and standard deviation."""
    model, guide = Model(), Guide()
    with pyro.validation_enabled(False):  # 2.5 times faster
        stats = gradient_statistics(
            model,
            guide,
            make_estimator(name, **params),
            X,
            repeats=repeats,
            params={"phi": [guide.phi]},
        )
    group = stats.groups["phi"]
    return -group.mean, group.variance, stats.objective_mean, stats.objective_std


def test_enum_is_the_exact_elbo_and_gradient():
    model, guide = Model(), Guide()
    loss = make_estimator("enum")(model, guide)(X)
    (grad,) = torch.autograd.grad(-loss, guide.phi)
    elbo, exact_grad = exact(guide)
    assert loss.item() == pytest.approx(-elbo, rel=1e-12)
    torch.testing.assert_close(grad.flatten(), exact_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        {"baseline": "none"},
        {"baseline": "average", "decay": 0.9},
        {"baseline": "leave_one_out", "particles": 4},
    ],
)
def test_reinforce_is_unbiased_within_its_monte_carlo_error(params):
    pyro.set_rng_seed(0)
    repeats = 1000
    mean, variance, objective, objective_std = draws("reinforce", repeats, **params)
    elbo, exact_grad = exact(Guide())
    # Each coordinate's mean over R independent draws has standard error √(Var/R); 9
    # coordinates within 4.5 s.e. each fail together by chance with probability below 9 · 7e-6.
    se = (variance / repeats).sqrt()
    assert ((mean - exact_grad.double()).abs() < 4.5 * se).all(), (mean, exact_grad, se)
    # The objective is the one-sample ELBO, unbiased for the exact ELBO: within 4.5 s.e.
    assert abs(objective - elbo) < 4.5 * objective_std / math.sqrt(repeats)


def test_a_baseline_lowers_reinforces_variance():
    pyro.set_rng_seed(1)
    plain = draws("reinforce", 500, baseline="none")[1]
    pyro.set_rng_seed(1)
    loo = draws("reinforce", 500, baseline="leave_one_out", particles=4)[1]
    # k = 4 particles alone divide the variance by 4; the baseline removes the mean of log w
    # (about −2.5 nats here), which dominates the learning signal: far more than 4 on the sum.
    assert loo.sum() < plain.sum() / 8, (loo.sum(), plain.sum())


def test_gumbels_bias_shrinks_with_the_temperature():
    """The mean gradient over R draws at fixed τ (rate 0) against the exact gradient: the bias
    ‖E g_τ − ∇ELBO‖ falls as τ does. Each bias is measured as the norm of the mean's error,
    whose Monte Carlo error is at most √(Σ Var / R); it grows as τ falls (so does the variance),
    so each lower τ is compared with the highest one."""
    repeats = 2000
    exact_grad = exact(Guide())[1].double()
    biases, errors = [], []
    for temperature in (2.0, 0.5, 0.1):
        pyro.set_rng_seed(0)
        mean, variance, _, _ = draws(
            "gumbel",
            repeats,
            temperature=temperature,
            final_temperature=temperature,
            rate=0.0,
        )
        biases.append((mean - exact_grad).norm().item())
        errors.append((variance.sum() / repeats).sqrt().item())
    # Measured here: biases 0.74, 0.36, 0.14 with errors 0.02, 0.06, 0.14. A lower τ's bias
    # sits below τ = 2's by more than 3 combined standard errors.
    for bias, error in zip(biases[1:], errors[1:]):
        assert bias + 3 * math.hypot(error, errors[0]) < biases[0], (biases, errors)


def test_gumbels_temperature_follows_its_schedule():
    est = Gumbel(temperature=2.0, final_temperature=0.5, rate=0.01)
    assert est.temperature == 2.0
    loss = est(Model(), Guide())
    for _ in range(3):  # each step with gradients counts; a step without (scoring) does not
        loss(X)
    with torch.no_grad():
        loss(X)
    assert est.step == 3 and est.temperature == pytest.approx(2.0 * math.exp(-0.03))
    est.anneal(100)
    assert est.temperature == pytest.approx(2.0 * math.exp(-1.0))
    est.anneal(10_000)
    assert est.temperature == 0.5


def test_straight_through_draws_one_hot_values_scored_as_the_categorical():
    """The straight-through value is a one-hot draw, and its log q the categorical one."""
    guide = Guide()
    with Relax(0.5, straight_through=True):
        trace = pyro.poutine.trace(guide).get_trace(X)
    y = trace.nodes["y"]["value"]
    assert torch.equal(y.sum(-1), torch.ones(3, dtype=y.dtype)) and set(y.unique().tolist()) == {
        0.0,
        1.0,
    }
    log_q = trace.nodes["y"]["fn"].log_prob(y)
    torch.testing.assert_close(log_q, (y * guide.phi.log_softmax(-1)).sum(-1))


def test_a_categorical_site_is_refused_by_gumbel():
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Categorical(probs=PI))

    with pytest.raises(ValueError, match="site 'y' is a Categorical"):
        make_estimator("gumbel").differentiable_loss(model, model, X)


def test_compare_runs_the_discrete_estimators_on_a_discrete_model():
    model, guide = Model(), Guide()
    elbo = exact(guide)[0]
    estimators = {
        "enum": make_estimator("enum"),
        "reinforce": make_estimator("reinforce", baseline="leave_one_out", particles=2),
        "gumbel": make_estimator("gumbel", temperature=0.5, final_temperature=0.5),
    }
    rows = compare_estimators(
        model, guide, estimators, X, repeats=200, params={"phi": [guide.phi]}, seed=0
    )
    by = {row["estimator"]: row for row in rows}
    assert list(by) == ["enum", "reinforce", "gumbel"]
    # enum is exact: every draw is the ELBO, and the gradient has no noise (its SNR, ∞, is left
    # out of the summary, which is then nan)
    assert by["enum"]["bound"] == pytest.approx(elbo, rel=1e-12)
    assert by["enum"]["bound_std"] < 1e-12 and math.isnan(by["enum"]["snr_phi"])
    # reinforce's bound is the one-sample ELBO: within 4.5 s.e. of the exact one
    assert abs(by["reinforce"]["bound"] - elbo) < 4.5 * by["reinforce"]["bound_stderr"]
    for row in rows[1:]:
        assert row["snr_phi"] > 0 and math.isfinite(row["snr_phi"]) and row["ms_per_step"] > 0
