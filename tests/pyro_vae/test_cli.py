"""The command line: a run from a spec, and one clean line (exit 2) for each user error."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.cli import main

QUICK = [
    "--set",
    "train.max_epochs=1",
    "--set",
    "train.progress=false",
    "--set",
    "evaluate.num_samples=20",
    "--set",
    "encoder.hidden=[32]",
    "--set",
    "decoder.hidden=[32]",
]
DIGITS = "examples/configs/digits.yaml"


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_evaluate(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["train", DIGITS, *QUICK, "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert "log p(x)" in out and "ELBO" in out
    for name in (
        "config.yaml",
        "metrics.csv",
        "eval-test.json",
        "checkpoints/last.ckpt",
        "figures/test/log_px.png",
    ):
        assert (out_dir / name).is_file(), name
    first = json.loads((out_dir / "eval-test.json").read_text())
    assert first["num_samples"] == 20 and first["log_px"] < 0
    # ELBO ≤ IS estimate (in expectation; with K = 20 the gap is far above the noise here)
    assert first["elbo"] <= first["log_px"] + 0.5
    code, out, err = run_cli(["evaluate", str(out_dir), "--num-samples", "40"], capsys)
    assert code == 0, err
    assert json.loads((out_dir / "eval-test.json").read_text())["num_samples"] == 40
    # a second train into the same directory without --overwrite is refused, the run intact
    code, _, err = run_cli(["train", DIGITS, *QUICK, "--out", str(out_dir)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out_dir / "checkpoints/last.ckpt").is_file()


def bad_npz(tmp_path: Path, values: np.ndarray) -> str:
    path = tmp_path / "x.npz"
    np.savez(path, x=values)
    return str(path)


CASES = {
    "unknown prior": (["--set", "prior.name=gaussian"], "prior.name", "vamp"),
    "unknown key": (["--set", "trian.max_epochs=3"], "trian", "valid keys"),
    "bad value": (["--set", "latent_dim=0"], "latent_dim", ">= 1"),
    "bad likelihood param": (
        ["--set", "likelihood.name=categorical", "--set", "likelihood.levels=1"],
        "likelihood",
        "levels must be >= 2",
    ),
    "missing data file": (
        ["--set", "data.name=npz", "--set", "data.path=/nonexistent/x.npz"],
        "/nonexistent/x.npz",
        "",
    ),
    "grey data for bernoulli": (["--set", "data.binarize=none"], "data", "binarize"),
    "integers for bernoulli": (
        ["--set", "data.binarize=none", "--set", "data.values=integer"],
        "data",
        "bernoulli",
    ),
    "unit data for categorical": (
        ["--set", "data.binarize=none", "--set", "likelihood.name=categorical"],
        "data",
        "data.values: integer",
    ),
    "batch larger than data": (["--set", "train.batch_size=100000"], "train.batch_size", "larger"),
    "unknown data plate": (
        ["--set", "estimator.name=iwae", "--set", "estimator.data_plate=rows"],
        "estimator.data_plate",
        "'data'",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_user_errors_exit_2_with_one_line_and_write_nothing(name, tmp_path, capsys):
    extra, key, fragment = CASES[name]
    out_dir = tmp_path / "run"
    code, _out, err = run_cli(["train", DIGITS, *QUICK, *extra, "--out", str(out_dir)], capsys)
    assert code == 2
    line = err.strip()
    assert line.startswith("pyro-vae: error:") and "\n" not in line
    assert key in line and fragment in line
    assert "Traceback" not in err
    assert not out_dir.exists()


@pytest.mark.parametrize(
    "values,fragment",
    [
        (np.array([[0.0, 1.0], [np.nan, 0.0]] * 20), "NaN"),
        (np.array([[0.0, 1.0], [2.0, 0.0]] * 20), "bernoulli"),
    ],
)
def test_bad_data_values_in_a_users_file(values, fragment, tmp_path, capsys):
    path = bad_npz(tmp_path, values)
    code, _, err = run_cli(
        [
            "train",
            DIGITS,
            *QUICK,
            "--set",
            "data.name=npz",
            "--set",
            f"data.path={path}",
            "--set",
            "train.batch_size=4",
            "--out",
            str(tmp_path / "run"),
        ],
        capsys,
    )
    assert code == 2 and fragment in err and "\n" not in err.strip()
    assert not (tmp_path / "run").exists()


def test_evaluate_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", str(tmp_path)], capsys)
    assert code == 2 and "not a run directory" in err


def test_console_script_reports_user_errors_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("pyro-vae")
    proc = subprocess.run(
        [str(exe), "train", DIGITS, "--set", "prior.name=nope", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "prior.name" in proc.stderr
    assert "Traceback" not in proc.stderr


RICHER = {
    "iaf guide, flow prior, iwae": ("examples/configs/digits-iaf.yaml", []),
    "low_rank guide, mean_field": (
        DIGITS,
        ["--set", "guide.name=low_rank", "--set", "estimator.name=mean_field"],
    ),
    "planar guide, mean_field": (
        DIGITS,
        ["--set", "guide.name=planar", "--set", "estimator.name=mean_field", "--verbose"],
    ),
    "discretized logistic, full_rank": ("examples/configs/digits-discretized-logistic.yaml", []),
    "two stochastic layers, iwae": ("examples/configs/digits-two-layer.yaml", []),
}


@pytest.mark.parametrize("spec,extra", RICHER.values(), ids=RICHER.keys())
def test_richer_components_train_and_evaluate_on_digits(spec, extra, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["train", spec, *QUICK, *extra, "--out", str(out_dir)], capsys)
    assert code == 0, err
    result = json.loads((out_dir / "eval-test.json").read_text())
    assert result["log_px"] < 0 and result["elbo"] <= result["log_px"] + 0.5
    if "discretized" in spec:  # 8×8 pixels on 17 levels: at most log2(17) = 4.09 bits each
        assert "bits/dim" in out and 0 < result["bits_per_dim"] < 4.09
    # KL(q ‖ p) has a closed form for Gaussian guides on one layer, not for flows or layers
    planar = "guide.name=planar" in extra
    monte_carlo = planar or "iaf" in spec or "layer" in spec
    assert ("mean_field takes the KL term by Monte Carlo" in err) == planar  # only it trains so
    assert ("(Monte Carlo KL, one sample)" in out) == monte_carlo
    assert result["analytic_kl"] == (not monte_carlo)
    if "layer" in spec:  # active units per layer: 16 + 8
        assert result["latent_dims"] == [16, 8] and "(z2)" in out
    code, out, err = run_cli(["evaluate", str(out_dir), "--num-samples", "30"], capsys)
    assert code == 0, err
