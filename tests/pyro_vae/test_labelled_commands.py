"""The commands that call the model and guide themselves, on a ``cvae`` run: AIS and BDMC
(``evaluate --method ais|bdmc``), ``compare --checkpoint`` and ``sample --label``, each given
the labels the kind reads (they once called model(x)/guide(x) without y: an internal error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.cli import main

TINY = [
    "--set",
    "model.name=cvae",
    "--set",
    "latent_dim=2",
    "--set",
    "encoder.hidden=[8]",
    "--set",
    "decoder.hidden=[8]",
    "--set",
    "data.limit=96",
    "--set",
    "train.max_epochs=1",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.progress=false",
    "--set",
    "evaluate.num_samples=4",
]
ANNEAL = ["--chains", "2", "--steps", "3", "--leapfrog", "2", "--limit", "3"]


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cvae") / "run"
    code = main(["train", "examples/configs/digits.yaml", *TINY, "--out", str(run)])
    assert code == 0
    return run


def test_ais_scores_a_cvae_given_its_labels(cvae_run: Path, capsys) -> None:
    assert main(["evaluate", str(cvae_run), "--method", "ais", *ANNEAL]) == 0, capsys.readouterr()
    summary = json.loads((cvae_run / "eval-test-ais.json").read_text())
    assert summary["num_points"] == 3
    assert np.isfinite(summary["log_px"]) and np.isfinite(summary["is_log_px"])


def test_bdmc_simulates_a_cvae_with_classes_in_turn(cvae_run: Path, capsys) -> None:
    assert main(["evaluate", str(cvae_run), "--method", "bdmc", *ANNEAL]) == 0, capsys.readouterr()
    summary = json.loads((cvae_run / "eval-simulated-bdmc.json").read_text())
    assert summary["num_points"] == 3 and summary["lower"] <= summary["upper"] + 1.0


def test_compare_checkpoint_of_a_cvae(cvae_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare"
    args = ["compare", "--checkpoint", str(cvae_run), "--estimators", "trace", "iwae"]
    assert main([*args, "--repeats", "2", "--out", str(out)]) == 0, capsys.readouterr()
    text = (out / "compare.csv").read_text()
    assert text.count("\n") == 3 and "iwae" in text  # a header and a row per estimator


def test_sample_saves_each_samples_class(cvae_run: Path, tmp_path: Path, capsys) -> None:
    one, turns = tmp_path / "one.npz", tmp_path / "turns.npz"
    assert main(["sample", str(cvae_run), "-n", "5", "--label", "3", "--out", str(one)]) == 0
    assert "y [5]" in capsys.readouterr().out
    assert main(["sample", str(cvae_run), "-n", "1500", "--out", str(turns)]) == 0
    saved, streamed = np.load(one), np.load(turns)  # 1500: two batches streamed into the file
    assert saved["y"].tolist() == [3] * 5 and saved["x"].shape == (5, 1, 8, 8)
    assert np.array_equal(streamed["y"], np.arange(1500) % 10)
    assert streamed["z"].shape == (1500, 2) and streamed["x"].shape == (1500, 1, 8, 8)


def test_compare_on_a_gmvae_reports_the_snr_of_q_y_given_x(tmp_path: Path, capsys) -> None:
    """compare on a discrete model (gmvae, y summed by enum or drawn by reinforce): bound, ms per
    step, and the gradient SNR of q(y | x)'s own parameters beside the encoder's and the
    model's."""
    out = tmp_path / "compare"
    gmvae = [*TINY[2:], "--set", "model.name=gmvae", "--set", "model.components=3"]
    args = ["compare", "examples/configs/digits-gmvae.yaml", *gmvae, "--epochs", "1"]
    estimators = ["--estimators", "enum", "reinforce[k=2]", "--repeats", "3"]
    assert main([*args, *estimators, "--out", str(out)]) == 0, capsys.readouterr()
    header, *rows = (out / "compare.csv").read_text().splitlines()
    columns = header.split(",")
    assert {"bound", "ms_per_step", "snr_guide", "snr_classifier", "snr_model"} <= set(columns)
    assert len(rows) == 2 and rows[1].startswith("reinforce")
    snr = [float(row.split(",")[columns.index("snr_classifier")]) for row in rows]
    assert all(np.isfinite(snr)) and min(snr) > 0
