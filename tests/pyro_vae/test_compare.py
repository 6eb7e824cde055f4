"""``pyro-vae compare``: every estimator trains a VAE from a spec; a comparison writes its table,
CSV and figure; bad --estimators entries are one-line SpecErrors."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import pytest
import torch

import pyro_vae.prepared
from pyro_vae.comparison import (
    add_compare_parser,
    cmd_compare,
    parse_estimator,
    parse_estimators,
    run_name,
)
from pyro_vae.components.estimators import ESTIMATORS
from pyro_vae.pipeline import fit
from pyro_vae.prepared import prepare
from pyro_vae.registry import Component, SpecError
from pyro_vae.spec import load_spec

TINY = [
    "data.binarize=dynamic",
    "data.limit=256",
    "latent_dim=4",
    "encoder.hidden=[32]",
    "decoder.hidden=[32]",
    "train.batch_size=32",
    "train.lr=1e-2",
    "train.progress=false",
    "evaluate.num_samples=20",
]
DIGITS = "examples/configs/digits.yaml"


def val_elbo(prepared: pyro_vae.prepared.Prepared) -> float:
    torch.manual_seed(1)
    with torch.no_grad():
        return float(prepared.vae.elbo_terms(prepared.bundle.val).elbo.mean())


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_training_with_each_estimator_raises_the_validation_elbo(name, tmp_path) -> None:
    prepared = prepare(load_spec(None, [*TINY, "train.max_epochs=2", f"estimator.name={name}"]))
    assert prepared.spec.estimator.name == name
    before = val_elbo(prepared)
    fit(prepared, tmp_path / "run")
    after = val_elbo(prepared)
    # 64 binary pixels: the untrained decoder sits near −45 nats; 16 Adam steps gain about 15 with
    # every estimator. The one-sample ELBO over the 180 validation points, same seed before and
    # after, has a standard error under 0.5 nats, so a gain of 8 is far outside the noise.
    assert after > before + 8, (before, after)


def compare_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_compare_parser(parser.add_subparsers())
    return parser.parse_args(["compare", *argv])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


COLUMNS = [
    "estimator",
    "seed",
    "bound",
    "bound_std",
    "bound_stderr",
    "snr_guide",
    "snr_guide_median",
    "snr_model",
    "snr_model_median",
    "ms_per_step",
    "repeats",
    "elbo",
    "log_px",
    "log_px_stderr",
    "log_px_sem",
]


def test_compare_trains_each_estimator_then_scores_a_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    sets = [x for s in TINY for x in ("--set", s)]
    args = compare_args(
        DIGITS,
        "--estimators",
        "trace",
        "iwae:k=3",
        "dreg:k=3",
        "--epochs",
        "1",
        "--repeats",
        "4",
        "--out",
        str(out),
        *sets,
    )
    cmd_compare(args)
    printed = capsys.readouterr().out
    rows = read_rows(out / "compare.csv")
    assert list(rows[0]) == COLUMNS
    assert [r["estimator"] for r in rows] == ["trace", "iwae:k=3", "dreg:k=3"]
    assert "| iwae:k=3 |" in printed and (out / "compare.md").read_text().count("| dreg:k=3 |") == 1
    assert (out / "figures" / "compare.png").stat().st_size > 0
    assert load_spec(out / "config.yaml").train.max_epochs == 1
    for row in rows:
        run = out / "runs" / run_name(row["estimator"]) / "seed-0"
        assert load_spec(run / "config.yaml").estimator == parse_estimator(row["estimator"])
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / "eval-test.json").is_file() and (run / "eval-test.npz").is_file()
        values = {k: float(v) for k, v in row.items() if k != "estimator"}
        assert all(math.isfinite(v) for v in values.values()), row
        # a trained 4-dimensional model: bounds of tens of nats, the IS estimate above the ELBO
        # (K = 20: the gap is several times the Monte Carlo and data-point standard errors)
        assert -60 < values["elbo"] < values["log_px"] < 0 and values["repeats"] == 4
    # A second comparison into the same directory needs --overwrite.
    with pytest.raises(SpecError, match="--overwrite"):
        cmd_compare(args)

    # Scoring a trained run: no training, the evaluation columns shared, files in the run itself.
    run = out / "runs" / "trace" / "seed-0"
    cmd_compare(
        compare_args("--checkpoint", str(run), "--estimators", "trace", "stl", "--repeats", "3")
    )
    rows = read_rows(run / "compare.csv")
    assert [r["estimator"] for r in rows] == ["trace", "stl"] and list(rows[0]) == COLUMNS
    for column in ("elbo", "log_px", "log_px_stderr", "log_px_sem"):
        assert rows[0][column] == rows[1][column]
    # The RNG is reset before each estimator, so trace and stl see the same draws: the same ELBO
    # values and model gradients; only the guide gradient differs (stl drops the score term).
    trace, stl = ({k: float(v) for k, v in r.items() if k != "estimator"} for r in rows)
    # (Equal up to float32 rounding: stl evaluates log q with detached parameters, other ops.)
    for column in ("bound", "bound_std"):
        assert stl[column] == pytest.approx(trace[column], abs=1e-4), column
    for column in ("snr_model", "snr_model_median"):
        assert stl[column] == pytest.approx(trace[column], rel=1e-3), column
    assert stl["snr_guide"] != pytest.approx(trace["snr_guide"], rel=1e-2)
    assert (run / "figures" / "compare.png").is_file()
    # That run now holds a compare.csv, yet a comparison that trains is refused there even with
    # --overwrite: it would replace the run's config.yaml (and the run no longer loads).
    config = (run / "config.yaml").read_bytes()
    with pytest.raises(SpecError, match="beside its compare.csv"):
        cmd_compare(
            compare_args(
                DIGITS,
                "--estimators",
                "trace",
                "--epochs",
                "1",
                "--out",
                str(run),
                "--overwrite",
                *sets,
            )
        )
    assert (run / "config.yaml").read_bytes() == config


def test_the_estimators_start_from_the_same_weights_or_the_comparison_stops(tmp_path, monkeypatch):
    calls = []

    def perturbed_prepare(spec):
        prepared = prepare(spec)
        calls.append(spec.estimator.name)
        if len(calls) == 2:
            with torch.no_grad():
                next(prepared.vae.decoder.parameters()).add_(1e-3)
        return prepared

    monkeypatch.setattr(pyro_vae.prepared, "prepare", perturbed_prepare)
    sets = [x for s in [*TINY, "data.limit=32"] for x in ("--set", s)]
    args = compare_args(
        DIGITS,
        "--estimators",
        "trace",
        "stl",
        "--epochs",
        "1",
        "--repeats",
        "2",
        "--out",
        str(tmp_path / "cmp"),
        *sets,
    )
    with pytest.raises(RuntimeError, match="stl: the VAE did not start from the first"):
        cmd_compare(args)
    assert calls == ["trace", "stl"]


def test_estimator_entries_parse_with_k_as_particles() -> None:
    assert parse_estimator(" renyi : alpha = 0.5, k=5 ") == Component(
        "renyi", {"alpha": 0.5, "particles": 5, "max_plate_nesting": 1, "data_plate": None}
    )
    assert parse_estimator("iwae:particles=2") == parse_estimator("iwae:k=2")
    assert parse_estimators(["trace", "dreg:k=5"]) == {
        "trace": Component("trace", {"particles": 1, "max_plate_nesting": 1}),
        "dreg:k=5": Component("dreg", {"particles": 5, "max_plate_nesting": 1, "data_plate": None}),
    }
    assert run_name("renyi:alpha=0.5,k=5") == "renyi_alpha=0.5,k=5"
    # the bracket syntax reads the same, and is the one a module:Class takes
    assert parse_estimator("renyi[alpha=0.5, k=5]") == parse_estimator("renyi:alpha=0.5,k=5")
    assert parse_estimator("iwae[]") == parse_estimator("iwae")


def test_an_own_elbo_is_compared_by_module_and_class(tmp_path, monkeypatch) -> None:
    """``module:Class`` is a name, not NAME:KEY=VALUE; its parameters go in brackets."""
    (tmp_path / "compared_elbo.py").write_text(
        "from pyro.infer import Trace_ELBO\n\n\n"
        "class MyELBO(Trace_ELBO):\n"
        "    def __init__(self, particles: int = 1) -> None:\n"
        "        super().__init__(num_particles=particles)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert parse_estimators(["compared_elbo:MyELBO", "compared_elbo:MyELBO[k=3]"]) == {
        "compared_elbo:MyELBO": Component("compared_elbo:MyELBO", {"particles": 1}),
        "compared_elbo:MyELBO[k=3]": Component("compared_elbo:MyELBO", {"particles": 3}),
    }
    with pytest.raises(SpecError, match="give the parameters of compared_elbo:MyELBO in brackets"):
        parse_estimator("compared_elbo:MyELBO:k=3")


BAD = {
    "iwa": "unknown estimator 'iwa'; choices: dreg, enum, gumbel, iwae, mean_field, reinforce, "
    "renyi, stl, trace (did you mean 'iwae'?)",
    "iwae:k=0": "particles must be >= 1, got 0",
    "iwae:k=x": "particles: expected an integer, got 'x'",
    "iwae:k=5,particles=3": "particles given twice (k is an alias of particles)",
    "iwae:foo=1": "foo: unknown key; valid keys: data_plate, max_plate_nesting, particles",
    "iwae:k": "expected NAME[KEY=VALUE,...] (e.g. iwae[k=5]), got 'k'",
    "dreg:k=5,": "expected NAME[KEY=VALUE,...] (e.g. iwae[k=5]), got ''",
    "dreg[k=5,]": "expected NAME[KEY=VALUE,...] (e.g. iwae[k=5]), got ''",
    "renyi:alpha=1": "alpha must be a finite number other than 1",
    "iwae,dreg": "one estimator per word: --estimators iwae dreg",
}


@pytest.mark.parametrize("entry", BAD)
def test_a_bad_estimator_entry_is_one_line(entry) -> None:
    with pytest.raises(SpecError) as info:
        parse_estimators(["trace", entry])
    assert str(info.value).startswith(f"--estimators: {entry!r}: {BAD[entry]}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["--estimators", "iwae:k=2", "iwae:particles=2"],
            ("'iwae:k=2' and 'iwae:particles=2' are the same estimator"),
        ),
        (["--repeats", "1"], "--repeats: must be >= 2"),
        ([], "give a CONFIG to train from, or --checkpoint RUN_DIR"),
        ([DIGITS, "--checkpoint", "runs/x"], "--checkpoint: scores a trained run as it is"),
        (
            ["--checkpoint", "runs/x", "--epochs", "2"],
            "--checkpoint: scores a trained run as it is",
        ),
        ([DIGITS, "--epochs", "0"], "--epochs: must be >= 1, got 0"),
        ([DIGITS, "--set", "train.devices=2"], "train.devices: compare trains in one process"),
    ],
)
def test_bad_compare_arguments_are_spec_errors(argv, match, tmp_path) -> None:
    with pytest.raises(SpecError, match=match):
        cmd_compare(compare_args(*argv, "--out", str(tmp_path / "cmp")))
    assert not (tmp_path / "cmp").exists()


def test_out_must_be_empty_or_an_earlier_comparison(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="is not empty and holds no compare.csv"):
        cmd_compare(compare_args(DIGITS, "--out", str(tmp_path)))


def test_seeds_give_mean_and_se_over_seeds_and_the_gain_paired_per_image(tmp_path, capsys):
    """``--seeds 2``: each estimator trained with seeds 0 and 1 into ordinary scored runs; the
    table over seeds shows each column's mean ± s.e. and the log p(x) gain over the first
    estimator, which is the mean over seeds of the per-image differences in the runs' files."""
    import numpy as np

    from pyro_vae.aggregation import mean_se, plus_minus
    from pyro_vae.rundir import Run

    out = tmp_path / "cmp"
    sets = [x for s in [*TINY, "data.limit=128"] for x in ("--set", s)]
    cmd_compare(
        compare_args(
            DIGITS,
            "--estimators",
            "trace",
            "iwae:k=3",
            "--epochs",
            "1",
            "--repeats",
            "2",
            "--seeds",
            "2",
            "--out",
            str(out),
            *sets,
        )
    )
    rows = read_rows(out / "compare.csv")
    assert [(r["estimator"], r["seed"]) for r in rows] == [
        ("trace", "0"),
        ("iwae:k=3", "0"),
        ("trace", "1"),
        ("iwae:k=3", "1"),
    ]
    text = (out / "compare.md").read_text()
    runs = {
        (label, seed): Run(out / "runs" / run_name(label) / f"seed-{seed}")
        for label in ("trace", "iwae:k=3")
        for seed in (0, 1)
    }
    per_seed = [
        np.mean(
            runs["iwae:k=3", s].points("test")["log_px"] - runs["trace", s].points("test")["log_px"]
        )
        for s in (0, 1)
    ]
    mean, se, _ = mean_se(per_seed)
    assert "Mean ± s.e. over seeds" in text and f"| {plus_minus(mean, se)} |" in text
    log_px = [float(r["log_px"]) for r in rows if r["estimator"] == "trace"]
    assert f"| {plus_minus(*mean_se(log_px)[:2])} |" in text
    with pytest.raises(SpecError, match="--seeds"):
        cmd_compare(compare_args(DIGITS, "--seeds", "0", "--out", str(tmp_path / "x")))
