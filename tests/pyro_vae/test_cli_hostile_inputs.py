"""Hostile and careless inputs through the real ``pyro-vae`` console script (issue 13, cases
6-15 and the small messages of item 18), each in its own process.

Every refused input asserts: its exit code, exactly one line on stderr naming the culprit, no
traceback, and the user's directory (the working directory, which holds the inputs and a finished
run) byte for byte as before, by a hash of the whole tree: no run directory made, nothing written.
Then what must succeed (a split of one evaluation point), what must announce itself (an absurd K)
and what must never show a traceback (a bug: one line and a log file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from crafted_files import claim_size
from processes import EXE, console, ctrl_c_after_first_line, one_line
from tiny_runs import DIGITS, SETS

from pyro_vae.cli import EXIT_INTERNAL, EXIT_INTERRUPTED, main
from pyro_vae.registry import MESSAGE_CHARS


def tree_hash(root: Path) -> str:
    """SHA-256 over every path under ``root`` (directories too) and every file's bytes."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run (trained in-process); each test copies it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", DIGITS, *SETS, "--out", str(run)]) == 0
    return run


@pytest.fixture
def work(tmp_path: Path, finished_run: Path) -> Path:
    """The user's working directory: a copy of the finished run in ``run/``."""
    shutil.copytree(finished_run, tmp_path / "work" / "run")
    return tmp_path / "work"


# ---- the table: each input refused in one line, nothing written -------------------------------


