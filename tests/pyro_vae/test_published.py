"""The published protocol's parts: the gated networks of the VampPrior code, the best-validation
checkpoint, the presets ``examples/configs/published/`` against the protocol table, and where
``python -m benchmarks.published`` keeps its state (run as a command, as ``make`` runs it)."""

import copy
import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from toy_jobs import published

from pyro_vae.checkpoints import read_checkpoint
from pyro_vae.components.networks import NETWORKS
from pyro_vae.pipeline import fit
from pyro_vae.prepared import load_run, prepare
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "examples" / "configs" / "published"
JOB_FILES = ("done.json", "progress.json", "peek.json")

# The protocol table of the issue (Tomczak & Welling's VampPrior code, as the Exemplar VAE table
# uses it), setting by setting.
PROTOCOL = {
    "data.name": "fashion-mnist",
    "data.binarize": "dynamic",
    "encoder.name": "gated_mlp",
    "encoder.hidden": [300, 300],
    "encoder.logvar_clip": [-6, 2],
    "decoder.name": "gated_mlp",
    "decoder.hidden": [300, 300],
    "likelihood.name": "bernoulli",
    "train.lr": 5e-4,
    "train.batch_size": 100,
    "train.warmup_epochs": 100,
    "train.early_stopping_patience": 50,
    "train.max_epochs": 2000,
    "evaluate.num_samples": 5000,
    "evaluate.split": "test",
}
MODELS = {
    "vae": {"latent_dim": 40, "prior.name": "standard_normal"},
    "vamp": {"latent_dim": 40, "prior.name": "vamp", "prior.pseudo_inputs": 500},
    "hvae": {"latent_dim": [40, 40], "prior.name": "standard_normal"},
}


