"""Priors: the matmul mixture density against MixtureSameFamily, the VampPrior's density against
its closed form, and VampPrior training on digits."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from inference import make_estimator
from pyro_vae.components.priors import PRIORS
from pyro_vae.data import DATASETS
from pyro_vae.priors import DiagonalNormalMixture, VampPrior
from pyro_vae.spec import load_spec
from pyro_vae.vae import VAE


def mixture_parameters(
    components: int, dim: int, seed: int, spread: float = 1.0, sigma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (logits, locs ~ N(0, spread²), scales = sigma·e^(0.3 ε)) of a diagonal mixture."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(components, generator=g, dtype=torch.float64),
        spread * torch.randn(components, dim, generator=g, dtype=torch.float64),
        sigma * torch.exp(0.3 * torch.randn(components, dim, generator=g, dtype=torch.float64)),
    )


def explicit_mixture(
    logits: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor
) -> dist.TorchDistribution:
    """The same mixture scored through an explicit (…, K, D) tensor."""
    return dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1)
    )


@pytest.mark.parametrize("batch", [(), (5,)])  # (5,): expanded as the data plate does
@pytest.mark.parametrize("z_shape", [(8,), (5, 8), (64, 5, 8), (64, 1, 8)])
def test_matmul_mixture_density_equals_the_explicit_mixture(batch, z_shape):
    params = mixture_parameters(20, 8, seed=0)
    z = 2 * torch.randn(z_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = DiagonalNormalMixture(*params).expand(batch)
    slow = explicit_mixture(*params).expand(batch)
    assert fast.batch_shape == batch and fast.event_shape == (8,)
    assert fast.sample((3,)).shape == (3, *batch, 8)
    expected = slow.log_prob(z)
    assert fast.log_prob(z).shape == expected.shape
    # float64 rounding of the expanded terms (≲ 10³ here) is ~10⁻¹³
    assert torch.allclose(fast.log_prob(z), expected, rtol=0, atol=1e-10)
    low = DiagonalNormalMixture(*(t.float() for t in params)).expand(batch).log_prob(z.float())
    # |log p| ≤ 64 here (float32 ulp 7.6·10⁻⁶) and the expanded terms Σ_d (z̃² + μ̃²)/σ² reach
    # ~10³ (ulp 6·10⁻⁵): 2·10⁻⁴ is a few ulps of the largest term (measured: 9·10⁻⁶)
    assert torch.allclose(low.double(), expected, rtol=0, atol=2e-4)


def test_matmul_mixture_gradients_equal_the_explicit_mixtures():
    params = mixture_parameters(20, 8, seed=2)
    g = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(64, 5, 8, generator=g, dtype=torch.float64)
    weights = torch.rand(64, 5, generator=g, dtype=torch.float64)  # a generic linear functional
    grads = []
    for make in (DiagonalNormalMixture, explicit_mixture):
        inputs = [t.clone().requires_grad_() for t in (z, *params)]
        log_p = make(*inputs[1:]).expand((5,)).log_prob(inputs[0])
        grads.append(torch.autograd.grad((weights * log_p).sum(), inputs))
    for fast, slow in zip(*grads):  # gradients of size ≤ 10², float64: 10⁻¹⁰ is ~10⁴ ulps
        assert torch.allclose(fast, slow, rtol=0, atol=1e-10)


def test_matmul_mixture_keeps_no_point_by_component_by_dimension_tensor():
    params = [t.requires_grad_() for t in mixture_parameters(20, 8, seed=4)]
    z = torch.randn(64, 5, 8, dtype=torch.float64, requires_grad=True)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        DiagonalNormalMixture(*params).expand((5,)).log_prob(z)
    assert max(saved) <= 64 * 5 * 20  # (…, K); the explicit mixture keeps (…, K, D) tensors


@pytest.mark.parametrize("together", [False, True])
def test_centring_and_rescoring_undo_the_cancellation_in_float32(together):
    """Tight components (σ ≈ 0.05) at |μ| ≈ 3 in D = 50, so the expanded terms reach ~10⁵ and
    float32 rounds them at ~10⁻², while log p ≈ -90. Apart (μ_k ~ N(0, 3²)) one component carries
    each point's mass and its rescoring fixes it; together (all μ_k within 0.3σ of one point
    ~ N(0, 3²), as the VampPrior's pseudo-inputs start) all carry it and the centring fixes it."""
    logits, locs, scales = mixture_parameters(40, 50, seed=5, spread=3.0, sigma=0.05)
    g = torch.Generator().manual_seed(6)
    if together:
        locs = locs[0] + 0.015 * torch.randn(40, 50, generator=g, dtype=torch.float64)
    k = torch.randint(40, (400,), generator=g)  # points in the components, as q(z|x) draws are
    z = locs[k] + scales[k] * torch.randn(400, 50, generator=g, dtype=torch.float64)
    expected = explicit_mixture(logits, locs, scales).log_prob(z)
    low = DiagonalNormalMixture(logits.float(), locs.float(), scales.float()).log_prob(z.float())
    # float32 ulp at |log p| ≈ 90 is 7.6·10⁻⁶; the explicit float32 mixture is off by up to 7·10⁻⁵
    # here and so is this one, while without the rescoring (apart) or the centring (together) it
    # is off by 2-7·10⁻²
    assert torch.allclose(low.double(), expected, rtol=0, atol=1e-3)


