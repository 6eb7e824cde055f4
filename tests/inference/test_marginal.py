"""Importance-sampled log p(x) against the closed forms of probabilistic PCA."""

from __future__ import annotations

import functools
import math
import os
import signal
import weakref
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppca import PPCA
from pyro import poutine

from inference.marginal import (
    MarginalResult,
    chunk_size_for_budget,
    estimate_from_log_weights,
    log_marginal_likelihood,
    measure_bytes_per_particle,
)

MIB = 2**20


@pytest.fixture
def ppca() -> PPCA:
    return PPCA.make(P=6, d=2, sigma=0.5)


def mismatched(ppca: PPCA):  # type: ignore[no-untyped-def]
    """A guide 1.25 posterior s.d. off in the mean and 1.5x too wide: ESS/K ≈ 0.4, light tails."""
    return functools.partial(ppca.guide, loc_shift=0.3, scale_mult=1.5)


def test_exact_posterior_guide_gives_exact_log_px(ppca: PPCA) -> None:
    x = ppca.sample(50)
    r = log_marginal_likelihood(ppca.model, ppca.guide, x, num_samples=200)
    exact = ppca.log_px(x)
    # With q = p(z|x) every log w_k equals log p(x) in exact arithmetic. In float32 each of the
    # ~20 operations per weight rounds by at most 2⁻²⁴ relative to terms of size |log w| ≲ 30,
    # so 1e-5·(1 + |log p|) (about 80 float32 ulps) bounds the difference.
    torch.testing.assert_close(r.log_px, exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.elbo, exact, rtol=1e-5, atol=1e-5)
    assert r.stderr.max() < 1e-5
    torch.testing.assert_close(r.ess, torch.full_like(r.ess, 200.0), rtol=1e-6, atol=0)


def test_mismatched_guide_is_within_4_standard_errors(ppca: PPCA) -> None:
    n, K = 400, 100
    x = ppca.sample(n)
    r = log_marginal_likelihood(ppca.model, mismatched(ppca), x, num_samples=K)
    z = (r.log_px - ppca.log_px(x)) / r.stderr
    # Non-trivial: the weights really vary (s.e. about 0.12 nats, ESS ≈ 0.4 K), and the Jensen
    # bias −Var(w)/(2Kμ²) ≈ −stderr²/2 ≈ −0.007 is small against it.
    assert r.stderr.mean() > 0.05 and r.ess.mean() < 0.7 * K
    # Calibrated, not inflated: the z-scores spread like N(0, 1) (s.d. of the sample s.d. of
    # 400 normal draws is 1/sqrt(800) ≈ 0.035; the bounds leave 6 of those for the delta method).
    assert 0.8 < z.std().item() < 1.25
    # Under a correct stderr a point falls outside 4 s.e. with probability 6e-5 (normal); allow
    # p = 1e-3 for the skew of log p̂ at finite K. The points are independent, so the count is
    # at most Binomial(n, p); take the smallest bound whose tail probability is below 1e-3.
    p = 1e-3
    bound = next(c for c in range(n) if _binomial_tail(n, p, c) < 1e-3)
    assert int((z.abs() > 4).sum()) <= bound


def _binomial_tail(n: int, p: float, c: int) -> float:
    """P(X > c) for X ~ Binomial(n, p)."""
    return 1.0 - sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(c + 1))


def test_bounds_increase_with_particles_up_to_exact(ppca: PPCA) -> None:
    x = ppca.sample(400)
    guide = mismatched(ppca)
    r5 = log_marginal_likelihood(ppca.model, guide, x, num_samples=5)
    r10 = log_marginal_likelihood(ppca.model, guide, x, num_samples=10)
    exact = ppca.log_px(x)
    # Jensen on the same particles: mean log w ≤ log mean w, exactly, point by point.
    assert (r5.elbo <= r5.log_px + 1e-9).all()
    # E[IS_5] ≤ E[IS_10] ≤ log p(x): compare paired per-point differences, mean ≥ −4 s.e.
    for lower, upper in ((r5.log_px, r10.log_px), (r10.log_px, exact)):
        diff = upper - lower
        assert diff.mean() > -4 * diff.std() / math.sqrt(len(diff))
    assert exact.mean() - r5.elbo.mean() > 0.5  # the KL gap is real, so the chain says something