def _get(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree[key]
    return tree


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_preset_states_the_published_protocol(model):
    path = PRESETS / f"fashion-mnist-{model}.yaml"
    raw = yaml.safe_load(path.read_text())
    for key, want in {**PROTOCOL, **MODELS[model]}.items():
        assert _get(raw, key) == want, key
    # 50 000 / 10 000 of the 60 000 training images, as the split rounds it
    assert round(raw["data"]["val_fraction"] * 60000) == 10000
    assert "estimator" not in raw or raw["estimator"]["name"] == "trace"  # one-sample ELBO
    try:
        spec = load_spec(path)
    except SpecError as exc:  # the two-layer model is another issue's; its preset waits for it
        if model == "hvae" and exc.key == "latent_dim":
            pytest.skip(f"this code has no two-layer model yet: {exc}")
        raise
    parsed = spec.to_dict()
    for key, want in {**PROTOCOL, **MODELS[model]}.items():
        assert _get(parsed, key) == (want if not isinstance(want, list) else list(want)), key


def test_the_gated_layer_computes_its_formula_and_the_log_variance_is_clipped():
    net = NETWORKS.instantiate(NETWORKS.parse({"name": "gated_mlp", "hidden": [5]}), "encoder")
    torch.manual_seed(0)
    encoder = net.encoder((7,), 3)
    assert len(encoder.body) == 2  # one GatedDense per hidden width, then the Linear head
    layer, head = encoder.body[0].linear, encoder.body[1]
    x = torch.randn(4, 7) * 50  # large inputs push the log-variance past both bounds
    w1, w2 = layer.weight.chunk(2)
    b1, b2 = layer.bias.chunk(2)
    h = (x @ w1.T + b1) * torch.sigmoid(x @ w2.T + b2)  # h = (W₁x + b₁) ⊙ σ(W₂x + b₂)
    loc, scale = encoder(x)
    raw = head(h)
    assert torch.allclose(loc, raw[:, :3], atol=1e-5)
    assert torch.allclose(scale, torch.exp(0.5 * raw[:, 3:].clamp(-6, 2)), atol=1e-6)
    assert (raw[:, 3:] < -6).any() and (raw[:, 3:] > 2).any()  # both bounds were exercised
    assert scale.min() >= math.exp(-3) - 1e-7 and scale.max() <= math.exp(1) + 1e-6


def test_gated_layers_are_he_initialised():
    """W ~ N(0, 2/n_in): over 784·600 weights the sample std is within 1 % of √(2/784) (its
    relative s.e. is 1/√(2n) ≈ 0.1 %); torch's default U(±1/√n) would give 0.41·√(2/784)."""
    net = NETWORKS.instantiate(NETWORKS.parse({"name": "gated_mlp"}), "encoder")
    torch.manual_seed(0)
    weight = net.encoder((784,), 40).body[0].linear.weight
    assert weight.shape == (600, 784)
    assert abs(float(weight.detach().std()) / math.sqrt(2 / 784) - 1) < 0.01


def test_without_logvar_clip_the_gated_encoder_uses_the_softplus_head():
    net = NETWORKS.instantiate(NETWORKS.parse({"name": "gated_mlp", "logvar_clip": None}), "e")
    loc, scale = net.encoder((7,), 3)(torch.randn(2, 7))
    assert loc.shape == scale.shape == (2, 3) and bool((scale > 0).all())
    with pytest.raises(SpecError, match="logvar_clip"):
        NETWORKS.instantiate(NETWORKS.parse({"name": "gated_mlp", "logvar_clip": [2, -6]}), "e")


class Snapshots(L.Callback):
    """The VAE's weights after every epoch's validation."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.weights.append(copy.deepcopy(pl_module.vae.state_dict()))


def test_early_stopping_keeps_and_evaluates_the_best_validation_checkpoint(tmp_path):
    spec = load_spec(
        None,
        [
            "data.binarize=dynamic",
            "latent_dim=4",
            "encoder.name=gated_mlp",
            "encoder.hidden=[16]",
            "decoder.name=gated_mlp",
            "decoder.hidden=[16]",
            "train.batch_size=32",
            "train.lr=0.05",
            "train.max_epochs=3",
            "train.early_stopping_patience=10",
            "train.progress=false",
        ],
    )
    snapshots = Snapshots()
    run = tmp_path / "run"
    fit(prepare(spec), run, callbacks=[snapshots])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    vals = [float(r["val_elbo"]) for r in rows if r.get("val_elbo")]
    best = max(range(len(vals)), key=vals.__getitem__)
    assert len(vals) == len(snapshots.weights) == 3
    assert best < len(vals) - 1  # lr 0.05: epoch 3 scores below epoch 2 here
    saved = read_checkpoint(Run(run).checkpoint("best"))["state_dict"]
    for key, value in snapshots.weights[best].items():
        assert torch.equal(saved[f"vae.{key}"], value), key
    assert Run(run).evaluated_checkpoint(spec) == Run(run).checkpoint("best")
    loaded = load_run(run).vae.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in snapshots.weights[best].items())
    assert not all(torch.equal(loaded[k], v) for k, v in snapshots.weights[-1].items())
    # without early stopping there is no selection: the last checkpoint is the one evaluated
    plain = load_spec(None, ["train.early_stopping_patience=0"])
    assert Run(run).evaluated_checkpoint(plain) == Run(run).last


def _published(tmp_path: Path, *args: str) -> str:
    """The published job on the VAE, one epoch, in ``tmp_path``; its stdout."""
    return published(tmp_path, "--models", "vae", "--max-epochs", "1", *args)


def test_the_published_job_keeps_its_files_beside_each_run_and_reads_older_ones_inside(tmp_path):
    """The run directory holds only what a run writes, so it stays a run; the job's done,
    progress and peek records lie beside it, named after it. Those an earlier version of the
    job left inside a run directory are still read: such a run with done.json is not trained
    again, only scored."""
    state = tmp_path / "state"
    run, result = state / "vae-seed0", tmp_path / "results" / "published" / "vae-seed0.json"
    out = _published(tmp_path)
    assert "VAE (seed 0): starting" in out, out[-3000:]
    assert Run(run).is_run() is None, Run(run).is_run()
    assert not {p.name for p in run.iterdir()} & set(JOB_FILES)
    beside = {p.name for p in state.iterdir() if p.is_file()}
    assert beside == {"vae-seed0.done.json", "vae-seed0.progress.json"}, beside
    done = json.loads((state / "vae-seed0.done.json").read_text())
    progress = json.loads((state / "vae-seed0.progress.json").read_text())
    record = json.loads(result.read_text())
    assert done["epochs"] == record["epochs"] == progress["epoch"] == 1
    assert [epoch for epoch, _ in record["curve"]] == [1]  # the section needs no state for it

    # an earlier job's layout: its records inside the run, the run trained but not scored
    for name in ("done.json", "progress.json"):
        (state / f"vae-seed0.{name}").rename(run / name)
    result.unlink()
    result.with_suffix(".log-px.npy").unlink()
    out = _published(tmp_path)
    assert "starting" not in out and "resuming" not in out, out[-3000:]
    assert "VAE seed 0: test log p(x)" in out, out[-3000:]
    again = json.loads(result.read_text())
    assert again["epochs"] == 1 and again["train_s"] == sum(progress["epoch_seconds"])
    assert again["log_px"] == record["log_px"]  # the same checkpoint, seed and K
    assert not any(p.is_file() for p in state.iterdir())  # nothing rewritten beside it

    # a run not finished (no done.json): --peek scores it cheaply, its record beside the run
    for name in ("done.json", "progress.json"):
        (run / name).unlink()
    _published(tmp_path, "--report", "--peek", "8", "16")
    peek = json.loads((state / "vae-seed0.peek.json").read_text())
    assert (peek["epoch"], peek["points"], peek["num_samples"]) == (1, 8, 16)
    assert Run(run).is_run() is None, Run(run).is_run()
