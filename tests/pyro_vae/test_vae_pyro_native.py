"""pyro-vae as a Pyro citizen, in Pyro's default (global param store) mode: importing changes
nothing, the textbook SVI loop trains a spec-built VAE, and Pyro's own tools work on its model and
guide."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Importance, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.inspect import get_model_relations

from inference import log_marginal_likelihood, make_estimator
from pyro_vae import VAE, load_run
from pyro_vae.data import DATASETS
from pyro_vae.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "configs" / "digits.yaml"


@pytest.fixture(autouse=True)
def _default_mode():
    """Pyro's defaults, whatever a test before this one left."""
    with pyro.settings.context(module_local_params=False):
        yield


def tiny(prior: str = "standard_normal", num_data: int | None = None) -> VAE:
    vae = VAE.build(
        (1, 8, 8), latent_dim=3, prior=prior, encoder={"hidden": [16]}, decoder={"hidden": [16]}
    )
    vae.num_data = num_data
    return vae


def binary(n: int) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 64), 0.3))


# --- importing changes nothing -----------------------------------------------------------------

SIDE_EFFECTS = """
import sys, torch, pyro, pyro.distributions as dist
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroParam

class Line(PyroModule):
    def __init__(self):
        super().__init__()
        self.w = PyroParam(torch.zeros(()))
    def forward(self, x, y):
        with pyro.plate("n", len(x)):
            pyro.sample("y", dist.Normal(self.w * x, 1.0), obs=y)

def noisy(x, y):
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("n", len(x)):
        pyro.sample("y", dist.Normal(b + x, 1.0), obs=y)

x = torch.linspace(-1, 1, 50); y = 2 * x + 1
line = Line(); guide = AutoNormal(noisy)
svis = [SVI(line, lambda x, y: None, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()),
        SVI(noisy, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())]

def step(n=20):
    for _ in range(n):
        for svi in svis:
            svi.step(x, y)

def store():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

step()
settings, before = pyro.settings.get(), store()
import pyro_vae, pyro_vae.trainer, pyro_vae.cli, inference, inference.compiled
assert pyro.settings.get() == settings, (settings, pyro.settings.get())
after = store()
assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)
step()
trained = store()
assert all(not torch.equal(trained[k], after[k]) for k in trained), "stopped training"
code = pyro_vae.cli.main(["train", sys.argv[1], "--out", sys.argv[2], *sys.argv[3:]])
assert code == 0, code
assert pyro.settings.get() == settings, (settings, pyro.settings.get())
assert store().keys() == trained.keys(), sorted(store())
step()
assert all(not torch.equal(v, trained[k]) for k, v in store().items()), "stopped training"
print("ok")
"""

TINY_RUN = [
    "--set",
    "latent_dim=2",
    "--set",
    "encoder.hidden=[8]",
    "--set",
    "decoder.hidden=[8]",
    "--set",
    "data.limit=64",
    "--set",
    "train.max_epochs=1",
    "--set",
    "train.batch_size=32",
    "--set",
    "evaluate.num_samples=8",
    "--set",
    "train.progress=false",
]


def test_import_and_a_cli_run_leave_settings_param_store_and_user_models_alone(tmp_path):
    """In a fresh process: every pyro.settings value and the param store are unchanged by the
    import; a user's PyroModule and AutoNormal guide stepped before it keep training after it
    and after an in-process ``pyro-vae train``."""
    script = tmp_path / "side_effects.py"
    script.write_text(SIDE_EFFECTS)
    result = subprocess.run(
        [sys.executable, str(script), str(DIGITS), str(tmp_path / "run"), *TINY_RUN],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


# --- the textbook loop -----------------------------------------------------------------------


def svi_steps(vae: VAE, loss: pyro.infer.ELBO, x: torch.Tensor, steps: int = 5) -> None:
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss)
    for _ in range(steps):
        svi.step(x)


@pytest.mark.parametrize(
    "loss",
    ["Trace_ELBO", "TraceMeanField_ELBO", "trace", "mean_field", "iwae", "renyi", "stl", "dreg"],
)
def test_the_textbook_svi_loop_trains_every_parameter(loss: str) -> None:
    """The issue's loop: SVI with a pyro.optim optimizer, Pyro's ELBOs and each of ours. Every
    parameter moves (the mixture prior's too), and the param store holds exactly the VAE's."""
    vae = tiny("mixture")
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    elbo = {"Trace_ELBO": Trace_ELBO, "TraceMeanField_ELBO": TraceMeanField_ELBO}.get(loss)
    svi_steps(vae, elbo() if elbo else make_estimator(loss), binary(16))
    assert set(pyro.get_param_store().keys()) == {f"vae$$${n}" for n in before}
    moved = {n for n, p in vae.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before)