def alias_bomb(work: Path) -> None:
    """The billion-laughs document: 9 levels of 10 aliases each, 10⁹ strings from ~450 bytes."""
    lines = [
        'a0: &a0 ["lol"]',
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)),
    ]
    (work / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert len((work / "bomb.yaml").read_bytes()) < 600


def text(name: str, content: str) -> Callable[[Path], None]:
    return lambda work: (work / name).write_text(content)


def append_byte(name: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        with open(work / "run" / name, "ab") as f:
            f.write(b"\xff")

    return setup


def huge_floats(work: Path) -> None:
    """Finite float64 values beyond float32's range (3.4e38): inf after the cast."""
    np.savez(work / "a.npz", x=np.tile([[0.0, 1e300], [1.0, -1e39]], (20, 1)))


def train(*sets: str, config: str = DIGITS) -> list[str]:
    return ["train", config, *SETS, *(f"--set={s}" for s in sets), "--out", "out"]


@dataclass(frozen=True)
class Case:
    """``argv`` run in the working directory after ``setup(work)``; the one line must hold every
    fragment."""

    argv: list[str]
    fragments: tuple[str, ...]
    setup: Callable[[Path], None] | None = None


LONG_INTEGER = "7" * 5000
CASES: dict[str, Case] = {
    "6 recursive alias": Case(
        train(config="loop.yaml"),
        ("loop.yaml", "line 2", "recursive"),
        text("loop.yaml", "latent_dim: 2\nencoder: &a [*a]\n"),
    ),
    "7 alias bomb": Case(
        train(config="bomb.yaml"), ("bomb.yaml", "100000 values", "alias bomb"), alias_bomb
    ),
    "8 long integer in YAML": Case(
        train(config="long.yaml"),
        ("long.yaml", "line 2", "5000 characters"),
        text("long.yaml", f"train:\n  seed: {LONG_INTEGER}\n"),
    ),
    "8 long integer in --set": Case(
        train(f"latent_dim={LONG_INTEGER}"), ("--set latent_dim", "5000 characters")
    ),
    "8 integer beyond int64": Case(
        train(f"train.max_epochs={10**30}"), ("train.max_epochs", "out of range", "2**63")
    ),
    "9 negative seed": Case(train("train.seed=-1"), ("train.seed", "-1", "[0, 2**32)")),
    "9 seed of 2**32": Case(train(f"data.seed={2**32}"), ("data.seed", "4294967296", "[0, 2**32)")),
    "9 prior seed": Case(train("prior.name=mixture", f"prior.seed={2**40}"), ("prior.seed",)),
    "10 layer too wide": Case(
        train("encoder.hidden=[100000000000]"), ("model:", "parameters", "GiB of memory available")
    ),
    "10 latent_dim too large": Case(
        train(f"latent_dim={10**12}"), ("parameters", "reduce latent_dim")
    ),
    "11 warm-up underflows beta": Case(
        train("train.warmup_epochs=1e308"), ("train.warmup_epochs", "smallest normal")
    ),
    "13 0xFF in config.yaml": Case(
        ["report", "run"], ("run/config.yaml", "byte 0xff"), append_byte("config.yaml")
    ),
    "13 0xFF in metrics.csv": Case(
        ["report", "run"], ("run/metrics.csv", "byte 0xff"), append_byte("metrics.csv")
    ),
    "14 twenty thousand layers": Case(
        train(f"encoder.hidden=[{', '.join(['2'] * 20000)}]"),
        ("encoder", "20000 layers", "at most 1000"),
    ),
    "15 float64 beyond float32": Case(
        train("data.name=npz", "data.path=a.npz", "likelihood.name=normal", "train.batch_size=4"),
        ("a.npz", "40 values beyond float32's range"),
        huge_floats,
    ),
    # item 18: small messages, each in its own words
    "18 a directory as CONFIG": Case(train(config="run"), ("run", "is a directory")),
    "18 empty --out": Case(["train", DIGITS, "--out", ""], ("--out", "empty")),
    "18 empty compare --out": Case(["compare", DIGITS, "--out", ""], ("--out", "empty")),
    "18 compare --epochs 0": Case(["compare", DIGITS, "--epochs", "0"], ("--epochs", ">= 1")),
    "18 duplicate key": Case(
        train(config="dup.yaml"),
        ("dup.yaml", "line 3", "duplicate key 'latent_dim'", "line 1"),
        text("dup.yaml", "latent_dim: 2\nbeta: 1.0\nlatent_dim: 3\n"),
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_refused_in_one_line_and_nothing_written(case: Case, work: Path):
    if case.setup:
        case.setup(work)
    before = tree_hash(work)
    line = one_line(console(case.argv, work))
    assert line.startswith("pyro-vae: error: ")
    for fragment in case.fragments:
        assert fragment in line, (fragment, line)
    assert tree_hash(work) == before


def test_a_100_kb_value_is_named_not_echoed(work: Path):
    before = tree_hash(work)
    line = one_line(console(train("train.max_epochs=" + "x" * 100_000), work))
    assert "train.max_epochs" in line and "(100002 characters)" in line
    assert len(line) < MESSAGE_CHARS + 100
    assert tree_hash(work) == before


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """No new file in ``folder``: chmod for a user, the immutable attribute for root (whom
    permissions do not stop); skips where neither holds."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root, and no chattr +i on this file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_run_names_the_file_not_its_temporary(work: Path):
    with read_only(work / "run"):
        before = tree_hash(work)
        line = one_line(console(["evaluate", "run"], work))
        assert tree_hash(work) == before
    # the run's lock file is the first thing evaluate writes: it is refused, naming the run
    assert line.startswith("pyro-vae: error: run") and ".tmp" not in line, line
    assert "ermission denied" in line or "not permitted" in line, line


# ---- what must work: a split of one evaluation point (case 12) --------------------------------


def test_a_split_of_one_point_trains_and_evaluates(work: Path):
    """digits: round(0.0006 · 1797) = 1 test point. Training evaluates it and draws the run's
    figures (none needs a second point); a later evaluate does the same."""
    trained = console(train("data.test_fraction=0.0006"), work)
    assert trained.returncode == 0 and "Traceback" not in trained.stderr, trained.stderr
    assert ", 1 point" in trained.stdout, trained.stdout
    figures = {p.name for p in (work / "out").rglob("*.png")}
    assert {"latent_map.png", "reconstructions.png", "traversals.png"} <= figures, figures
    again = console(["evaluate", "out"], work)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    # strict JSON: the undefined standard error over one point is null, not a bare NaN

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    summary = json.loads((work / "out" / "eval-test.json").read_text(), parse_constant=refuse)
    assert summary["num_points"] == 1 and summary["log_px_sem"] is None
    assert math.isfinite(summary["log_px"])


# ---- what must announce itself: an absurd K -----------------------------------------------------


@pytest.mark.timing
def test_an_absurd_k_says_how_long_before_it_starts(work: Path):
    """K = 10¹² on the run's 360 test points: the estimate (10¹⁴·⁵ particles at any speed this
    machine has is days) comes first, on stderr; Ctrl-C then stops it with nothing written."""
    line = announced_then_ctrl_c(["evaluate", "run", "--num-samples", str(10**12)], work)
    assert "with K=1000000000000 importance samples will take about" in line, line
    assert "days" in line and "µs per particle measured" in line, line


# ---- the last resort: a bug is one line and a log file ------------------------------------------


def test_a_bug_is_one_line_naming_the_command_and_a_log_with_the_traceback(
    work: Path, tmp_path: Path
):
    """A RuntimeError planted in ``write_report`` (through sitecustomize, before the console
    script runs): exit 1, one line naming the command, the error and the log file, which holds
    the traceback."""
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(
        "import pyro_vae.report\n\n\n"
        "def write_report(run_dir):\n"
        "    raise RuntimeError('planted bug')\n\n\n"
        "pyro_vae.report.write_report = write_report\n"
    )
    before = tree_hash(work)
    proc = console(["report", "run"], work, env={"PYTHONPATH": str(plant)})
    line = one_line(proc, EXIT_INTERNAL)
    assert line.startswith(
        "pyro-vae: internal error in 'pyro-vae report': RuntimeError: planted bug; traceback in "
    ), line
    log = Path(line.rsplit("traceback in ", 1)[1])
    assert log.parent == tmp_path / "cache" / "pyro-vae" / "logs"
    assert "Traceback" in log.read_text() and "planted bug" in log.read_text()
    assert tree_hash(work) == before


# ---- data bounded from their headers (issue 28, items 3 and 4) -----------------------------------


def png_bomb(work: Path) -> None:
    """A 4×4 PNG of 70 bytes whose header claims 20000×20000: Pillow's DecompressionBombError."""
    from PIL import Image

    (work / "pngs").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(work / "pngs" / "bomb.png")
    claim_size(work / "pngs" / "bomb.png", 20000, 20000)


def npy_claiming(work: Path) -> None:
    """An .npy header claiming 10¹³ float64 values (80 TB), then 16 bytes."""
    with open(work / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**13, 1)}
        )
        f.write(bytes(16))


DATA_CASES: dict[str, Case] = {
    "3 PNG claiming 20000×20000": Case(
        train("data.name=images", "data.path=pngs"),
        ("pngs/bomb.png", "decompression bomb", "the limit is 16777216 pixels per image"),
        png_bomb,
    ),
    "4 .npy claiming 10¹³ values": Case(
        train("data.name=npz", "data.path=huge.npy"),
        ("data.path", "huge.npy: shape [10000000000000, 1] of float64", "GiB of memory available"),
        npy_claiming,
    ),
    "4 .npz of no items": Case(
        train("data.name=npz", "data.path=empty.npz"),
        ("data.key", "empty.npz['x'] holds no items (shape [0, 8, 8])"),
        lambda work: np.savez(work / "empty.npz", x=np.zeros((0, 8, 8), np.uint8)),
    ),
}


@pytest.mark.parametrize("case", list(DATA_CASES.values()), ids=list(DATA_CASES))
def test_data_refused_from_their_headers_in_one_line(case: Case, work: Path):
    """Before: the bomb and the 10¹³ values were tracebacks (exit 1), the empty archive a
    ValueError of ``min()`` (exit 1)."""
    test_refused_in_one_line_and_nothing_written(case, work)


# ---- issue 28: sizes bounded before they are allocated (items 2, 4, 6) ---------------------------


def announced_then_ctrl_c(argv: list[str], work: Path) -> str:
    """``pyro-vae ARGV`` in ``work``, started as a terminal's foreground command: its first
    stderr line (however long a busy machine takes to start it; a hang fails), then Ctrl-C,
    which must stop it in one more line (exit 130) with nothing written."""
    before = tree_hash(work)
    env = {**os.environ, "XDG_CACHE_HOME": str(work.parent / "cache")}
    line, code, out, rest = ctrl_c_after_first_line([EXE, *argv], cwd=work, env=env)
    assert code == EXIT_INTERRUPTED and rest.strip() == "pyro-vae: interrupted", (line, rest)
    assert not out and "Traceback" not in rest
    assert tree_hash(work) == before
    return line


HUGE_K = "iwae:k=100000000"  # 10⁸ particles × 32 points × 64 pixels: 763 GiB of decoder output
SIZE_CASES: dict[str, Case] = {
    "2 sample -n 10**12": Case(
        ["sample", "run", "-n", str(10**12), "--out", "s.npz"],
        ("-n", f"{10**12} samples would take 240 TiB", "at most 1000000000 per call"),
    ),
    "2 sample -n 2**63": Case(
        ["sample", "run", "-n", str(2**63), "--out", "s.npz"],
        ("-n", f"{2**63} samples", "at most 1000000000 per call"),
    ),
    "4 ais --steps 10**12": Case(
        ["evaluate", "run", "--method", "ais", "--steps", str(10**12)],
        ("--steps", f"16 chains × {10**12} steps", "evaluate.memory_budget_mb = 512 MiB"),
    ),
    "4 bdmc --steps 2**63": Case(
        ["evaluate", "run", "--method", "bdmc", "--steps", str(2**63)],
        ("--steps", f"× {2**63} steps", "512 MiB"),
    ),
    "4 ais --chains 10**12": Case(
        ["evaluate", "run", "--method", "ais", "--chains", str(10**12)], ("--chains", "512 MiB")
    ),
    "4 compare a checkpoint with k=10**8": Case(
        ["compare", "--checkpoint", "run", "--out", "cmp", "--estimators", "trace", HUGE_K],
        (
            "--estimators",
            f"{HUGE_K}: 100000000 particles × 32 points × 64 values",
            "GiB of memory free",
        ),
    ),
    "4 compare trained with k=10**8": Case(
        ["compare", DIGITS, *SETS, "--out", "cmp", "--estimators", "trace", HUGE_K],
        (
            "--estimators",
            f"{HUGE_K}: 100000000 particles × 32 points × 64 values",
            "GiB of memory free",
        ),
    ),
}


@pytest.mark.parametrize("case", list(SIZE_CASES.values()), ids=list(SIZE_CASES))
def test_a_size_beyond_its_bound_is_refused_before_it_is_allocated(case: Case, work: Path):
    test_refused_in_one_line_and_nothing_written(case, work)


def test_samples_beyond_the_free_disk_space_are_refused(work: Path, tmp_path: Path):
    """A disk with 1 MiB free (``shutil.disk_usage`` planted through sitecustomize): 10⁵
    samples, 25.2 MiB of .npz, are refused by arithmetic, before the file is opened."""
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(
        "import shutil\n\n\n"
        "def disk_usage(path):\n"
        "    return shutil._ntuple_diskusage(2**30, 2**30 - 2**20, 2**20)\n\n\n"
        "shutil.disk_usage = disk_usage\n"
    )
    before = tree_hash(work)
    line = one_line(
        console(
            ["sample", "run", "-n", "100000", "--out", "s.npz"],
            work,
            env={"PYTHONPATH": str(plant)},
        )
    )
    assert line.startswith("pyro-vae: error: -n: 100000 samples need 25.9 MiB on disk"), line
    assert "more than the 1 MiB free in " in line, line
    assert tree_hash(work) == before


def test_samples_are_written_batch_by_batch_with_the_same_values(work: Path):
    """2500 samples, three of export's batches of 1000, streamed into the .npz: the same arrays
    as the whole draw in memory gave (the loop before issue 28, below), and the PNG draws the
    first 1024 of them, not all."""
    import pyro
    import torch

    from pyro_vae.prepared import load_run

    proc = console(["sample", "run", "-n", "2500", "--out", "s.npz", "--png", "s.png"], work)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "x [2500, 1, 8, 8]" in proc.stdout and "s.png (the first 1024)" in proc.stdout
    prepared = load_run(work / "run")
    vae, bundle = prepared.vae.eval(), prepared.bundle
    zs, xs = [], []
    with torch.no_grad(), torch.random.fork_rng(), pyro.validation_enabled(False):
        torch.manual_seed(prepared.spec.train.seed)
        for start in range(0, 2500, 1000):
            z = vae.sample_codes(min(1000, 2500 - start))
            zs.append(z)
            xs.append(bundle.to_values(vae.likelihood.forward(vae.decoder(z)).sample().float()))
    written = np.load(work / "s.npz")
    assert written.files == ["x", "z"]
    np.testing.assert_array_equal(written["x"], torch.cat(xs).reshape(2500, 1, 8, 8).numpy())
    np.testing.assert_array_equal(written["z"], torch.cat(zs).numpy())


@pytest.mark.timing
@pytest.mark.parametrize("method", ["ais", "bdmc"])
def test_a_long_annealing_says_how_long_before_it_starts(method: str, work: Path):
    """10⁶ annealing steps of 10 leapfrog steps on one point: the estimate (from two timed
    transitions) comes first, on stderr, then Ctrl-C stops it with nothing written."""
    line = announced_then_ctrl_c(
        ["evaluate", "run", "--method", method, "--steps", str(10**6), "--limit", "1"], work
    )
    where = "simulated" if method == "bdmc" else "test"
    assert line.startswith(
        f"pyro-vae: {method.upper()} of 1 {where} point (16 chains × "
        "1000000 steps × 10 leapfrog steps)"
    ), line
    assert " will take about " in line and "µs per leapfrog step of a chain and point" in line
    assert line.endswith("measured); Ctrl-C stops it\n"), line
