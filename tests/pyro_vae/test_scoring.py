"""The VAE's fast importance-sampling path against the generic traced evaluator."""

import math

import numpy as np
import pytest
import torch
from ppca import PPCA
from tiny_runs import TINY

from inference import log_marginal_likelihood
from inference.marginal import measure_bytes_per_particle
from pyro_vae.distributions import DiagonalNormal
from pyro_vae.networks import MIN_SCALE
from pyro_vae.prepared import prepare
from pyro_vae.scoring import Plan, evaluate, importance_log_px, particles_per_chunk, plan_chunks
from pyro_vae.spec import load_spec
from pyro_vae.vae import VAE


def small_vae(prior: str) -> tuple[VAE, torch.Tensor]:
    spec = load_spec(
        None,
        [
            "latent_dim=3",
            "encoder.hidden=[16]",
            "decoder.hidden=[16]",
            f"prior.name={prior}",
            "prior.pseudo_inputs=5" if prior == "vamp" else "beta=1",
        ],
    )
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
    measure_bytes_per_particle(vae.log_weights(x))  # the generic path's probes draw these
    fast = importance_log_px(vae, x, K, memory_budget_mb=64, plan=Plan(len(x), K))
    # the same standard-normal draws in the same (K, B, D) layout: equal to float32 rounding
    for name in ("log_px", "stderr", "ess", "elbo"):
        assert torch.allclose(getattr(fast, name), getattr(generic, name), rtol=1e-5, atol=1e-4), (
            name
        )


def test_fast_path_agrees_with_the_generic_path_within_monte_carlo_error():
    vae, x = small_vae("mixture")
    K = 2000
    generic = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=K)
    fast = importance_log_px(vae, x, K, memory_budget_mb=64, plan=Plan(1, K))  # other draws
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


def _keyed_rsample(self, sample_shape=torch.Size()):
    """Deterministic stand-in noise: ε[k, b, d] depends on the particle k, the dimension d and
    the point's own posterior mean, not on which other points share the call."""
    k = sample_shape[0]
    key = 1000.0 * self.loc.sum(-1, keepdim=True)  # (B, 1): one per point
    phase = (
        key
        + 1.7 * torch.arange(k, dtype=self.loc.dtype)[:, None, None]
        + 0.3 * torch.arange(self.loc.shape[-1], dtype=self.loc.dtype)
    )
    eps = 1.5 * torch.sin(phase)
    z = self.loc + self.scale * eps
    self._draw = (z, eps)
    return z


def test_batched_evaluation_at_small_k_equals_one_point_per_call_on_the_same_draws(monkeypatch):
    vae, x = small_vae("vamp")
    K = 10
    plan = plan_chunks(vae, x, K, memory_budget_mb=64)
    assert plan.particles == K and plan.points == len(x)  # small K: all 12 points in one call
    monkeypatch.setattr(DiagonalNormal, "rsample", _keyed_rsample)
    batched = importance_log_px(vae, x, K, memory_budget_mb=64, plan=plan)
    single = importance_log_px(vae, x, K, memory_budget_mb=64, plan=Plan(1, K))
    for name in ("log_px", "stderr", "ess", "elbo"):  # float32 matmuls on (K, B) vs (K, 1) rows
        assert torch.allclose(
            getattr(batched, name), getattr(single, name), rtol=1e-5, atol=1e-4
        ), name
    assert batched.log_px.unique().numel() == len(x)  # the points got their own estimates


def test_plan_puts_k_particles_of_as_many_points_as_fit_in_the_budget():
    vae, x = small_vae("standard_normal")
    x = x.repeat(50, 1)  # 600 points
    per_cell = measure_bytes_per_particle(vae.log_weights(x[:1]))  # one particle of one point
    budget = 1000.5 * per_cell / 2**20  # room for 1000 (particle, point) pairs
    big = plan_chunks(vae, x, 5000, budget)
    assert big == Plan(points=1, particles=1000)  # large K: one point, chunks of particles
    assert plan_chunks(vae, x, 10, budget) == Plan(points=100, particles=10)
    assert plan_chunks(vae, x[:30], 10, budget) == Plan(points=30, particles=10)


