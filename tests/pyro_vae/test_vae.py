"""The VAE's model and guide: every registry pairing trains; probabilistic PCA checks the math."""

import math

import pyro
import pytest
import torch
from ppca import PPCA
from pyro.infer import Trace_ELBO

from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.priors import PRIORS
from pyro_vae.registry import SpecError
from pyro_vae.spec import load_spec
from pyro_vae.vae import VAE

SHAPE = (1, 4, 4)


def data_for(likelihood: str, n: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, 16, generator=g)
    return {
        "bernoulli": (u > 0.5).float(),
        "continuous_bernoulli": u,
        "normal": torch.randn(n, 16, generator=g),
        "laplace": torch.randn(n, 16, generator=g),
        "categorical": torch.randint(0, 5, (n, 16), generator=g).float(),
        "discretized_logistic": torch.randint(0, 5, (n, 16), generator=g).float() / 4,
    }[likelihood]


def build(prior: str, likelihood: str, network: str = "mlp", **extra) -> VAE:
    overrides = [
        f"prior.name={prior}",
        f"likelihood.name={likelihood}",
        "latent_dim=3",
        f"encoder.name={network}",
        f"decoder.name={network}",
        *extra.get("set", []),
    ]
    if prior == "vamp":
        overrides.append("prior.pseudo_inputs=7")
    if network == "mlp":
        overrides += ["encoder.hidden=[16]", "decoder.hidden=[16]"]
    spec = load_spec(None, overrides)
    return VAE.from_spec(spec, SHAPE, levels=5, train_data=data_for(likelihood))


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
@pytest.mark.parametrize("prior", PRIORS.names())
def test_every_prior_likelihood_pair_takes_a_finite_training_step(prior, likelihood):
    vae = build(prior, likelihood)
    x = data_for(likelihood)
    vae.check_data(x)
    loss_fn = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)(
        vae.model, vae.guide
    )
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in vae.parameters()]
    loss = loss_fn(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in vae.parameters())
    opt.step()
    moved = sum(not torch.equal(a, p) for a, p in zip(before, vae.parameters()))
    assert moved >= 4  # encoder and decoder weights at least
    assert vae.sample(3).shape == (3, 16)
    assert vae.reconstruct(x[:2]).shape == (2, 16)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_conv_networks_step_on_images(likelihood):
    vae = build(
        "standard_normal",
        likelihood,
        network="conv",
        set=[
            "encoder.channels=[4, 8]",
            "decoder.channels=[4, 8]",
            "encoder.hidden=16",
            "decoder.hidden=16",
        ],
    )
    x = data_for(likelihood)
    loss = Trace_ELBO(max_plate_nesting=1)(vae.model, vae.guide)(x)
    loss.backward()
    assert torch.isfinite(loss)


def test_conv_on_vectors_is_a_spec_error():
    spec = load_spec(None, ["encoder.name=conv"])
    with pytest.raises(SpecError, match="conv needs image data"):
        VAE.from_spec(spec, (16,))


def test_two_vaes_in_one_process_do_not_share_parameters():
    a, b = build("normal", "bernoulli"), build("normal", "bernoulli")
    assert not set(map(id, a.parameters())) & set(map(id, b.parameters()))
    x = data_for("bernoulli")
    Trace_ELBO(max_plate_nesting=1)(a.model, a.guide)(x).backward()
    assert all(p.grad is None for p in b.parameters())
    assert len(pyro.get_param_store()) == 0


@pytest.mark.parametrize(
    "likelihood,bad,fragment",
    [
        ("bernoulli", 0.5, "set data.binarize"),
        ("bernoulli", 2.5, "binarizing cannot help: use likelihood normal or laplace"),
        ("continuous_bernoulli", 1.5, "[0, 1]"),
        ("categorical", 7.0, "0..4"),
        ("categorical", 1.5, "integers"),
    ],
)
def test_data_outside_the_support_is_a_spec_error(likelihood, bad, fragment):
    vae = build("standard_normal", likelihood)
    x = data_for(likelihood)
    x[3, 5] = bad
    with pytest.raises(SpecError) as info:
        vae.check_data(x)
    assert fragment in str(info.value)


# --- probabilistic PCA: exact log p(x) from the weights ---------------------------------------


def ppca_vae(ppca: PPCA, exact_encoder: bool) -> VAE:
    """Linear decoder (Wz + b), Normal likelihood with fixed σ, N(0, I) prior."""
    spec = load_spec(
        None,
        [
            f"latent_dim={ppca.d}",
            "encoder.hidden=[]",
            "decoder.hidden=[]",
            "likelihood.name=normal",
            "likelihood.learn=fixed",
            f"likelihood.scale={ppca.sigma}",
        ],
    )
    vae = VAE.from_spec(spec, (ppca.P,))
    linear_dec = vae.decoder[0]
    linear_enc = vae.encoder.body[0]
    with torch.no_grad():
        linear_dec.weight.copy_(ppca.W)
        linear_dec.bias.copy_(ppca.b)
        if exact_encoder:
            A, c, s = ppca.linear_encoder()
            linear_enc.weight.zero_()
            linear_enc.weight[: ppca.d] = A
            linear_enc.bias[: ppca.d] = c
            # σ = softplus(raw) + 1e-4  ⇒  raw = log(exp(σ − 1e-4) − 1)
            linear_enc.bias[ppca.d :] = torch.log(torch.expm1(s - 1e-4))
    return vae


