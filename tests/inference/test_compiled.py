"""TracedLoss replays a Pyro loss as a trace: same values, gradients and draws as the eager loss,
and programs a trace cannot capture stay eager."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference.compiled import TracedLoss, TraceNotice
from inference.estimators import make_estimator


class Amortized(nn.Module):
    """x_n ~ N(W z_n, 0.5²), z_n ~ N(0, I) with an encoder guide, N = 100 in a subsampled plate."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Linear(2, 5)
        self.encoder = nn.Linear(5, 4)
        self.kl_scale = 1.0
        self.num_data = 100

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", self.num_data, subsample=torch.arange(len(x))):
            with pyro.poutine.scale(scale=self.kl_scale):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", self.num_data, subsample=torch.arange(len(x))):
            loc, raw = self.encoder(x).split(2, -1)
            with pyro.poutine.scale(scale=self.kl_scale):
                pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def _setup(name: str) -> tuple[Amortized, nn.Module, TracedLoss]:
    vae = Amortized()
    loss = make_estimator(name, particles=3 if name != "trace" else 1)(vae.model, vae.guide)
    return vae, loss, TracedLoss(loss, vae)


@pytest.mark.parametrize("name", ["trace", "mean_field", "iwae", "renyi", "stl", "dreg"])
def test_trace_matches_eager_values_gradients_and_draws(name: str) -> None:
    """Where the check refuses a trace (DReG: the trace's autodiff gets its surrogate's gradient
    wrong) the eager program runs: either way the losses and gradients are the eager ones."""
    vae, loss, traced = _setup(name)
    params = list(vae.parameters())
    batches = [torch.randn(8, 5) for _ in range(5)]
    with pyro.validation_enabled(False):
        for i, x in enumerate(batches):
            torch.manual_seed(i)
            want = loss(x)
            want_grads = torch.autograd.grad(want, params)
            after_eager = torch.get_rng_state()
            torch.manual_seed(i)
            with warnings.catch_warnings(record=True):
                got = traced(x)
            got_grads = torch.autograd.grad(got, params)
            # The same ops on the same draws, through eager autograd: bitwise equal.
            assert torch.equal(got, want)
            for g, w in zip(got_grads, want_grads):
                assert torch.equal(g, w)
            # Tracing and checking run under a forked generator: the draws stay in step.
            assert torch.equal(torch.get_rng_state(), after_eager)
    # Traced on the 2nd call, checked on the 3rd and used from then on; DReG's gradient hook is
    # Python, outside any trace, so its trace is refused (estimators.DReG.traceable is False).
    assert (len(traced.traces), len(traced.refused)) == ((0, 1) if name == "dreg" else (1, 0))
    assert getattr(loss.elbo, "traceable", True) == (name != "dreg")


def test_a_signature_is_traced_per_shape_and_key() -> None:
    _vae, _loss, traced = _setup("trace")
    with pyro.validation_enabled(False):
        for _ in range(3):
            traced(torch.randn(8, 5))
            traced(torch.randn(6, 5))  # the last, smaller batch of an epoch
            traced(torch.randn(8, 5), key=0.5)
        for beta in (0.1, 0.2, 0.3):  # a warm-up: each β once, never traced
            traced(torch.randn(8, 5), key=beta)
    assert len(traced.traces) == 3 and not traced.candidates


def test_the_scale_baked_into_a_trace_follows_the_key() -> None:
    """β of poutine.scale is a Python float in the trace: a new key must give a new trace."""
    vae, loss, traced = _setup("trace")
    x = torch.randn(8, 5)
    with pyro.validation_enabled(False):
        for beta in (1.0, 0.25):
            vae.kl_scale = beta
            for _ in range(3):
                torch.manual_seed(7)
                got = traced(x, key=beta)
            torch.manual_seed(7)
            assert got.item() == pytest.approx(loss(x).item(), rel=1e-5)


def test_a_data_dependent_program_is_refused_and_stays_eager() -> None:
    """A Python branch on the data's values is frozen by a trace; the check on the next batch
    sees it, warns, and keeps the eager program."""
    w = nn.Parameter(torch.ones(3))
    owner = nn.Module()
    owner.w = w

    def loss(x: torch.Tensor) -> torch.Tensor:
        sign = 1.0 if float(x.sum()) > 0 else -1.0
        return sign * (w * x).sum()

    traced = TracedLoss(loss, owner)
    up, down = torch.ones(3), -torch.ones(3)
    traced(up)
    traced(up)  # traced here, with the positive branch frozen
    with pytest.warns(UserWarning, match="runs eagerly"):
        assert traced(down).item() == pytest.approx(loss(down).item())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert traced(down).item() == pytest.approx(loss(down).item())
    assert not traced.traces and len(traced.refused) == 1


@pytest.mark.parametrize("change", ["kl_scale", "num_data", "particles"])
def test_changing_a_folded_constant_after_tracing_changes_the_loss_as_eager_does(change) -> None:
    """β (poutine.scale), N (the plate's N/B) and the particle count are Python values that a
    trace folds in. Changed after the trace is in use, with no key passed (the README's
    ``fast_loss(x)``), the traced loss is still bitwise the eager one on the same draws."""
    vae, loss, traced = _setup("iwae")
    x = torch.randn(8, 5)
    with pyro.validation_enabled(False):
        for _ in range(4):
            traced(x)
        assert len(traced.traces) == 1
        torch.manual_seed(3)
        old = loss(x)
        if change == "particles":
            loss.elbo.num_particles = 7
        else:
            setattr(vae, change, {"kl_scale": 0.3, "num_data": 1000}[change])
        for _ in range(4):
            torch.manual_seed(3)
            got = traced(x)
            torch.manual_seed(3)
            want = loss(x)
            assert torch.equal(got, want) and not torch.equal(want, old)
    assert len(traced.traces) == 2


def test_a_program_the_tracer_cannot_record_runs_eagerly_with_one_notice() -> None:
    """Like a spline-coupling flow (torch.jit.trace probes its ``Transform.sign``): tracing
    raises, the calls run eagerly, and one warning says so."""
    owner = nn.Linear(3, 1)

    def loss(x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise NotImplementedError("not traceable")
        return owner(x).sum()

    traced = TracedLoss(loss, owner)
    x = torch.ones(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = [traced(x) for _ in range(5)] + [traced(torch.ones(4, 3)) for _ in range(3)]
    notices = [w for w in caught if issubclass(w.category, TraceNotice)]
    assert (
        len(notices) == 1
        and "cannot be traced (NotImplementedError: not traceable)" in str(notices[0].message)
        and "\n" not in str(notices[0].message)
    )
    assert all(v.item() == pytest.approx(loss(x).item()) for v in values[:5])
    assert not traced.traces and len(traced.refused) == 2