def _rss_growth_mib(fn) -> float:  # type: ignore[no-untyped-def]
    """Peak resident memory of this process during fn() above its resident memory before."""

    def status(key: str) -> float:
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith(key)).split()[1]) / 1024

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux peak-RSS reset")
def test_peak_memory_does_not_grow_with_particles(ppca: PPCA) -> None:
    x = ppca.sample(50)
    budget = 2.0  # MiB; unchunked, K=16000 particles here would take about 150 MiB
    run = functools.partial(
        log_marginal_likelihood, ppca.model, mismatched(ppca), x, memory_budget_mb=budget
    )
    run(num_samples=100)  # warm-up: first-call allocations are not the estimator's
    growth = {K: _rss_growth_mib(lambda K=K: run(num_samples=K)) for K in (1000, 16000)}
    assert growth[16000] <= growth[1000] + budget, growth
    assert growth[16000] <= 2 * budget, growth


@pytest.mark.timing
def test_a_ctrl_c_landing_in_a_finalizer_of_the_memory_probe_still_interrupts() -> None:
    """The probe's per-tensor finalizers are where a Ctrl-C is likeliest to land, and Python drops
    a KeyboardInterrupt raised in one ("Exception ignored in: <finalize object>"): the evaluation
    would go on. Here the signal arrives while a finalizer runs, on the probe's last call.

    Ctrl-C raises KeyboardInterrupt in a foreground Python; pytest started with SIGINT ignored
    (`make test &` from a script, nohup: the shell ignores it for background commands) would
    hold it and deliver it to "ignore", so the test sets Python's default handler itself."""
    calls = []

    def log_weights(k: int) -> torch.Tensor:
        calls.append(k)
        temporary = torch.randn(k, 3)
        if len(calls) == 3:
            weakref.finalize(temporary, os.kill, os.getpid(), signal.SIGINT)
        return temporary.sum(1, keepdim=True)

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            measure_bytes_per_particle(log_weights)
        assert calls == [1, 2, 4]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_global_latent_outside_data_plate_raises() -> None:
    def model(x: torch.Tensor) -> None:
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(theta, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("theta", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'theta' is outside the data plate 'data'"):
        log_marginal_likelihood(model, guide, torch.zeros(5), num_samples=10)


def test_data_plate_is_chosen_by_name_when_ambiguous() -> None:
    """z and x both sit in plates "a" and "b": per point of "a" means summing over "b"."""

    def model(x: torch.Tensor) -> None:
        with pyro.plate("a", x.shape[0], dim=-2), pyro.plate("b", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:  # the exact posterior N(x/2, 1/2)
        with pyro.plate("a", x.shape[0], dim=-2), pyro.plate("b", x.shape[1], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))

    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"cannot tell the data plate among \['a', 'b'\]"):
        log_marginal_likelihood(model, guide, x, num_samples=10, max_plate_nesting=2)
    r = log_marginal_likelihood(
        model, guide, x, num_samples=10, max_plate_nesting=2, data_plate="a"
    )
    exact = dist.Normal(0.0, 2**0.5).log_prob(x).sum(-1).double()  # x ~ N(0, 2) marginally
    torch.testing.assert_close(r.log_px, exact, rtol=1e-5, atol=1e-5)  # float32, as above


def test_observations_outside_any_plate_raise() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="the observed sites share no plate"):
        log_marginal_likelihood(model, guide, torch.zeros(5), num_samples=10)


def test_budget_too_small_for_one_particle_raises(ppca: PPCA) -> None:
    assert chunk_size_for_budget(1000, 1.0, 5000) == MIB // 1000
    assert chunk_size_for_budget(1000, 1.0, 7) == 7
    with pytest.raises(ValueError, match="one particle needs 2 MiB"):
        chunk_size_for_budget(2 * MIB, 1.0, 5000)
    with pytest.raises(ValueError, match="too small for one particle"):
        log_marginal_likelihood(ppca.model, ppca.guide, ppca.sample(100), memory_budget_mb=1e-3)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 100, 1000])