def test_matmul_mixture_takes_one_set_of_components():
    logits, locs, scales = mixture_parameters(4, 3, seed=0)
    with pytest.raises(ValueError, match="locs, scales"):
        DiagonalNormalMixture(logits.expand(2, 4), locs.expand(2, 4, 3), scales.expand(2, 4, 3))


def explicit_vamp_log_density(prior: VampPrior, z: torch.Tensor) -> torch.Tensor:
    """log (1/K) Σ_k Π_d N(z_d; μ_kd, σ_kd²) by hand in float64, (μ, σ) = encoder(u_k)."""
    loc, scale = (t.double() for t in prior.encoder(prior.pseudo_inputs))
    z = z.double().unsqueeze(-2)  # (..., 1, D) against the K components (K, D)
    log_normal = (-0.5 * math.log(2 * math.pi) - scale.log() - (z - loc) ** 2 / (2 * scale**2)).sum(
        -1
    )
    return log_normal.logsumexp(-1) - math.log(loc.shape[0])


def small_vamp() -> VAE:
    data = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    return VAE.build(
        (6,),
        train_data=data,
        latent_dim=3,
        prior={"name": "vamp", "pseudo_inputs": 5},
        likelihood="continuous_bernoulli",
        encoder={"name": "mlp", "hidden": [8]},
        decoder={"name": "mlp", "hidden": [8]},
    )


def test_vamp_density_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    vae = small_vamp()
    with torch.no_grad():  # spread the pseudo-inputs so that the components differ
        vae.prior.unclipped.uniform_(0, 1)
    z = 2 * torch.randn(4, 7, 3)
    # float32 against float64 at log densities of order 10: 1e-5 relative is ~80 float32 ulps.
    assert torch.allclose(
        vae.prior().log_prob(z).double(),
        explicit_vamp_log_density(vae.prior, z),
        rtol=1e-5,
        atol=1e-5,
    )


def test_the_model_site_scores_each_particle_and_point_with_the_explicit_mixture():
    vae = small_vamp()
    x = torch.rand(5, 6)
    with pyro.plate("particles", 3, dim=-2):  # vectorized particles outside the data plate
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    site = model_trace.nodes["z"]
    assert site["value"].shape == (3, 5, 3)
    assert torch.allclose(
        site["unscaled_log_prob"].double(),
        explicit_vamp_log_density(vae.prior, site["value"]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_pseudo_inputs_start_together_near_the_bottom_of_the_data_range_and_stay_in_it():
    data = 3 + 4 * torch.rand(50, 10, generator=torch.Generator().manual_seed(0))  # in [3, 7]
    lo, hi = data.min().item(), data.max().item()
    prior = PRIORS.instantiate(
        PRIORS.parse({"name": "vamp", "pseudo_inputs": 200}, "prior"), "prior"
    ).build(2, torch.nn.Identity(), data)
    u = prior.pseudo_inputs
    level = (u - lo) / (hi - lo)
    # 2000 draws of 0.05 + 0.01 ε: 0.001 is 4.5 standard errors of their mean (0.01/√2000) and 6
    # of their standard deviation (0.01/√4000)
    assert abs(level.mean().item() - 0.05) < 0.001
    assert abs(level.std().item() - 0.01) < 0.001
    with torch.no_grad():
        prior.unclipped.add_(torch.linspace(-10, 10, 10))
    u = prior.pseudo_inputs
    assert u.min().item() == lo and u.max().item() == hi


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"pseudo_inputs": 0}, "pseudo_inputs"),
        ({"init_level": 1.5}, "init_level"),
        ({"init_std": -0.1}, "init_std"),
        ({"init_std": math.inf}, "init_std"),
    ],
)
def test_vamp_rejects_out_of_range_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        PRIORS.instantiate(PRIORS.parse({"name": "vamp", **params}, "prior"), "prior")


