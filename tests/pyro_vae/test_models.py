"""Model kinds (``model: {name: ...}``): labels through the loader into model(x, idx, y) and
guide(x, idx, y), the plain VAE ignoring them, cvae conditioning on them, and own kinds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import pyro_vae
from pyro_vae.bundle import with_indices
from pyro_vae.data import DATASETS
from pyro_vae.registry import SpecError
from pyro_vae.spec import load_spec
from pyro_vae.vae import VAE

TINY = {
    "latent_dim": 2,
    "encoder": {"name": "mlp", "hidden": [8]},
    "decoder": {"name": "mlp", "hidden": [8]},
    "train": {"max_epochs": 1, "batch_size": 32, "progress": False},
    "evaluate": {"num_samples": 8},
}
DIGITS = {"name": "digits", "binarize": "dynamic", "limit": 96}


def cvae(**model: object) -> VAE:
    spec = load_spec({**TINY, "model": {"name": "cvae", **model}})
    return VAE.from_spec(spec, (1, 8, 8), num_classes=10)


def test_the_default_kind_is_vae_and_own_kinds_are_checked() -> None:
    assert load_spec({}).model.name == "vae"
    with pytest.raises(SpecError, match=r"^model.name: .*did you mean 'cvae'"):
        load_spec({"model": "cvea"})
    with pytest.raises(SpecError, match=r"^model.name: 'os:system' is a .*not a model class"):
        load_spec({"model": "os:system"})


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"encoder": {"name": "conv"}}, "encoder.name"),
        ({"prior": {"name": "vamp"}}, "prior.name"),
        ({"model": {"name": "cvae", "learned_prior": True}, "prior": "mixture"}, "prior.name"),
    ],
)
def test_cvae_names_the_component_it_cannot_combine_with(spec: dict, key: str) -> None:
    with pytest.raises(SpecError, match=rf"^{key}: ") as caught:
        load_spec({"model": "cvae", **spec})
    assert "\n" not in str(caught.value)


def test_cvae_on_data_without_labels_is_one_line_naming_the_key(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 2, (64, 6)).astype("f4"))
    spec = {**TINY, "model": "cvae", "data": {"name": "npz", "path": str(tmp_path / "x.npy")}}
    spec["train"] = {**TINY["train"], "batch_size": 8}
    with pytest.raises(SpecError, match=r"^model.name: cvae conditions on labels.*labels_key"):
        pyro_vae.train(load_spec(spec), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_api_checks_the_likelihoods_support_as_the_cli_does(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((64, 6)).astype("f4"))
    spec = {**TINY, "data": {"name": "npz", "path": str(tmp_path / "x.npy")}}
    spec["train"] = {**TINY["train"], "batch_size": 8}
    with pytest.raises(SpecError, match=r"bernoulli needs data in \{0, 1\}"):
        pyro_vae.train(load_spec(spec), out=tmp_path / "run")


def test_labelled_loaders_carry_y_with_the_real_rows() -> None:
    bundle = DATASETS.instantiate(load_spec({"data": DIGITS}).data).load()
    loader = with_indices(bundle.loader("train", 16, shuffle=False, labels=True))
    x, idx, y = next(iter(loader))
    assert x.shape == (16, 64) and torch.equal(y, bundle.labels["train"][idx])
    assert bundle.num_classes == 10
    plain = next(iter(with_indices(bundle.loader("train", 16, shuffle=False))))
    assert len(plain) == 2  # a kind without labels sees the batches it always saw


def test_the_plain_vae_accepts_y_and_ignores_it() -> None:
    vae = VAE.from_spec(load_spec(TINY), (1, 8, 8), num_classes=10)
    assert not vae.reads_labels
    x, y = torch.bernoulli(torch.full((4, 64), 0.5)), torch.arange(4)
    with poutine.trace() as traced:
        vae.guide(x, None, y)
    guide = traced.trace
    plain = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    given = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, None, y)
    assert plain.log_prob_sum().item() == given.log_prob_sum().item()


def test_cvae_conditions_model_guide_and_scores_on_y() -> None:
    vae = cvae()
    x, y = torch.bernoulli(torch.full((4, 64), 0.5)), torch.tensor([0, 3, 3, 9])
    trace = poutine.trace(vae.guide).get_trace(x, None, y)
    model = poutine.trace(poutine.replay(vae.model, trace=trace)).get_trace(x, None, y)
    assert model.nodes["x"]["value"] is x and "y" not in model.nodes  # y conditions, not modelled
    other = poutine.trace(poutine.replay(vae.model, trace=trace)).get_trace(x, None, 9 - y)
    assert model.log_prob_sum().item() != other.log_prob_sum().item()
    with pytest.raises(ValueError, match="pass y"):
        vae.guide(x)
    weights = vae.log_weights(x, y)(5)
    assert weights.shape == (5, 4) and torch.isfinite(weights).all()


def test_a_learned_class_prior_is_one_gaussian_per_class() -> None:
    vae = cvae(learned_prior=True)
    with torch.no_grad():
        vae.kind.class_prior.loc[2] = 40.0
    z = vae.sample_codes(6, vae.labels_for(6, 2))
    assert (z > 30).all()  # p(z | y = 2) sits at its own mean
    assert vae.labels_for(12).tolist() == [*range(10), 0, 1]
    with pytest.raises(SpecError, match="^--label: 10 is not a class"):
        vae.labels_for(3, 10)


def run_cli(*args: str, cwd: Path, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(path)} if path else {}
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=600,
    )


def test_cvae_trains_evaluates_samples_by_class_resumes_and_reports(tmp_path: Path) -> None:
    """Through the Python API: training with y in every batch, IS scoring of log p(x | y),
    figures and report, a resumed epoch, samples of one class."""
    spec = load_spec({**TINY, "data": DIGITS, "model": "cvae"})
    run = pyro_vae.train(spec, out=tmp_path / "run")
    first = run.evaluation("test")
    assert np.isfinite(first.log_px) and first.num_points > 0
    evaluated = pyro_vae.evaluate(tmp_path / "run", num_samples=16)
    assert np.isfinite(evaluated.log_px)
    resumed = pyro_vae.train(None, resume=tmp_path / "run", overrides=["train.max_epochs=2"])
    assert np.isfinite(resumed.evaluation("test").log_px)
    done = run_cli(
        "sample", str(tmp_path / "run"), "-n", "4", "--label", "3", "--out", "s.npz", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "s.npz")["x"].shape == (4, 1, 8, 8)
    assert run_cli("report", str(tmp_path / "run"), cwd=tmp_path).returncode == 0
    assert (tmp_path / "run" / "report.html").is_file()


OWN_KIND = '''
from pyro_vae.components.models import Vae
from pyro_vae.registry import frozen_params


@frozen_params
class Plain(Vae):
    """The plain VAE under another name, with a parameter."""

    note: str = "own"
'''


def test_an_own_kind_trains_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "own_kind.py").write_text(textwrap.dedent(OWN_KIND))
    (tmp_path / "spec.yaml").write_text(
        "model: {name: 'own_kind:Plain', note: mine}\n"
        f"data: {DIGITS}\nlatent_dim: 2\nencoder: {{hidden: [8]}}\ndecoder: {{hidden: [8]}}\n"
        "train: {max_epochs: 1, batch_size: 32, progress: false}\nevaluate: {num_samples: 4}\n"
    )
    done = run_cli("train", "spec.yaml", "--out", "run", cwd=tmp_path, path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = run_cli("evaluate", "run", cwd=tmp_path, path=tmp_path)
    assert evaluated.returncode == 0 and "own_kind" in evaluated.stderr  # the trust notice
    assert "note: mine" in (tmp_path / "run" / "config.yaml").read_text()
    assert pyro.settings.get("module_local_params")  # the test's own setting, untouched
