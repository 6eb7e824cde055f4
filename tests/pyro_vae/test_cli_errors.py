"""The command line's errors: every mistake and fault below is one readable line and nothing lost.

One table of bad inputs and faults through the CLI (most in-process through ``main(argv)``, a few
through the real ``pyro-vae`` console script). Each row asserts exit code 2, exactly one line on
stderr, ``pyro-vae: error: ...`` naming the culprit, no traceback, and no partial output: a fresh
``--out`` directory absent, an existing run byte-for-byte as it was (names, sizes, mtimes), no
temporary file anywhere. Then a disk that fills up mid-run. (Ctrl-C mid-training is in
test_engine_signals.py, importance sampling with large K in a small budget in test_scoring.py.)
"""

from __future__ import annotations

import argparse
import errno
import gzip
import os
import shutil
import stat
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import EXE
from tiny_runs import DIGITS, LONG, SETS, STEPS_PER_EPOCH, logged_steps

from pyro_vae import data
from pyro_vae.checkpoints import checkpoint_step
from pyro_vae.cli import EXIT_USER_ERROR, main, parser
from pyro_vae.rundir import Run
from pyro_vae.spec import COMPONENTS

# ---- the table --------------------------------------------------------------------------------


class Payload:
    """Unpickling this calls ``open(marker, "w")``: if the marker exists, code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_idx(
    path: Path, a: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None
) -> None:
    raw = (magic if magic is not None else 0x800 + a.ndim).to_bytes(4, "big")
    raw += np.asarray(dims or a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def mnist(tmp: Path, side: int = 28) -> Path:
    """Four small IDX files in tmp/mnist (images gzipped); returns the training images' path."""
    root, rng = tmp / "mnist", np.random.default_rng(0)
    root.mkdir()
    for stem, n in (("train", 40), ("t10k", 10)):
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, side, 28)))
        write_idx(root / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)
    return root / "train-images-idx3-ubyte.gz"


def truncated_gzip(tmp: Path) -> None:
    images = mnist(tmp)
    images.write_bytes(images.read_bytes()[:-20])


def idx_bad_magic(tmp: Path) -> None:
    write_idx(mnist(tmp), np.zeros((40, 28, 28)), magic=0x801)


def idx_bad_dims(tmp: Path) -> None:
    write_idx(mnist(tmp), np.zeros((40, 28, 28)), dims=(41, 28, 28))


def npz(values: np.ndarray, key: str = "x") -> Callable[[Path], None]:
    return lambda tmp: np.savez(tmp / "a.npz", **{key: values})