def test_streaming_accumulator_matches_direct_logsumexp(chunk_size: int) -> None:
    K, B = 100, 7
    g = torch.Generator().manual_seed(3)
    lw = 30.0 * torch.randn(K, B, generator=g, dtype=torch.float64)  # weights over ~100 orders of e
    lw[::3, 1] = -math.inf  # zero weights
    lw[:, 2] = -math.inf  # a point of zero probability
    lw[:, 6] -= 800.0  # tiny weights after zero ones only: exp(lw) underflows without the max
    lw[: K // 2, 6] = -math.inf
    requested = []

    def log_weights(k: int) -> torch.Tensor:
        start = sum(requested)
        requested.append(k)
        return lw[start : start + k]

    r = estimate_from_log_weights(log_weights, K, chunk_size)
    assert sum(requested) == K and max(requested) <= chunk_size
    ok = [0, 1, 3, 4, 5, 6]
    direct = torch.logsumexp(lw, 0) - math.log(K)
    torch.testing.assert_close(r.log_px[ok], direct[ok], rtol=1e-12, atol=1e-12)
    assert r.log_px[2] == -math.inf
    w = torch.softmax(lw[:, ok], 0)  # normalized weights
    torch.testing.assert_close(r.ess[ok], 1 / w.square().sum(0), rtol=1e-10, atol=0)
    # stderr² = unbiased sample variance of w over K (mean w)², from its definition.
    stderr = (w.var(0) / (K * w.mean(0).square())).sqrt()
    torch.testing.assert_close(r.stderr[ok], stderr, rtol=1e-10, atol=0)
    torch.testing.assert_close(r.elbo[[0, 3, 4, 5]], lw[:, [0, 3, 4, 5]].mean(0))


class _LinearGuide(torch.nn.Module):
    """The exact amortized posterior as an nn.Module guide, q(z|x) = N(A x + c, s)."""

    def __init__(self, ppca: PPCA, N: int, beta: float) -> None:
        super().__init__()
        self.A, self.c, self.s = ppca.linear_encoder()
        self.N, self.beta = N, beta

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        with pyro.plate("data", self.N, subsample=idx), poutine.scale(scale=self.beta):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.s).to_event(1))


def test_subsample_scale_and_beta_do_not_enter(ppca: PPCA) -> None:
    N, beta = 10_000, 0.1  # plate scale N/B = 200 and a KL weight β on z in model and guide
    x, idx = ppca.sample(50), torch.arange(50)

    def model(x: torch.Tensor, idx: torch.Tensor) -> None:
        with pyro.plate("data", N, subsample=idx):
            with poutine.scale(scale=beta):
                z = pyro.sample("z", dist.Normal(torch.zeros(ppca.d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ ppca.W.T + ppca.b, ppca.sigma).to_event(1), obs=x)

    r = log_marginal_likelihood(model, _LinearGuide(ppca, N, beta), x, idx, num_samples=20)
    torch.testing.assert_close(r.log_px, ppca.log_px(x), rtol=1e-5, atol=1e-5)  # float32, as above


def test_nested_plates_sum_within_each_point(ppca: PPCA) -> None:
    """x in a "features" plate inside "data": the data plate is found, features are summed."""

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, ppca.d), 1.0).to_event(1))
            with pyro.plate("features", ppca.P, dim=-1):
                loc = (z @ ppca.W.T + ppca.b).squeeze(-2)  # (particles, B, P): B at dim -2
                pyro.sample("x", dist.Normal(loc, ppca.sigma), obs=x)

    def guide(x: torch.Tensor) -> None:
        loc, scale = ppca.posterior(x)
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(loc.unsqueeze(-2), scale).to_event(1))

    x = ppca.sample(30)
    r = log_marginal_likelihood(model, guide, x, num_samples=20, max_plate_nesting=2)
    torch.testing.assert_close(r.log_px, ppca.log_px(x), rtol=1e-5, atol=1e-5)  # float32, as above


def test_model_latent_missing_from_guide_is_drawn_from_its_prior(ppca: PPCA) -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("u", dist.Normal(0.0, 1.0))  # x does not depend on u
            z = pyro.sample("z", dist.Normal(torch.zeros(ppca.d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ ppca.W.T + ppca.b, ppca.sigma).to_event(1), obs=x)

    x = ppca.sample(30)
    with pytest.warns(UserWarning, match="in model but not guide"):  # Pyro's validation notices
        r = log_marginal_likelihood(model, ppca.guide, x, num_samples=20)
    torch.testing.assert_close(r.log_px, ppca.log_px(x), rtol=1e-5, atol=1e-5)


def test_result_summary_and_cat() -> None:
    def result(values: list[float]) -> MarginalResult:
        t = torch.tensor(values, dtype=torch.float64)
        return MarginalResult(
            log_px=t, stderr=0.1 * t.abs(), ess=t.abs(), elbo=t - 1, num_samples=10
        )

    r = MarginalResult.cat([result([-1.0, -2.0]), result([-3.0, -6.0])])
    s = r.summary()
    assert s["log_px"] == -3.0 and s["elbo"] == -4.0 and s["num_points"] == 4
    assert s["log_px_sem"] == pytest.approx(math.sqrt(14 / 3) / 2)  # sample s.d. over sqrt(n)
    assert str(r).startswith("log p(x) = -3.00 ± 1.08 (K=10, 4 points")
    with pytest.raises(ValueError, match="share num_samples"):
        MarginalResult.cat([r, MarginalResult(r.log_px, r.stderr, r.ess, r.elbo, num_samples=5)])