@pytest.mark.parametrize("guide", ["iaf", "low_rank"])
def test_the_textbook_loop_trains_a_two_layer_vae_with_a_flow_prior_and_a_rich_guide(
    guide: str,
) -> None:
    """Every parameter of a two-layer VAE, its flow prior on z₂, its conditional p(z₁|z₂) and
    each layer's guide (an IAF's autoregressive networks included) sits in the param store
    under ``vae$$$`` and moves under SVI with Trace_ELBO; the guide samples z1 then z2."""
    vae = VAE.build(
        (1, 8, 8),
        latent_dim=[3, 2],
        prior="flow",
        guide=guide,
        encoder={"hidden": [16]},
        decoder={"hidden": [16]},
    )
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    assert any(n.startswith("conditionals.") for n in before)
    assert any(n.startswith("prior.") for n in before)
    svi_steps(vae, Trace_ELBO(), binary(16))
    assert set(pyro.get_param_store().keys()) == {f"vae$$${n}" for n in before}
    moved = {n for n, p in vae.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before)
    sites = poutine.trace(vae.guide).get_trace(binary(4)).stochastic_nodes
    assert sites == ["data", "z1", "z2"]  # the plate's subsample site, then the layers


def test_the_elbo_module_loop_with_a_torch_optimizer_trains() -> None:
    """Every parameter moves and the loss falls. The 16 points have 64 pixels ~ Bernoulli(0.3):
    at the start the decoder's logits are near 0, a loss near 64·log 2 = 44.4 nats per point;
    a decoder that has learned only the pixels' marginal scores 64·H(0.3) = 39.1. The loss must
    fall by at least 4 nats per point, where the 20-draw means below have a Monte Carlo s.e. of
    about 0.05."""
    vae = tiny()
    loss_fn = Trace_ELBO()(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in vae.parameters()]
    x = binary(16)

    def loss_per_point() -> float:
        with torch.no_grad():
            return float(torch.stack([loss_fn(x) for _ in range(20)]).mean()) / len(x)

    start = loss_per_point()
    for _ in range(100):
        optimizer.zero_grad()
        loss_fn(x).backward()
        optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(vae.parameters(), before))
    assert loss_per_point() < start - 4.0


def heldout_elbo(vae: VAE, x: torch.Tensor) -> float:
    """Mean one-sample ELBO over 20 draws per point (seeded): MC s.e. ≈ 3 nats / √(20·360)."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        return float(torch.stack([vae.elbo_terms(x).elbo for _ in range(20)]).mean())


#: each loop of the issue → the spec estimator that ``pyro-vae train`` runs for the comparison
PARITY = {
    "Trace_ELBO": "trace",
    "TraceMeanField_ELBO": "mean_field",
    "trace": "trace",
    "mean_field": "mean_field",
    "iwae": "iwae",
    "renyi": "renyi",
    "stl": "stl",
    "dreg": "dreg",
    "ELBO module + torch Adam": "trace",
}
PARITY_SETS = [
    "latent_dim=4",
    "encoder.hidden=[32]",
    "decoder.hidden=[32]",
    "train.max_epochs=8",
    "train.progress=false",
    "evaluate.num_samples=8",
]


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def draws(seed: int | None = None) -> tuple:
    """A draw of torch's, NumPy's and Python's global RNGs (seeded first with ``seed``)."""
    if seed is not None:
        seed_all(seed)
    return torch.rand(2).tolist(), np.random.rand(), random.random()


@pytest.fixture(scope="module")
def trained_by_cli(tmp_path_factory):
    """estimator ↦ (spec, held-out ELBO) of ``pyro-vae train``'s training (prepare + fit), each
    trained once for the module."""
    from pyro_vae.pipeline import fit
    from pyro_vae.prepared import prepare

    done: dict[str, tuple] = {}

    def train(estimator: str) -> tuple:
        if estimator not in done:
            spec = load_spec(DIGITS, [*PARITY_SETS, f"estimator.name={estimator}"])
            prepared = prepare(spec)
            run = tmp_path_factory.mktemp(estimator) / "run"
            fit(prepared, run)
            seeded_draws = draws(seed=11)
            seed_all(11)
            reread = load_run(str(run))  # the public loader, from a str
            loaded, loaded_spec = reread.vae, reread.spec
            assert draws() == seeded_draws  # it left the caller's random states alone
            assert loaded_spec == spec and not loaded.training
            assert all(
                torch.equal(a, b)
                for a, b in zip(loaded.state_dict().values(), prepared.vae.state_dict().values())
            )
            done[estimator] = spec, heldout_elbo(prepared.vae, prepared.bundle.test)
        return done[estimator]

    return train


