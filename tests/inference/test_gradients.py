"""Gradient statistics: the numbers are the mean, variance and SNR of the draws themselves."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppca import PPCA
from pyro.infer import RenyiELBO
from pyro.nn import PyroModule
from torch import Tensor, nn

from inference.estimators import make_estimator
from inference.gradients import GroupStatistics, gradient_statistics


class ShiftedModel(PyroModule):
    """PPCA of x − shift, with a learnable shift."""

    def __init__(self, ppca: PPCA) -> None:
        super().__init__()
        self.ppca, self.shift = ppca, nn.Parameter(torch.full((ppca.P,), 0.1))

    def forward(self, x: Tensor) -> None:
        self.ppca.model(x - self.shift)


class FreeGuide(PyroModule):
    """Non-amortized q(z_b) = N(loc_b, exp(log_scale)²)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.loc, self.log_scale = nn.Parameter(torch.zeros(n, d)), nn.Parameter(torch.zeros(d))

    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))


@pytest.fixture
def setup() -> tuple[ShiftedModel, FreeGuide, Tensor]:
    ppca = PPCA.make()
    return ShiftedModel(ppca), FreeGuide(5, ppca.d), ppca.sample(5)


def test_statistics_of_the_draws(setup) -> None:
    model, guide, x = setup
    estimator = make_estimator("iwae", particles=3)
    pyro.set_rng_seed(4)
    stats = gradient_statistics(model, guide, estimator, x, repeats=6)
    pyro.set_rng_seed(4)
    params = list(guide.parameters()) + list(model.parameters())
    losses, grads = [], []
    for _ in range(6):
        loss = estimator.differentiable_loss(model, guide, x)
        losses.append(loss.item())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).double())
    g, split = torch.stack(grads), guide.loc.numel() + guide.log_scale.numel()
    for name, cols in (("guide", slice(0, split)), ("model", slice(split, None))):
        group = stats.groups[name]
        torch.testing.assert_close(group.mean, g[:, cols].mean(0))
        torch.testing.assert_close(group.variance, g[:, cols].var(0))
        torch.testing.assert_close(group.snr, g[:, cols].mean(0).abs() / g[:, cols].std(0))
        assert group.median_snr == pytest.approx(group.snr.median().item())
    objective = -torch.tensor(losses, dtype=torch.float64)
    assert stats.objective_mean == pytest.approx(objective.mean().item())
    assert stats.objective_std == pytest.approx(objective.std().item())
    assert stats.repeats == 6 and stats.seconds_per_step > 0


def test_loss_and_grads_route_matches_and_leaves_parameters_alone(setup) -> None:
    # Pyro's RenyiELBO has no differentiable_loss: its gradients are read from .grad. Same draws,
    # same bound (no subsampling): the same statistics as ours, an independent implementation.
    model, guide, x = setup
    sentinel = [torch.full_like(p, 7.0) for p in guide.parameters()]
    for p, s in zip(guide.parameters(), sentinel):
        p.grad = s.clone()
    before = [p.detach().clone() for p in guide.parameters()]
    stats = {}
    for name, estimator in (
        (
            "pyro",
            RenyiELBO(alpha=0.5, num_particles=4, max_plate_nesting=1, vectorize_particles=True),
        ),
        ("ours", make_estimator("renyi", alpha=0.5, particles=4)),
    ):
        pyro.set_rng_seed(2)
        stats[name] = gradient_statistics(model, guide, estimator, x, repeats=4)
    for group in ("guide", "model"):  # float32 gradients, summed in different orders
        for field in ("mean", "variance"):
            torch.testing.assert_close(
                getattr(stats["pyro"].groups[group], field),
                getattr(stats["ours"].groups[group], field),
                rtol=1e-5,
                atol=1e-5,
            )
    assert stats["pyro"].objective_mean == pytest.approx(stats["ours"].objective_mean)
    for p, b, s in zip(guide.parameters(), before, sentinel):
        assert torch.equal(p, b) and torch.equal(p.grad, s)


def test_custom_groups_unused_parameters_and_errors(setup) -> None:
    model, guide, x = setup
    unused = torch.zeros(3, requires_grad=True)
    stats = gradient_statistics(
        model,
        guide,
        make_estimator("trace"),
        x,
        repeats=5,
        params={"loc": [guide.loc], "loc+unused": [guide.loc, unused]},
    )
    loc, both = stats.groups["loc"], stats.groups["loc+unused"]
    assert loc.mean.shape == (guide.loc.numel(),) and both.mean.shape == (guide.loc.numel() + 3,)
    torch.testing.assert_close(both.mean[:-3], loc.mean)
    assert both.snr[-3:].isnan().all()  # 0/0: never any gradient; left out of the summaries
    assert both.median_snr == pytest.approx(loc.median_snr)
    assert both.mean_snr == pytest.approx(loc.mean_snr)
    ppca = model.ppca
    with pytest.raises(ValueError, match="pass params="):
        gradient_statistics(ppca.model, ppca.guide, make_estimator("trace"), x, repeats=2)
    with pytest.raises(ValueError, match="repeats must be >= 2, got 1"):
        gradient_statistics(model, guide, make_estimator("trace"), x, repeats=1)


def test_exact_and_absent_gradients_are_left_out_of_the_snr_summaries() -> None:
    """SNR = |mean| / √variance per coordinate: ∞ for an exact gradient (variance 0), 0/0 for no
    gradient; the mean and median describe the noisy coordinates (here SNR 2 and 1)."""
    stats = GroupStatistics(
        mean=torch.tensor([2.0, 1.0, -0.5, 0.0], dtype=torch.float64),
        variance=torch.tensor([0.0, 0.25, 0.25, 0.0], dtype=torch.float64),
    )
    assert stats.snr[0] == torch.inf and stats.snr[3].isnan()
    assert stats.mean_snr == pytest.approx(1.5) and stats.median_snr == pytest.approx(1.0)