def test_ppca_with_the_exact_posterior_every_elbo_sample_is_log_px():
    ppca = PPCA.make(P=6, d=2)
    x = ppca.sample(50)
    vae = ppca_vae(ppca, exact_encoder=True)
    exact = ppca.log_px(x)
    with torch.no_grad():
        log_w = vae.log_weights(x)(64)  # (64, 50)
        traced = -Trace_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=1).loss(
            vae.model, vae.guide, x
        )
    # every weight equals p(x): agreement to float32 rounding of ~6-dim Gaussian log densities
    assert torch.allclose(log_w.double(), exact.expand(64, -1), atol=2e-4)
    assert traced / 50 == pytest.approx(float(exact.mean()), abs=2e-4)


def test_ppca_elbo_never_exceeds_the_exact_log_px():
    ppca = PPCA.make(P=6, d=2)
    x = ppca.sample(40)
    vae = ppca_vae(ppca, exact_encoder=False)  # random encoder: a poor posterior
    exact = ppca.log_px(x)
    R = 4000
    with torch.no_grad():
        log_w = vae.log_weights(x)(R).double()  # single-sample ELBO estimates, (R, 40)
    elbo, se = log_w.mean(0), log_w.std(0) / math.sqrt(R)
    gap = exact - elbo
    # ELBO = log p(x) − KL(q‖p(z|x)) ≤ log p(x): per point, allow 4 Monte Carlo standard errors
    assert (gap > -4 * se).all()
    assert (gap > 0.1).float().mean() > 0.9  # the random encoder is visibly worse than exact
    # the traced Pyro route estimates the same mean ELBO
    with torch.no_grad():
        traced = (
            -Trace_ELBO(num_particles=R, vectorize_particles=True, max_plate_nesting=1).loss(
                vae.model, vae.guide, x
            )
            / 40
        )
    assert traced == pytest.approx(float(elbo.mean()), abs=4 * float(se.mean()))


def test_plate_scales_the_loss_to_the_full_data_size():
    ppca = PPCA.make(P=6, d=2)
    x = ppca.sample(10)
    vae = ppca_vae(ppca, exact_encoder=True)
    with torch.no_grad():
        unscaled = Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x)
        vae.num_data = 1000
        scaled = Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x)
    assert scaled == pytest.approx(100 * unscaled, rel=1e-5)


def test_beta_scales_the_kl_term_only():
    ppca = PPCA.make(P=6, d=2)
    x = ppca.sample(10)
    vae = ppca_vae(ppca, exact_encoder=False)
    with torch.no_grad():
        torch.manual_seed(0)
        terms = vae.elbo_terms(x)
        torch.manual_seed(0)
        vae.kl_scale = 0.25
        loss = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x)
    # mean-field: −Σ (recon − β KL) with the same z draw (same seed, one rsample)
    assert loss == pytest.approx(float(-(terms.recon - 0.25 * terms.kl).sum()), rel=1e-5)


# --- the arguments of VAE.from_spec -------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, levels, train_data, key",
    [
        ((0, 8, 8), 17, None, "shape"),
        ((), 17, None, "shape"),
        ((-1, 8, 8), 17, None, "shape"),
        ((1.5,), 17, None, "shape"),
        (64, 17, None, "shape"),
        ((2**40, 2**40), 17, None, "shape"),
        ((1, 8, 8), 0, None, "levels"),
        ((1, 8, 8), 1, None, "levels"),
        ((1, 8, 8), -3, None, "levels"),
        ((1, 8, 8), 17.0, None, "levels"),
        ((1, 8, 8), True, None, "levels"),
        ((1, 8, 8), 17, torch.rand(10, 5), "train_data"),
        ((1, 8, 8), 17, torch.rand(0, 64), "train_data"),
        ((1, 8, 8), 17, [[0.5] * 64], "train_data"),
    ],
)
def test_from_spec_refuses_a_bad_argument_in_one_line_naming_it(shape, levels, train_data, key):
    """Before: (0, 8, 8), () and levels 0 or 1 built a VAE; the others raised torch's errors."""
    spec = load_spec(
        None,
        [
            "likelihood.name=categorical",
            "prior.name=vamp",
            "latent_dim=2",
            "prior.pseudo_inputs=3",
            "encoder.hidden=[8]",
            "decoder.hidden=[8]",
        ],
    )
    with pytest.raises(SpecError) as error:
        VAE.from_spec(spec, shape, levels, train_data)
    assert str(error.value).startswith(f"{key}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "levels, says",
    [
        ("5", "likelihood.levels: 5 is fewer than the 17 levels of the data (digits)"),
        (str(2**62), "reduce likelihood.levels (now 4.61e+18), latent_dim"),
    ],
)
def test_likelihood_levels_that_do_not_fit_the_data_are_named_by_the_cli(tmp_path, levels, says):
    """Before: 5 levels said "set data.values: integer", set already; 2**62 blamed latent_dim."""
    from processes import console, one_line
    from tiny_runs import DIGITS, SETS

    line = one_line(
        console(
            [
                "train",
                DIGITS,
                *SETS,
                "--set=data.binarize=none",
                "--set=data.values=integer",
                "--set=likelihood.name=categorical",
                f"--set=likelihood.levels={levels}",
                "--out",
                "run",
            ],
            tmp_path,
        )
    )
    assert says in line and "data.values" not in line, line
    assert not (tmp_path / "run").exists()
