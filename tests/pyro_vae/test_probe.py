"""``pyro-vae probe``: logistic regression on a run's posterior means against one on the pixels,
for a few numbers of labels, on a tiny digits run; its one-line errors naming --labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pyro_vae
from pyro_vae.cli import main
from pyro_vae.probing import ProbeResult, parse_labels, stratified_draw
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run

TINY = [
    "--set",
    "latent_dim=4",
    "--set",
    "encoder.hidden=[32]",
    "--set",
    "decoder.hidden=[32]",
    "--set",
    "data.limit=300",
    "--set",
    "train.max_epochs=3",
    "--set",
    "train.progress=false",
    "--set",
    "evaluate.num_samples=4",
]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("probe") / "run"
    assert main(["train", "examples/configs/digits.yaml", *TINY, "--out", str(run)]) == 0
    return run


def test_probe_reads_labels_off_the_latents_and_writes_through_run(digits_run: Path, capsys):
    capsys.readouterr()
    assert main(["probe", str(digits_run), "--labels", "20,100,all"]) == 0
    out = capsys.readouterr().out
    assert "| labels | latents" in out and "probe.json" in out
    table = json.loads((digits_run / "probe.json").read_text())
    assert [r["labels"] for r in table["rows"]] == [20, 100, 300]
    assert table["num_classes"] == 10 and table["latent_dim"] == 4 and table["pixels"] == 64
    chance, full = table["chance"], table["rows"][-1]
    assert chance < 0.15  # ten digits in near-equal shares
    assert full["latent_accuracy"] > 2.5 * chance  # four numbers per image keep much of the digit
    assert full["pixel_accuracy"] > 0.7  # the baseline: 64 binary pixels, 300 labels
    assert all(0 <= r["latent_accuracy"] <= 1 for r in table["rows"])
    assert (digits_run / "figures" / "probe.png").is_file()
    assert Run(digits_run).foreign() == []  # every file it wrote is part of a run's layout


def test_the_python_api_returns_the_table(digits_run: Path) -> None:
    result = pyro_vae.probe(digits_run, labels=[30, 30, None], seed=1)
    assert isinstance(result, ProbeResult)
    assert [r.labels for r in result.rows] == [30, 300]  # repeats dropped
    assert "| 30 |" in str(result) and result._repr_markdown_().count("|---:|---:|---:|") == 1
    again = pyro_vae.probe(digits_run, labels=[30], seed=1)
    assert again.rows[0] == result.rows[0]  # the seeded draw and fit repeat


def test_stratified_draw_keeps_every_class_in_proportion() -> None:
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    rows = stratified_draw(y, 20, np.random.default_rng(0))
    assert len(set(rows.tolist())) == 20
    # one each, then 16 spread over 49:29:14:4 (of 96): 8.2, 4.8, 2.3, 0.7 → 8, 5, 2, 1
    assert np.bincount(y[rows]).tolist() == [9, 6, 3, 2]
    assert np.array_equal(
        np.sort(stratified_draw(y, 100, np.random.default_rng(0))), np.arange(100)
    )


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ("100,abc", "'abc' in '100,abc' is not a count"),
        ("", "'' in '' is not a count"),
        ("0", "'0' in '0' is not a count"),
        (",".join(map(str, range(10, 30))), "20 sizes; at most 16"),
        ("5", "5 labels: give from 10"),
        ("301", "301 labels: give from 10 (the classes of the training split) to 300"),
    ],
)
def test_bad_label_lists_are_one_line_naming_the_flag(
    labels: str, fragment: str, digits_run: Path, capsys
) -> None:
    (digits_run / "probe.json").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["probe", str(digits_run), "--labels", labels]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: --labels: ") and fragment in err
    assert err.count("\n") == 1 and not (digits_run / "probe.json").exists()


def test_a_run_without_labels_is_refused(tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    np.savez(tmp_path / "x.npz", x=load_digits().images[:200] / 16)
    args = ["--set", "data.name=npz", "--set", f"data.path={tmp_path / 'x.npz'}"]
    args += ["--set", "data.binarize=static"]
    run = tmp_path / "run"
    assert main(["train", "examples/configs/digits.yaml", *TINY, *args, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["probe", str(run)]) == 2
    assert "--labels: the data of" in capsys.readouterr().err
    with pytest.raises(SpecError, match="have no labels"):
        pyro_vae.probe(run)


def test_only_the_labels_a_run_keeps_are_drawn(tmp_path: Path, capsys) -> None:
    """``data.labeled: 40`` hides all but 40 training labels (as -1): ``all`` is those 40."""
    run = tmp_path / "run"
    args = [*TINY, "--set", "data.labeled=40", "--set", "train.max_epochs=1"]
    assert main(["train", "examples/configs/digits.yaml", *args, "--out", str(run)]) == 0
    assert [r.labels for r in pyro_vae.probe(run, labels=[10, None]).rows] == [10, 40]
    capsys.readouterr()
    assert main(["probe", str(run), "--labels", "41"]) == 2
    assert "to 40 (its labelled items)" in capsys.readouterr().err


def test_parse_labels() -> None:
    assert parse_labels("100, 1000,ALL") == (100, 1000, None)