def textbook_loop(spec, loop: str) -> tuple[VAE, torch.Tensor]:
    """The user's own loop over the spec's data, epochs, batch size, lr and seed: SVI with a
    pyro.optim Adam in Pyro's default mode, or the ELBO module with a torch Adam inside
    module-local mode; returns the VAE and the test split."""
    pyro.set_rng_seed(spec.train.seed)
    bundle = DATASETS.instantiate(spec.data).load()
    vae = VAE.from_spec(spec, bundle.shape, bundle.levels, bundle.train)
    vae.num_data = len(bundle.train)
    loader = bundle.loader(
        "train",
        spec.train.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(spec.train.seed),
    )
    if loop == "ELBO module + torch Adam":
        with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
            loss_fn = Trace_ELBO()(vae.model, vae.guide)
            optimizer = torch.optim.Adam(vae.parameters(), lr=spec.train.lr)
            for _ in range(spec.train.max_epochs):
                for x in loader:
                    optimizer.zero_grad()
                    loss_fn(x).backward()
                    optimizer.step()
        return vae, bundle.test
    pyro_elbo = {"Trace_ELBO": Trace_ELBO, "TraceMeanField_ELBO": TraceMeanField_ELBO}.get(loop)
    elbo = pyro_elbo() if pyro_elbo else make_estimator(loop, **spec.estimator.params)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": spec.train.lr}), elbo)
    with pyro.validation_enabled(False):
        for _ in range(spec.train.max_epochs):
            for x in loader:
                svi.step(x)
    assert set(pyro.get_param_store().keys()) == {f"vae$$${n}" for n, _ in vae.named_parameters()}
    return vae, bundle.test


@pytest.mark.parametrize("loop", list(PARITY))
def test_the_textbook_loop_reaches_the_elbo_of_pyro_vae_train(loop: str, trained_by_cli) -> None:
    """Digits, the same spec (its estimator the loop's), epochs and seed: ``pyro-vae train``
    and the user's own loop over the same minibatch size end within 2 nats of held-out ELBO.

    Small enough for seconds: 8 epochs of 23 steps with a 32-unit MLP and z = 4. At that point
    the per-point ELBO is still rising by ~0.5 nats an epoch, so two optimizers that disagree by a
    step or two of progress differ by well under 2 nats, while a loop that trains nothing (the
    bug this guards) or only the prior stays ~20 nats behind. The held-out estimate's own MC
    error is ~0.04 nats (heldout_elbo)."""
    spec, cli_elbo = trained_by_cli(PARITY[loop])
    vae, test = textbook_loop(spec, loop)
    loop_elbo = heldout_elbo(vae, test)
    untrained = heldout_elbo(VAE.from_spec(spec, vae.shape, None, None), test)
    assert loop_elbo > untrained + 10
    assert abs(loop_elbo - cli_elbo) < 2.0, (loop_elbo, cli_elbo)


# --- Pyro's tools on our model and guide ------------------------------------------------------


def test_autonormal_on_a_subsampled_plate_pairs_each_latent_with_its_row() -> None:
    """AutoNormal's local latents are a (N, D) table; on rows idx the guide must read rows idx.
    With the locs set to z_n = (n, n, n) and a negligible scale, each drawn z names its row."""
    n = 40
    vae = tiny(num_data=n)
    guide = AutoNormal(vae.model, create_plates=vae.data_plate, init_scale=1e-6)
    x, idx = binary(n), torch.tensor([7, 31, 2, 19, 0])
    guide(x[idx], idx)  # builds the (N, D) parameters
    table = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 3)
    guide.locs.z = table.clone()
    trace = poutine.trace(guide).get_trace(x[idx], idx)
    assert torch.allclose(trace.nodes["z"]["value"], table[idx], atol=1e-3)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=trace)).get_trace(x[idx], idx)
    assert torch.equal(model_trace.nodes["data"]["value"], idx)
    svi = SVI(vae.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(x[idx], idx)))


def test_trace_shows_the_real_rows_and_the_subsample_scale() -> None:
    vae = tiny(num_data=100)
    x, idx = binary(4), torch.tensor([3, 50, 99, 10])
    trace = poutine.trace(vae.model).get_trace(x, idx)
    assert torch.equal(trace.nodes["data"]["value"], idx)
    assert trace.nodes["z"]["value"].shape == (4, 3)
    assert trace.nodes["x"]["scale"] == 25.0 and torch.equal(trace.nodes["x"]["value"], x)
    full = poutine.trace(tiny().model).get_trace(x)
    assert full.nodes["x"]["scale"] == 1.0


