"""The Python API (``pyro_vae.train``, ``evaluate``, ``load_run``, ``Run``): what the command line
does, returned as objects, as quiet, and without changing global state."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.figure import Figure

import pyro_vae
from pyro_vae.scoring import Evaluation
from tests.tiny_runs import DIGITS, TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> pyro_vae.Run:
    return pyro_vae.train(DIGITS, tmp_path_factory.mktemp("api") / "run", TINY)


def test_train_returns_the_run_loaded_and_scored(run: pyro_vae.Run) -> None:
    summary = json.loads((run.root / "eval-test.json").read_text())
    assert run.state() == "finished" and run._prepared is not None  # no reload needed
    evaluation = run.evaluation("test")
    assert isinstance(evaluation, Evaluation) and evaluation.log_px == summary["log_px"]
    assert len(evaluation.points.log_px) == summary["num_points"]
    assert run.spec.train.max_epochs == 1 and run.vae.latent_dim == 2
    assert f"{summary['log_px']:.3f}" in run._repr_markdown_()
    assert set(run.evaluations()) == {"test"}
    marker = json.loads((run.root / ".pyro-vae-run").read_text())
    assert 0 < run.train_seconds() == marker["train_seconds"]  # training alone, kept in the marker


def test_figures_are_returned_as_matplotlib_figures(run: pyro_vae.Run) -> None:
    drawn = run.figures("test")
    assert {"latent_map", "prior_samples", "reconstructions", "log_px"} <= set(drawn)
    assert all(isinstance(f, Figure) for f in drawn.values())
    on_disk = {p.stem for p in (run.root / "figures" / "test").glob("*.png")}
    assert set(drawn) - {"training_curves"} == on_disk  # the figures the run wrote


def test_evaluate_scores_another_split_and_annealing_returns_its_summary(run: pyro_vae.Run):
    result = pyro_vae.evaluate(run, "val", num_samples=4, limit=10)
    assert isinstance(result, Evaluation) and result.num_points == 10
    assert run.summary("val")["log_px"] == result.log_px
    ais = pyro_vae.evaluate(
        run.root, "val", "ais", num_samples=4, limit=2, chains=2, steps=3, leapfrog=2
    )
    assert ais["method"] == "ais" and ais["num_points"] == 2
    with pytest.raises(pyro_vae.SpecError, match="chains"):
        pyro_vae.evaluate(run, "val", chains=2)


def test_load_run_keeps_the_callers_random_state(run: pyro_vae.Run) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    loaded = pyro_vae.load_run(run.root)
    weights = {k: v for k, v in loaded.vae.state_dict().items()}
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in run.vae.state_dict().items():
        assert torch.equal(weights[key], value), key
    with pytest.warns(FutureWarning, match="run.vae and run.spec"):
        vae, spec = pyro_vae.load_run(run.root)  # the form of earlier versions
    assert vae is loaded.vae or torch.equal(next(vae.parameters()), next(loaded.vae.parameters()))
    assert spec == loaded.spec
    with pytest.raises(pyro_vae.SpecError, match="not a run directory"):
        pyro_vae.load_run(run.root.parent)


def test_the_api_leaves_warning_filters_and_log_levels_as_they_were(tmp_path) -> None:
    filters = list(warnings.filters)
    levels = {n: logging.getLogger(n).level for n in ("lightning", "lightning.pytorch")}
    pyro_vae.train(DIGITS, tmp_path / "run", TINY)
    assert warnings.filters == filters
    assert {n: logging.getLogger(n).level for n in levels} == levels


def test_sweep_trains_an_experiment_quietly_and_aggregate_pairs_it(tmp_path, capfd) -> None:
    exp = tmp_path / "exp.yaml"
    tiny = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY)}
    exp.write_text(yaml.safe_dump({"base": DIGITS, "set": tiny, "grid": {"beta": [1.0, 2.0]}}))
    filters = list(warnings.filters)
    done = pyro_vae.sweep(exp, tmp_path / "out")
    assert warnings.filters == filters and capfd.readouterr() == ("", "")  # as quiet as the CLI
    assert done.exit_code == 0 and [r["state"] for r in done.runs] == ["finished"] * 2
    view = done._repr_markdown_()
    assert "| beta=1/seed-0 | 0 | finished |" in view and "| beta=2/seed-0 | 0 | finished |" in view
    assert repr(done).startswith(f"sweep: 2 runs in {tmp_path / 'out'}: 2 finished")  # a REPL's
    table = pyro_vae.aggregate([done.out], baseline=["beta=1.0"])
    assert [g.label for g in table.groups] == ["beta=1.0", "beta=2.0"]
    again = pyro_vae.sweep(exp, tmp_path / "out")  # the same call: nothing trained twice
    assert [r["state"] for r in again.runs] == ["skipped"] * 2


def test_sweep_takes_the_experiment_as_a_dict_kept_in_its_folder(tmp_path, monkeypatch) -> None:
    tiny = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY)}
    monkeypatch.chdir(Path(DIGITS).parents[2])  # the repository: base is relative to it
    experiment = {"base": "examples/configs/digits.yaml", "set": tiny, "grid": {"beta": [2.0]}}
    with pytest.raises(pyro_vae.SpecError, match="needs out="):
        pyro_vae.sweep(experiment)
    done = pyro_vae.sweep(experiment, tmp_path / "out")
    assert done.exit_code == 0 and [r["state"] for r in done.runs] == ["finished"]
    kept = yaml.safe_load((tmp_path / "out" / ".sweep" / "experiment.yaml").read_text())
    assert kept == experiment | {"base": DIGITS}  # made absolute: the folder works from anywhere
    assert pyro_vae.load_run(tmp_path / "out" / "seed-0").spec.beta == 2.0  # one cell: unnamed
    monkeypatch.chdir(tmp_path)
    again = pyro_vae.sweep(experiment | {"base": DIGITS}, tmp_path / "out")  # the same, again
    assert [r["state"] for r in again.runs] == ["skipped"]
    with pytest.raises(pyro_vae.SpecError, match="YAML cannot write"):
        pyro_vae.sweep(experiment | {"seeds": object()}, tmp_path / "other")
    assert not (tmp_path / "other").exists()  # refused before the folder was made
    with pytest.raises(pyro_vae.SpecError, match="^base: missing: .*working directory"):
        pyro_vae.sweep({"seeds": 1}, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(pyro_vae.SpecError, match="^grid.beta: repeats 2.0"):  # past its base
        pyro_vae.sweep(experiment | {"grid": {"beta": [2.0, 2.0]}}, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_compare_trains_each_estimator_or_scores_a_run_quietly(run, tmp_path, capfd) -> None:
    spec = pyro_vae.load_spec(DIGITS)  # a Spec, as train takes; overrides apply on top
    done = pyro_vae.compare(
        spec, ["trace", "iwae[k=3]"], out=tmp_path / "cmp", overrides=TINY, repeats=3, seeds=2
    )
    assert capfd.readouterr() == ("", "")  # as quiet as the CLI: the table is returned
    assert pyro_vae.load_spec(tmp_path / "cmp" / "config.yaml").train.max_epochs == 1
    assert (
        "Each estimator trained a spec given in Python for 1 epoch(s)"
        in (tmp_path / "cmp" / "compare.md").read_text()
    )
    assert [(r["estimator"], r["seed"]) for r in done.rows] == [
        ("trace", 0),
        ("iwae[k=3]", 0),
        ("trace", 1),
        ("iwae[k=3]", 1),
    ]
    assert all(path.is_file() for path in done.files())
    assert done.table in (tmp_path / "cmp" / "compare.md").read_text()
    assert "log p(x) gain, paired" in done._repr_markdown_()  # two seeds: the paired table
    assert repr(done).endswith(f"comparison: {', '.join(map(str, done.files()))}")
    scored = pyro_vae.compare(checkpoint=run, estimators=["trace", "stl"], out=tmp_path / "ck")
    assert capfd.readouterr() == ("", "")
    assert [r["estimator"] for r in scored.rows] == ["trace", "stl"]
    assert scored.rows[0]["log_px"] == scored.rows[1]["log_px"]  # one evaluation, shared
    with pytest.raises(pyro_vae.SpecError, match="--repeats"):
        pyro_vae.compare(DIGITS, ["trace"], repeats=1)


def test_encode_and_sample_write_what_the_commands_write(run, tmp_path, capfd) -> None:
    arrays = pyro_vae.encode(run, tmp_path / "z.npz", split="val", limit=5)
    saved = np.load(tmp_path / "z.npz")
    assert arrays["mean"].shape == arrays["scale"].shape == (5, run.vae.latent_dim)
    assert (saved["mean"] == arrays["mean"]).all() and (arrays["scale"] > 0).all()
    done = pyro_vae.sample(run.root, tmp_path / "s.npz", n=7, png=tmp_path / "s.png", means=True)
    assert capfd.readouterr() == ("", "")
    drawn = np.load(done.out)
    assert drawn["x"].shape == (7, 1, 8, 8) and drawn["z"].shape == (7, run.vae.latent_dim)
    assert ((drawn["x"] >= 0) & (drawn["x"] <= 1)).all()  # Bernoulli means
    assert done.png is not None and done.png.stat().st_size > 0
    with pytest.raises(pyro_vae.SpecError, match="--limit"):
        pyro_vae.encode(run, tmp_path / "y.npz", limit=0)
    assert not (tmp_path / "y.npz").exists()