def text(name: str, content: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(content)

    return write


def edit_config(old: str, new: str) -> Callable[[Path], None]:
    def edit(tmp: Path) -> None:
        config = tmp / "run" / "config.yaml"
        assert old in config.read_text()
        config.write_text(config.read_text().replace(old, new))

    return edit


def checkpoint(write: Callable[[Path, Path], None]) -> Callable[[Path], None]:
    """Replace the run's last.ckpt: ``write(path, tmp)``."""
    return lambda tmp: write(tmp / "run" / "checkpoints" / "last.ckpt", tmp)


def payload(path: Path, tmp: Path) -> None:
    torch.save({"state_dict": Payload(tmp / "pwned"), "global_step": 2}, path)


def weights_only(path: Path, tmp: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({"state_dict": state["state_dict"], "global_step": state["global_step"]}, path)


def disk_full(after: int = 0) -> Callable[[pytest.MonkeyPatch], None]:
    """``os.fsync`` of a regular file fails with ENOSPC after ``after`` successful ones: data
    written to the page cache that the disk cannot take (where a full disk shows up with delayed
    allocation). Every file the package writes atomically goes through an fsync."""

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        real, left = os.fsync, [after]

        def fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                if left[0] == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                left[0] -= 1
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    return patch


def locked_dir(tmp: Path) -> None:
    (tmp / "locked").mkdir(mode=0o500)


@dataclass(frozen=True)
class Case:
    """``argv`` with ``{tmp}`` (the test's directory), ``{run}`` (a copy of a finished run) and
    ``{out}`` (a run directory that must not appear); ``culprit`` and ``fragments`` must appear
    in the one line. ``setup(tmp)`` writes files; ``fault(monkeypatch)`` breaks the machine.
    ``console``: run through the console script. ``never``: a file under tmp that must not appear."""

    argv: tuple[str, ...]
    culprit: str
    fragments: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None
    fault: Callable[[pytest.MonkeyPatch], None] | None = None
    console: bool = False
    never: str = ""


def train(*sets: str) -> tuple[str, ...]:
    return ("train", DIGITS, *SETS, *(f"--set={s}" for s in sets), "--out", "{out}")


def train_file(name: str, *sets: str) -> tuple[str, ...]:
    return ("train", f"{{tmp}}/{name}", *(f"--set={s}" for s in sets), "--out", "{out}")


NPZ = ("data.name=npz", "data.path={tmp}/a.npz", "train.batch_size=4")
MNIST = ("data.name=mnist", "data.root={tmp}/mnist", "train.batch_size=4")
GRID = np.tile([[0.0, 1.0], [1.0, 0.0]], (20, 1))
ROOT = os.geteuid() == 0

CASES: dict[str, Case] = {
    # unknown keys and names at every level of the spec
    "unknown top-level key": Case(
        train("lattent_dim=4"), "lattent_dim", ("did you mean 'latent_dim'",)
    ),
    "unknown section key": Case(train("evaluate.samples=3"), "evaluate.samples", ("num_samples",)),
    "unknown component key": Case(train("encoder.hiden=[8]"), "encoder.hiden", ("'hidden'",)),
    "unknown prior": Case(
        train_file("s.yaml"),
        "prior.name",
        ("'gauss'", "standard_normal"),
        setup=text("s.yaml", "prior: {name: gauss}\n"),
    ),
    "unknown likelihood": Case(train("likelihood.name=poisson"), "likelihood.name", ("bernoulli",)),
    "unknown dataset": Case(train("data.name=cifar10"), "data.name", ("digits", "mnist")),
    "unknown model kind": Case(train("model.name=vea"), "model.name", ("vae", "cvae", "gmvae")),
    "unknown estimator": Case(train("estimator.name=elbo"), "estimator.name", ("iwae",)),
    "unknown network": Case(train("encoder.name=resnet"), "encoder.name", ("mlp",)),
    "unknown activation": Case(train("decoder.activation=swish"), "decoder.activation", ("tanh",)),
    # wrong types
    "integer expected": Case(train("train.max_epochs=many"), "train.max_epochs", ("integer",)),
    "list item type": Case(train("encoder.hidden=[8, x]"), "encoder.hidden[1]", ("integer",)),
    "boolean expected": Case(train("train.progress=maybe"), "train.progress", ("true or false",)),
    "section not a mapping": Case(
        train_file("s.yaml"), "train", ("expected a mapping",), setup=text("s.yaml", "train: 5\n")
    ),
    # out-of-range values
    "latent_dim 0": Case(
        train_file("s.yaml"),
        "latent_dim",
        (">= 1, got 0",),
        setup=text("s.yaml", "latent_dim: 0\n"),
    ),
    "negative beta": Case(train("beta=-0.5"), "beta", ("positive", "-0.5")),
    "K 0 particles": Case(
        train("estimator.name=iwae", "estimator.particles=0"),
        "estimator",
        ("particles must be >= 1",),
    ),
    "K 0 importance samples": Case(
        ("evaluate", "{run}", "--num-samples", "0"), "--num-samples", (">= 1",)
    ),
    "batch larger than data": Case(
        train("train.batch_size=65"),
        "train.batch_size",
        ("65 is larger than the 64 training items",),
    ),
    # YAML
    "YAML syntax error": Case(
        train_file("s.yaml"),
        "s.yaml",
        ("line 3", "YAML syntax error"),
        setup=text("s.yaml", "latent_dim: 4\nprior: {name: vamp\n"),
    ),
    "YAML error in --set": Case(train("encoder.hidden=[8"), "--set encoder.hidden", ("YAML",)),
    # data files
    "missing spec file": Case(train_file("nope.yaml"), "nope.yaml", ("not found",)),
    "missing npz file": Case(train(*NPZ), "data.path", ("a.npz", "No such file")),
    "missing IDX files": Case(train(*MNIST), "data", ("mnist IDX files not found", "/mnist")),
    "truncated gzip": Case(
        train(*MNIST), "train-images-idx3-ubyte.gz", ("truncated",), setup=truncated_gzip
    ),
    "IDX bad magic": Case(
        train(*MNIST),
        "train-images-idx3-ubyte.gz",
        ("bad magic number 0x00000801",),
        setup=idx_bad_magic,
    ),
    "IDX header dimensions": Case(
        train(*MNIST), "train-images-idx3-ubyte.gz", ("[41, 28, 28]",), setup=idx_bad_dims
    ),
    "IDX image size": Case(
        train(*MNIST),
        "train-images-idx3-ubyte.gz",
        ("27x28", "28x28"),
        setup=lambda tmp: mnist(tmp, side=27),
    ),
    "npz wrong key": Case(
        train(*NPZ), "data.key", ("no array 'x'", "images"), setup=npz(GRID, key="images")
    ),
    "npz wrong shape": Case(
        train(*NPZ),
        "data",
        (
            "a.npz",
            "shape [40]",
        ),
        setup=npz(np.zeros(40)),
    ),
    "npz shape param": Case(train(*NPZ, "data.shape=[3]"), "data.shape", ("[2]",), setup=npz(GRID)),
    # data values
    "NaN in data": Case(
        train(*NPZ),
        "a.npz",
        ("1 non-finite",),
        setup=npz(np.where(np.arange(80).reshape(40, 2) == 7, np.nan, GRID)),
    ),
    "inf in data": Case(
        train(*NPZ, "likelihood.name=normal"),
        "a.npz",
        ("non-finite",),
        setup=npz(np.full((40, 2), np.inf)),
    ),
    "outside bernoulli support": Case(
        train(*NPZ), "data (npz, ", ("bernoulli", "{0, 1}"), setup=npz(GRID * 2)
    ),
    "outside continuous_bernoulli support": Case(
        train(*NPZ, "likelihood.name=continuous_bernoulli"),
        "data (npz, ",
        ("continuous_bernoulli", "[0, 1]"),
        setup=npz(GRID - 0.5),
    ),
    # splits
    "empty split": Case(
        train("data.val_fraction=0.0001"), "data", ("val split of digits is empty",)
    ),
    "no validation split": Case(
        train("data.val_fraction=0"), "data.val_fraction", ("val split", "empty")
    ),
    "no split to evaluate": Case(
        train("data.test_fraction=0"), "data.test_fraction", ("evaluate.split",)
    ),
    # checkpoints and runs
    "corrupt checkpoint": Case(
        ("evaluate", "{run}"),
        "last.ckpt",
        ("cannot read checkpoint",),
        setup=checkpoint(lambda p, _: p.write_bytes(b"\x80\x04junk")),
    ),
    "truncated checkpoint": Case(
        ("train", "--resume", "{run}"),
        "last.ckpt",
        ("cannot read checkpoint", "zip"),
        setup=checkpoint(lambda p, _: p.write_bytes(p.read_bytes()[:999])),
    ),
    "pickle payload, evaluate": Case(
        ("evaluate", "{run}"),
        "last.ckpt",
        ("refused by weights-only loading", "open"),
        setup=checkpoint(payload),
        console=True,
        never="pwned",
    ),
    "pickle payload, resume": Case(
        ("train", "--resume", "{run}"),
        "last.ckpt",
        ("refused by weights-only loading",),
        setup=checkpoint(payload),
        never="pwned",
    ),
    "checkpoint of another spec, evaluate": Case(
        ("evaluate", "{run}"),
        "last.ckpt",
        ("does not match", "size mismatch for posteriors.0.encoder"),
        setup=edit_config("latent_dim: 2", "latent_dim: 3"),
    ),
    "checkpoint of another spec, resume": Case(
        ("train", "--resume", "{run}"),
        "last.ckpt",
        ("does not match", "[8, 64] in the checkpoint, [9, 64] from the spec"),
        setup=edit_config(
            "encoder:\n  name: mlp\n  hidden:\n  - 8", "encoder:\n  name: mlp\n  hidden:\n  - 9"
        ),
    ),
    "checkpoint without training state": Case(
        ("train", "--resume", "{run}"),
        "last.ckpt",
        ("cannot be resumed",),
        setup=checkpoint(weights_only),
    ),
    "no checkpoint": Case(
        ("evaluate", "{run}"),
        "run",
        ("no checkpoint at",),
        setup=lambda tmp: (tmp / "run/checkpoints/last.ckpt").unlink(),
    ),
    "resume a run that does not exist": Case(
        ("train", "--resume", "{tmp}/gone"), "gone", ("no such run directory",)
    ),
    # output directories: unwritable, not a directory, full
    "out under a regular file": Case(
        ("train", DIGITS, *SETS, "--out", "{tmp}/f/run"),
        "--out",
        ("f/run", "Not a directory"),
        setup=text("f", "x"),
    ),
    "out is a regular file": Case(
        ("train", DIGITS, *SETS, "--out", "{tmp}/f"),
        "--out",
        ("exists and is not a directory",),
        setup=text("f", "x"),
    ),
    "out in /proc": Case(
        ("train", DIGITS, *SETS, "--out", "/proc/pyro-vae-run"),
        "--out",
        ("cannot create /proc/pyro-vae-run",),
    ),
    "out in a read-only directory": pytest.param(
        Case(
            ("train", DIGITS, *SETS, "--out", "{tmp}/locked/run"),
            "--out",
            ("Permission denied",),
            setup=locked_dir,
        ),
        marks=pytest.mark.skipif(
            ROOT,
            reason="root writes through chmod 0o500; the /proc and regular-file cases cover it",
        ),
    ),
    "disk full at a run's start": Case(
        train(), "config.yaml", ("No space left on device", "nothing was saved"), fault=disk_full()
    ),
    "disk full writing eval-test.npz": Case(
        ("evaluate", "{run}"), "eval-test.npz", ("No space left on device",), fault=disk_full()
    ),
    "disk full writing eval-test.json": Case(
        ("evaluate", "{run}"), "eval-test.json", ("No space left on device",), fault=disk_full(1)
    ),
    "aggregate of a folder without runs": Case(
        ("aggregate", "{tmp}/cache"),
        "cache",
        ("holds no pyro-vae run",),
        setup=text("cache/notes.txt", "x"),
    ),
    "aggregate, a baseline no group has": Case(
        ("aggregate", "{run}", "--baseline", "beta=3"), "beta", ("no group has beta=3",)
    ),
    "sweep, a grid key the spec lacks": Case(
        ("sweep", "{tmp}/exp.yaml", "--out", "{out}"),
        "grid.train.betta",
        (),
        setup=text("exp.yaml", f"base: {DIGITS}\ngrid: {{train.betta: [1, 2]}}\n"),
    ),
    "disk full writing report.html": Case(
        ("report", "{run}"),
        "report.html",
        ("No space left on device",),
        fault=disk_full(),
        setup=text("run/report.html", "<title>pyro-vae run run</title>old"),
    ),
    # the importance-sampling budget
    "budget too small, evaluate": Case(
        ("evaluate", "{run}"),
        "evaluate.memory_budget_mb",
        ("too small for one importance sample",),
        console=True,
        setup=edit_config("memory_budget_mb: 512.0", "memory_budget_mb: 1.0e-06"),
    ),
    "budget too small, train": Case(
        train("evaluate.memory_budget_mb=1e-6"), "evaluate.memory_budget_mb", ("MiB",)
    ),
    # arguments and other commands
    "unknown command": Case(("frobnicate",), "'frobnicate'", ("invalid choice",), console=True),
    "missing argument": Case(("evaluate",), "pyro-vae evaluate", ("run_dir",)),
    "argument type": Case(
        ("evaluate", "{run}", "--num-samples", "many"), "--num-samples", ("invalid int value",)
    ),
    "probe with a bad count": Case(
        ("probe", "{run}", "--labels", "ten"), "--labels", ("'ten'", "100,1000,all")
    ),
    "report of nothing": Case(("report", "{tmp}/gone"), "gone", ("no such run directory",)),
    # a file the user has is never replaced without --overwrite (the snapshot covers the run)
    "encode onto an existing file": Case(
        ("encode", "{run}", "--out", "{run}/mine.npz"),
        "--out",
        ("mine.npz exists", "--overwrite"),
        setup=text("run/mine.npz", "the user's"),
    ),
    "sample onto an existing picture": Case(
        ("sample", "{run}", "-n", "2", "--out", "{run}/s.npz", "--png", "{run}/mine.png"),
        "--png",
        ("mine.png exists", "--overwrite"),
        setup=text("run/mine.png", "the user's"),
    ),
    "compare onto a folder with a compare.md of the user's": Case(
        (
            "compare",
            "--checkpoint",
            "{run}",
            "--estimators",
            "trace",
            "--repeats",
            "2",
            "--out",
            "{run}/mine",
            "--overwrite",
        ),
        "--out",
        ("compare.md but no compare.csv",),
        setup=text("run/mine/compare.md", "the user's"),
    ),
    "encode into a folder that does not exist": Case(
        ("encode", "{run}", "--out", "{tmp}/missing/z.npz"),
        "--out",
        ("the folder", "missing does not exist"),
    ),
    "sample picture into a folder that does not exist": Case(
        ("sample", "{run}", "-n", "2", "--out", "{tmp}/s.npz", "--png", "{tmp}/missing/s.png"),
        "--png",
        ("the folder", "missing does not exist"),
    ),
    "sample picture not a png": Case(
        ("sample", "{run}", "-n", "2", "--out", "{run}/s.npz", "--png", "{run}/s.jpg"),
        "--png",
        ("ending in .png",),
    ),
    "compare with an unknown estimator": Case(
        ("compare", DIGITS, "--estimators", "bogus", "--out", "{out}"),
        "--estimators",
        ("unknown estimator 'bogus'",),
    ),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run; each case that needs a run corrupts its own copy."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", DIGITS, *SETS, "--out", str(run)]) == 0
    return run


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime in ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No dataset files from this machine's cache or system directories."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_or_fault_is_one_line_and_loses_nothing(
    case: Case, hermetic: Path, finished_run: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    tmp, out = hermetic, hermetic / "out"
    run = tmp / "run"
    shutil.copytree(finished_run, run)
    if case.setup:
        case.setup(tmp)
    before = snapshot(run)
    argv = [a.format(tmp=tmp, run=run, out=out) for a in case.argv]
    if case.console:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
        proc = subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=600, env=env)
        code, err = proc.returncode, proc.stderr
    else:
        if case.fault:
            case.fault(monkeypatch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(argv)
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert not caught, [str(w.message) for w in caught]  # more lines on a user's terminal
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), err
    for fragment in (case.culprit, *case.fragments):
        assert fragment in lines[0], (fragment, lines[0])
    assert not out.exists(), sorted(out.rglob("*"))
    assert snapshot(run) == before
    assert not list(tmp.rglob("*.tmp"))
    assert not case.never or not (tmp / case.never).exists()


