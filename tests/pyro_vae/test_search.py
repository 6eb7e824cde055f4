"""pyro-vae sweep --search optuna: the search section checked, a tiny search scored on val only,
two processes sharing one SQLite study, and a missing Optuna as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import DIGITS, TINY

from pyro_vae.cli import main
from pyro_vae.experiment import load_experiment, sweep
from pyro_vae.registry import SpecError

optuna = pytest.importorskip("optuna")

SET = "{" + ", ".join(s.replace("=", ": ", 1) for s in TINY) + "}"
LR = "train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}"


def experiment(tmp_path: Path, search: str = LR, extra: str = "", name: str = "exp") -> Path:
    path = tmp_path / f"{name}.yaml"
    lines = "\n".join(f"  {line}" for line in search.splitlines())
    path.write_text(f"base: {DIGITS}\nset: {SET}\n{extra}search:\n{lines}\n")
    return path


@pytest.mark.parametrize(
    ("search", "extra", "key", "words"),
    [
        ("train.lr: 0.1", "", "search.train.lr", "expected {low"),
        ("train.lr: {low: 1.0e-4}", "", "search.train.lr.high", "missing"),
        ("train.lr: {low: 1.0e-2, high: 1.0e-4}", "", "search.train.lr.high", "above low"),
        ("train.lr: {low: 0, high: 1.0e-2, log: true}", "", "search.train.lr.low", "low > 0"),
        ("train.lr: {low: 1.0e-4, high: 1.0e-2, lgo: true}", "", "search.train.lr.lgo", "log"),
        ("latent_dim: {low: 2, high: 8.5, int: true}", "", "search.latent_dim.high", "integer"),
        ("train.lr: {low: 1.0e-4, high: true}", "", "search.train.lr.high", "finite number"),
        (
            "encoder.hidden: {choices: [[8], [16]]}",
            "",
            "search.encoder.hidden.choices[0]",
            "scalar",
        ),
        ("latent_dim: {choices: [2, 2]}", "", "search.latent_dim.choices", "repeats"),
        ("latent_dim: {choices: []}", "", "search.latent_dim.choices", "non-empty"),
        ("evaluate.split: {choices: [val, test]}", "", "search.evaluate.split", "not searched"),
        ("prior.name: {choices: [standard_normal, nope]}", "", "search.prior.name", "nope"),
        ("data.limit: {low: 8, high: 64, int: true}", "", "search.data.limit", "set: also"),
        (LR, "grid: {latent_dim: [2, 4]}\n", "grid", "does not combine"),
        (LR, "cells: [{}]\n", "cells", "does not combine"),
        (LR, "seeds: 2\n", "seeds", "one seed"),
        ("[1, 2]", "", "search", "expected a mapping"),
    ],
)
def test_search_section_errors(tmp_path, search, extra, key, words):
    with pytest.raises(SpecError) as info:
        load_experiment(experiment(tmp_path, search, extra))
    assert info.value.key == key, str(info.value)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_search_and_grid_flags_kept_apart(tmp_path):
    with pytest.raises(SpecError, match="--search optuna --trials N"):
        sweep(experiment(tmp_path), tmp_path / "out")
    with pytest.raises(SpecError, match="--trials"):
        sweep(experiment(tmp_path), tmp_path / "out", search="optuna")
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"base: {DIGITS}\nset: {SET}\n")
    with pytest.raises(SpecError, match="no search: section"):
        sweep(plain, tmp_path / "out", search="optuna", trials=2)
    with pytest.raises(SpecError, match="goes with --search"):
        sweep(plain, tmp_path / "out", trials=2)


def test_a_tiny_search_scores_val_only_and_records_the_best(tmp_path):
    exp = experiment(tmp_path, LR + "\nprior.name: {choices: [standard_normal, vamp]}")
    out = tmp_path / "out"
    result = sweep(exp, out, search="optuna", trials=3)
    assert result.exit_code == 0, result.problems()
    runs = sorted(p.name for p in out.iterdir() if p.name.startswith("trial-"))
    assert runs == ["trial-0", "trial-1", "trial-2"]
    for run in runs:
        assert (out / run / "eval-val.json").is_file()
        assert not list((out / run).glob("eval-test*")), "a search never scores test"
    summary = json.loads((out / "search.json").read_text())
    values = {t["number"]: t["value"] for t in summary["trials"]}
    assert len(values) == 3 and summary["best"]["value"] == max(values.values())
    best = summary["best"]
    assert json.loads((out / best["run"] / "eval-val.json").read_text())["log_px"] == pytest.approx(
        best["value"]
    )
    assert set(best["params"]) == {"train.lr", "prior.name"}
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{out}/.sweep/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    again = sweep(exp, out, search="optuna", trials=3)  # the study is done: nothing more
    assert len(again.summary["trials"]) == 3 and again.exit_code == 0


@pytest.mark.timing
def test_two_processes_share_one_sqlite_study(tmp_path):
    exp, out = experiment(tmp_path), tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    argv = [
        sys.executable,
        "-m",
        "pyro_vae.cli",
        "sweep",
        str(exp),
        "--out",
        str(out),
        "--search",
        "optuna",
        "--trials",
        "4",
        "--storage",
        storage,
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = optuna.load_study(study_name="exp", storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    assert all(t.user_attrs.get("superfluous") for t in study.trials if t not in complete)
    numbers = [t.number for t in complete]
    assert len(set(numbers)) == 4
    assert {t.user_attrs["run"] for t in complete} == {f"trial-{n}" for n in numbers}
    assert sorted(p.name for p in out.glob("trial-*")) == sorted(f"trial-{n}" for n in numbers)


def test_missing_optuna_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    exp = experiment(tmp_path)
    with pytest.raises(SpecError, match=r"pip install 'pyro-vae\[search\]'"):
        sweep(exp, tmp_path / "out", search="optuna", trials=2)
    assert (
        main(
            [
                "sweep",
                str(exp),
                "--out",
                str(tmp_path / "out"),
                "--search",
                "optuna",
                "--trials",
                "2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pyro-vae[search]" in err
    assert not (tmp_path / "out").exists(), "nothing ran"