def test_standardized_log_px_on_the_data_scale_is_the_closed_form_plus_nothing_else(tmp_path):
    """A linear-Gaussian VAE of standardized data x' = (x − μ)/s with its exact posterior as the
    encoder: every importance weight equals p'(x'), so log p̂ is exact up to float32 rounding
    (~1e-4 nats on numbers of size ~10), and on the data's scale it must equal the closed form
    log N(x; μ + s⊙b, D(WWᵀ + σ²I)D), D = diag(s): log p'(x') − Σ log s, the log-Jacobian."""
    from pyro_vae.data import DATASETS

    ppca = PPCA.make(P=6, d=2, sigma=0.5)
    raw = 40.0 + ppca.sample(300) * torch.tensor([1.0, 3.0, 10.0, 0.5, 76.0, 2.0])
    np.save(tmp_path / "x.npy", raw.numpy())
    spec = load_spec(
        None,
        [
            "data.name=npz",
            f"data.path={tmp_path / 'x.npy'}",
            "data.binarize=none",
            "data.transform=standardize",
            "latent_dim=2",
            "encoder.hidden=[]",
            "decoder.hidden=[]",
            "likelihood.name=normal",
            "likelihood.learn=fixed",
            "likelihood.scale=0.5",
        ],
    )
    bundle = DATASETS.instantiate(spec.data, "data").load()
    assert bundle.log_jacobian == pytest.approx(-float(bundle.scale.double().log().sum()))
    vae = VAE.from_spec(spec, bundle.shape)
    A, c, s = ppca.linear_encoder()
    with torch.no_grad():
        enc, dec = vae.encoder.body[0], vae.decoder[0]
        enc.weight.zero_()
        enc.bias.copy_(torch.cat([c, (s - MIN_SCALE).expm1().log()]))  # softplus⁻¹(s − ε)
        enc.weight[:2] = A
        dec.weight.copy_(ppca.W)
        dec.bias.copy_(ppca.b)
    x_model, x_data = bundle.test, bundle.to_data(bundle.test)
    result = evaluate(
        vae,
        x_model,
        "test",
        num_samples=4,
        memory_budget_mb=64,
        log_jacobian=bundle.log_jacobian,
        model_scale=bundle.scale_name,
    )
    loc, scale = bundle.loc.double(), bundle.scale.double()
    W, b = ppca.W.double(), ppca.b.double()
    cov = (
        torch.diag(scale) @ (W @ W.T + 0.25 * torch.eye(6, dtype=torch.float64)) @ torch.diag(scale)
    )
    closed = torch.distributions.MultivariateNormal(loc + scale * b, cov).log_prob(x_data.double())
    assert torch.allclose(result.points.log_px, closed, atol=2e-3, rtol=0)
    assert torch.allclose(
        result.points.log_px - bundle.log_jacobian, ppca.log_px(x_model), atol=2e-3, rtol=0
    )  # the model's own scale
    assert result.log_px == pytest.approx(float(closed.mean()), abs=2e-3)
    assert result.model_scale == "standardized" and "standardized scale" in "\n".join(
        result.lines()
    )


def test_large_k_in_a_small_budget_runs_in_bounded_chunks(monkeypatch):
    vae = prepare(load_spec(None, TINY)).vae
    x = torch.bernoulli(torch.full((3, 64), 0.3), generator=torch.Generator().manual_seed(0))
    k, budget = 20_000, 0.05  # MiB: about a hundred particles of this VAE
    chunk = particles_per_chunk(vae, x[:1], k, budget)
    per_particle = measure_bytes_per_particle(vae.log_weights(x[:1]))
    assert chunk == budget * 2**20 // per_particle and 1 < chunk < k

    sizes: list[int] = []
    real = VAE.log_weights

    def counted(self, points, y=None):
        draw = real(self, points, y)
        return lambda n: sizes.append(n) or draw(n)

    monkeypatch.setattr(VAE, "log_weights", counted)
    small = importance_log_px(vae, x, k, budget)
    monkeypatch.undo()
    drawn = sizes[3:]  # after the three probes that measure the bytes per particle
    assert max(drawn) == chunk and sum(drawn) == 3 * k
    assert torch.isfinite(small.log_px).all() and (small.ess >= 1).all() and (small.ess <= k).all()
    # the chunking changes the draws, not the estimator: the same K in one chunk agrees within
    # 4 standard errors of the difference of two independent estimates
    whole = importance_log_px(vae, x, k, 512.0)
    se = (small.stderr**2 + whole.stderr**2).sqrt()
    assert ((small.log_px - whole.log_px).abs() <= 4 * se + 1e-9).all()