def test_the_table_refuses_something_of_every_command_and_holds_no_case_twice():
    """Each command that reads input (all but ``datasets``) has refused cases, each spec
    component kind has an unknown-name case, and no two cases run the same command line."""
    cases = [c.values[0] if isinstance(c, type(pytest.param(0))) else c for c in CASES.values()]
    actions = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(actions[0].choices) - {"datasets"}
    assert commands <= {case.argv[0] for case in cases}
    unknown_names = {case.culprit for case in cases if case.culprit.endswith(".name")}
    assert {f"{key}.name" for key in COMPONENTS} - {"decoder.name", "guide.name"} <= unknown_names
    runs = [(case.argv, case.setup, case.fault) for case in cases]
    assert len(set(map(repr, runs))) == len(runs)


# ---- a disk that fills up mid-run ----------------------------------------------------------------


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_the_run_resumes(
    tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    sets = [*LONG, "train.max_epochs=2", "train.checkpoint_every_steps=3"]
    disk_full(after=3)(monkeypatch)  # config.yaml, the marker, the step-3 checkpoint; step 6 fails
    code = main(["train", DIGITS, *(f"--set={s}" for s in sets), "--out", str(run)])
    monkeypatch.undo()
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"pyro-vae: error: {Run(run).last}: No space left on device")
    assert f"{Run(run).last} (step 3)" in err and f"pyro-vae train --resume {run}" in err
    assert checkpoint_step(Run(run).last) == 3 and not list(run.rglob("*.tmp"))

    assert main(["train", "--resume", str(run)]) == 0
    assert checkpoint_step(Run(run).last) == 2 * STEPS_PER_EPOCH
    assert logged_steps(run) == list(range(2 * STEPS_PER_EPOCH))