def train_on_digits(prior: str, epochs: int) -> tuple[float, int]:
    """(validation ELBO averaged over 16 draws per point, active units) after ``epochs`` of the
    example config's network with the one-sample ELBO, Adam lr 3e-3, batch 64."""
    spec = load_spec("examples/configs/prior-vamp.yaml", [f"prior.name={prior}"])
    bundle = DATASETS.instantiate(spec.data, "data").load()
    torch.manual_seed(0)
    vae = VAE.from_spec(spec, bundle.shape, bundle.levels, bundle.train)
    vae.num_data = len(bundle.train)
    loss = make_estimator("trace")(vae.model, vae.guide)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x in bundle.loader("train", 64, True):
            opt.zero_grad()
            loss(x).backward()
            opt.step()
    with torch.no_grad():
        elbo = torch.stack([vae.elbo_terms(bundle.val).elbo for _ in range(16)]).mean().item()
        loc, _ = vae.encode(bundle.val)
    return elbo, int((loc.var(0) > 0.01).sum())


def test_vamp_prior_does_not_collapse_on_digits_and_matches_the_standard_normal():
    vamp_elbo, vamp_active = train_on_digits("vamp", epochs=25)
    normal_elbo, _ = train_on_digits("standard_normal", epochs=25)
    # A collapsed VAE (q(z|x) = p(z), the decoder ignoring z) scores ≈ -27.2 nats here against
    # ≈ -24.7 for N(0, I) after 25 epochs. Each ELBO averages 16 draws for each of 180 points, a
    # Monte Carlo standard error < 0.1 nats; over four seeds vamp − N(0, I) was +0.05 to -0.53
    # (the VampPrior starts to use z a few epochs later, and is ahead by 60 epochs): 1 nat of slack.
    assert vamp_active > 0
    assert vamp_elbo > normal_elbo - 1.0, (vamp_elbo, normal_elbo)


def test_flow_prior_log_p_is_the_change_of_variables():
    """log p(z) = log N(f(z); 0, I) + log |det ∂f/∂z|, the Jacobian by central differences in
    float64 (error O(h²) ≈ 1e-10); f the MAF's density direction, away from its identity start."""
    prior = (
        PRIORS.instantiate(PRIORS.parse({"name": "flow", "flows": 2, "hidden": [8]}))
        .build(3, None, torch.zeros(1, 1))
        .double()
    )
    for p in prior.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    p_z = prior()
    z = torch.randn(4, 3, dtype=torch.float64)

    def f(v: torch.Tensor) -> torch.Tensor:
        for t in reversed(p_z.transforms):
            v = t.inv(v)
        return v

    h = 1e-5
    for point in z:
        jac = torch.stack(
            [
                (f(point + h * e) - f(point - h * e)) / (2 * h)
                for e in torch.eye(3, dtype=torch.float64)
            ],
            -1,
        )
        u = f(point)
        expected = (
            -0.5 * u.square().sum() - 1.5 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        )
        assert torch.allclose(p_z.log_prob(point), expected, atol=1e-7)
        assert abs(float(torch.linalg.slogdet(jac)[1].detach())) > 0.05  # not the identity
    p_z = prior.float()()  # Pyro's sequential inverse starts from float32 zeros
    draws = p_z.sample((5,))
    assert draws.shape == (5, 3) and torch.isfinite(p_z.log_prob(draws)).all()