def test_predictive_draws_prior_and_posterior_samples_of_z_and_x() -> None:
    vae = tiny()
    prior = Predictive(vae.model, num_samples=3)(num=5)
    assert prior["z"].shape == (3, 5, 3) and prior["x"].shape == (3, 5, 64)
    assert set(prior["x"].unique().tolist()) == {0.0, 1.0}  # Bernoulli draws, not means
    x = binary(5)
    posterior_z = Predictive(vae.guide, num_samples=3, return_sites=["z"])(x)
    assert posterior_z["z"].shape == (3, 5, 3)
    draws = Predictive(vae.model, posterior_samples=posterior_z, return_sites=["z", "x"])(num=5)
    assert torch.equal(draws["z"], posterior_z["z"]) and draws["x"].shape == (3, 5, 64)
    assert not torch.equal(draws["x"][0], x)  # new draws of x, not copies of the data


def test_model_without_data_needs_a_count() -> None:
    with pytest.raises(ValueError, match="num="):
        tiny().model()
    with pytest.raises(ValueError, match="num_data"):
        tiny().model(binary(2), torch.tensor([0, 1]))


def test_sample_returns_means_without_a_graph() -> None:
    vae = tiny()
    means = vae.sample(4)
    assert means.shape == (4, 64) and not means.requires_grad
    assert ((means > 0) & (means < 1)).all()  # sigmoid means, not 0/1 draws


def test_condition_fixes_z_and_the_joint_density_follows() -> None:
    vae = tiny()
    x, z = binary(4), torch.randn(4, 3)
    trace = poutine.trace(pyro.condition(vae.model, data={"z": z})).get_trace(x)
    assert torch.equal(trace.nodes["z"]["value"], z) and trace.nodes["z"]["is_observed"]
    with torch.no_grad():
        want = (
            dist.Normal(0.0, 1.0).log_prob(z).sum()
            + dist.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum()
        )
        assert float(trace.log_prob_sum()) == pytest.approx(float(want), rel=1e-5)


def test_block_hides_the_vae_parameters_and_latents() -> None:
    vae = tiny()
    x = binary(3)
    seen = poutine.trace(vae.model).get_trace(x).nodes
    assert {n for n, s in seen.items() if s["type"] == "param"} == {
        f"vae$$${n}" for n, _ in vae.named_parameters() if not n.startswith("posteriors.")
    }
    hidden = poutine.trace(poutine.block(vae.model, hide_types=["param"], hide=["z"])).get_trace(x)
    assert {s["type"] for s in hidden.nodes.values()} <= {"sample", "args", "return"}
    assert "z" not in hidden.nodes and "x" in hidden.nodes


def test_the_model_trace_holds_no_guide_parameters_and_the_guide_no_model_ones() -> None:
    """pyro.render_model(vae.model) must not show the encoder under the model: the model
    registers the decoder's (and prior's) parameters only, the guide the encoder's only, and
    between them every parameter once."""
    vae = tiny()
    x = binary(3)

    def params(program: object) -> set[str]:
        nodes = poutine.trace(program).get_trace(x).nodes
        return {n for n, s in nodes.items() if s["type"] == "param"}

    model, guide = params(vae.model), params(vae.guide)
    assert model and guide and not model & guide
    assert not any("posteriors" in n or "encoder" in n for n in model), model
    assert all(n.startswith("vae$$$posteriors.") for n in guide), guide
    assert model | guide == {f"vae$$${n}" for n, _ in vae.named_parameters()}
    # what pyro.render_model(vae.model, render_params=True) draws (it needs graphviz)
    relations = get_model_relations(vae.model, model_args=(x,))
    assert set(relations["param_constraint"]) == model


def test_importance_agrees_with_log_marginal_likelihood() -> None:
    """pyro.infer.Importance on one point against the vectorized estimator with K = 4000; both
    estimate the same log p(x) of a small random VAE. Importance's log normalizer with K = 300
    has a delta-method s.e. sqrt((K/ESS − 1)/(K − 1)) ≈ 0.1 here; 0.5 nats is 5 s.e."""
    vae = tiny()
    x = binary(1)
    with torch.no_grad():
        importance = Importance(vae.model, vae.guide, num_samples=300).run(x)
        want = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=4000)
    got = float(importance.get_log_normalizer())
    assert got == pytest.approx(float(want.log_px[0]), abs=0.5)


def test_a_vae_built_in_one_mode_trains_in_the_other() -> None:
    """PyroModules made in the default mode fail in module-local mode once they enter their
    parameter context ('_Context' has no 'param_state'); the VAE never enters it."""
    vae = VAE.build(
        (1, 8, 8),
        latent_dim=3,
        prior="mixture",
        likelihood={"name": "normal", "learn": "global"},
        encoder={"hidden": [8]},
        decoder={"hidden": [8]},
    )
    x = torch.rand(4, 64)
    Trace_ELBO()(vae.model, vae.guide)(x)
    with pyro.settings.context(module_local_params=True):
        Trace_ELBO()(vae.model, vae.guide)(x).backward()
        assert vae.sample(2).shape == (2, 64) and vae.reconstruct(x).shape == (4, 64)
    assert all(p.grad is not None for p in vae.parameters())
