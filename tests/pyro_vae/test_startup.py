"""The command line imports what a command needs, when it needs it: ``--help`` and a spec with a
typo are answered before torch, Pyro or Lightning is imported, and the commands that do not train
(evaluate, encode, sample, report, compare --checkpoint) never import Lightning, nor does a
``train`` refused for its run directory or its model's size. Each command runs in a fresh
interpreter that reports what it imported (how long that takes is a benchmark:
``python -m benchmarks --only startup``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae.cli import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "examples" / "configs" / "digits.yaml")
TINY = [
    "latent_dim=2",
    "encoder.hidden=[8]",
    "decoder.hidden=[8]",
    "train.batch_size=32",
    "train.progress=false",
    "data.limit=64",
    "train.max_epochs=1",
    "evaluate.num_samples=4",
]
HEAVY = ("torch", "pyro", "lightning")
#: runs ``pyro_vae.cli.main(argv)`` as the console script does, then writes its exit status and
#: the heavy modules it imported to the file named by the first argument
PROBE = f"""
import json, sys
from pyro_vae.cli import main
report, argv = sys.argv[1], sys.argv[2:]
try:
    code = main(argv)
except SystemExit as exc:  # --help
    code = exc.code
with open(report, "w") as f:
    json.dump({{"code": code, "imported": [m for m in {HEAVY!r} if m in sys.modules]}}, f)
"""


def probe(tmp_path: Path, *argv: str) -> tuple[int, list[str], str]:
    """(exit status, heavy modules imported, stderr) of ``pyro-vae ARGV`` in a fresh process."""
    report = tmp_path / "imported.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.is_file(), done.stderr[-3000:]
    result = json.loads(report.read_text())
    return result["code"], result["imported"], done.stderr


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["evaluate", "--help"], ["compare", "--help"]],
    ids=" ".join,
)
def test_help_imports_neither_torch_nor_pyro_nor_lightning(tmp_path, argv):
    code, imported, _ = probe(tmp_path, *argv)
    assert (code, imported) == (0, [])


@pytest.mark.parametrize(
    "typo, message",
    [
        (
            "lattent_dim=4",
            (
                "lattent_dim: unknown key; valid keys: beta, data, decoder, encoder, "
                "estimator, evaluate, guide, latent_dim, likelihood, model, prior, train (did you mean "
                "'latent_dim'?)"
            ),
        ),
        ("prior.name=vampp", "prior.name: unknown prior 'vampp'; choices: "),
        ("estimator.particles=0", "estimator: particles must be >= 1, got 0"),
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
    ],
)
def test_a_typo_in_set_is_one_line_before_torch_is_imported(tmp_path, typo, message):
    code, imported, err = probe(tmp_path, "train", DIGITS, "--set", typo)
    assert (code, imported) == (2, [])
    assert err.count("\n") == 1 and err.startswith(f"pyro-vae: error: {message}"), err
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", DIGITS, *(f"--set={s}" for s in TINY), "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{run}", "--limit", "8"],
        [
            "evaluate",
            "{run}",
            "--method",
            "ais",
            "--chains",
            "2",
            "--steps",
            "3",
            "--leapfrog",
            "2",
            "--limit",
            "2",
        ],
        ["encode", "{run}", "--out", "z.npz"],
        ["sample", "{run}", "-n", "4", "--out", "x.npz"],
        ["report", "{run}"],
        [
            "compare",
            "--checkpoint",
            "{run}",
            "--out",
            "cmp",
            "--estimators",
            "trace",
            "--repeats",
            "2",
        ],
    ],
    ids=["evaluate", "evaluate-ais", "encode", "sample", "report", "compare-checkpoint"],
)
def test_a_command_that_does_not_train_never_imports_lightning(finished_run, tmp_path, command):
    code, imported, err = probe(tmp_path, *(a.format(run=finished_run) for a in command))
    assert code == 0, err[-3000:]
    assert "torch" in imported and "lightning" not in imported


@pytest.mark.parametrize(
    "sets, out, message",
    [
        ([], "mine", "mine exists and is not empty; pass --overwrite"),
        ([], "mine --overwrite", "mine is not a pyro-vae run"),
        (["latent_dim=1000000000000"], "new", "parameters (posteriors"),
    ],
    ids=["not empty", "not a run", "model too large"],
)
def test_a_train_refused_for_its_directory_or_its_size_never_imports_lightning(
    tmp_path, sets, out, message
):
    """The run directory and the model's size are checked before Lightning is imported: the
    commonest refusals of ``train`` answer without its import."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep me\n")
    argv = ["train", DIGITS, *(f"--set={s}" for s in [*TINY, *sets]), "--out", *out.split()]
    code, imported, err = probe(tmp_path, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert "torch" in imported and "lightning" not in imported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported.json", "mine"]
    assert (tmp_path / "mine" / "notes.md").read_text() == "keep me\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "1"], "--repeats: must be >= 2"),
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--out", "mine"], "mine is not empty and holds no compare.csv"),
    ],
    ids=["repeats", "epochs", "out"],
)
def test_a_compare_refused_for_its_arguments_or_out_imports_neither_torch_nor_lightning(
    tmp_path, argv, message
):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep me\n")
    code, imported, err = probe(tmp_path, "compare", DIGITS, *argv)
    assert (code, imported) == (2, []) and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported.json", "mine"]


def test_prepare_seeds_as_lightning_does(monkeypatch):
    """``prepare`` seeds without Lightning (:func:`pyro_vae.prepared.seed_everything`), leaving
    every generator, and the variable that Lightning's DDP processes re-seed from, as
    ``lightning.seed_everything`` does."""
    import random

    import lightning
    import numpy as np
    import torch

    from pyro_vae.prepared import SEED_VARIABLE, seed_everything

    def states() -> tuple:
        return (
            random.getstate(),
            np.random.get_state()[1].tolist(),
            torch.get_rng_state().tolist(),
            os.environ[SEED_VARIABLE],
        )

    monkeypatch.delenv(SEED_VARIABLE, raising=False)
    lightning.seed_everything(1234, verbose=False)
    theirs = states()
    torch.manual_seed(0)
    monkeypatch.delenv(SEED_VARIABLE)
    seed_everything(1234)
    assert states() == theirs
