"""A run directory's safety, through the ``pyro-vae`` console script in a subprocess.

``--overwrite`` never touches what is not a run (nor the working directory); a run is locked
while a command writes into it, and a killed holder's lock is taken over; report.html is
written atomically and never through a symbolic link; resume and evaluate refuse a hand-edited
config.yaml or a foreign checkpoint, naming the changed keys, and take a checkpoint written
before checkpoints recorded their spec with a one-line notice. Each refusal: exit 2, one line
on stderr, no traceback, and the tree of files as it was (:func:`tree_hash`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from holder import PHASES
from processes import EXE
from tiny_runs import DIGITS, SETS  # SETS: a one-epoch run of 2 steps, tiny nets

from pyro_vae import prepared as prepared_module
from pyro_vae import report as report_module
from pyro_vae.cli import main
from pyro_vae.engine import RunCSVLogger
from pyro_vae.rundir import LOCK, MARKER, Run

HOLDER = Path(__file__).parents[1] / "holder.py"


def pyro_vae(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def tree_hash(root: Path) -> str:
    """SHA-256 over every path under ``root`` (hidden ones too): names, kinds, file bytes and
    link targets."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode())
        elif path.is_file():
            digest.update(b"file:" + path.read_bytes())
        else:
            digest.update(b"dir")
    return digest.hexdigest()


def refused(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert exit 2 and one ``pyro-vae: error:`` line holding ``fragments``; return it."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    done = pyro_vae("train", DIGITS, *SETS, "--out", run)
    assert done.returncode == 0, done.stderr
    return run


def project(root: Path) -> Path:
    """A user's project: a git folder, a source file, a spec and a thesis."""
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text("print('mine')\n")
    shutil.copy(DIGITS, root / "config.yaml")
    (root / "thesis.tex").write_text("\\chapter{VAEs}\n")
    return root


@pytest.mark.parametrize("where", ["cwd", "absolute"])
def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, where):
    root = project(tmp_path / "project")
    before = tree_hash(tmp_path)
    if where == "cwd":
        proc = pyro_vae("train", "config.yaml", *SETS, "--out", ".", "--overwrite", cwd=root)
    else:
        proc = pyro_vae("train", DIGITS, *SETS, "--out", root, "--overwrite")
    refused(proc, "not a pyro-vae run", "nothing was changed")
    assert tree_hash(tmp_path) == before
    assert (root / ".git" / "HEAD").is_file() and (root / "src" / "model.py").is_file()


@pytest.mark.parametrize(
    "mine", ["notes.md", "checkpoints/notes.md", "figures/test/latents.npz", "figures/my_plot.png"]
)
def test_overwrite_refuses_a_run_holding_a_users_file(tmp_path, finished, mine):
    """A file the run does not write, at its top level or inside its folders (an ``encode``
    output, notes beside the checkpoints, a plot of one's own among the figures), is the user's:
    --overwrite refuses the run, naming it."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / mine).write_text("keep me\n")
    before = tree_hash(tmp_path)
    refused(pyro_vae("train", DIGITS, *SETS, "--out", run, "--overwrite"), mine)
    assert tree_hash(tmp_path) == before


def test_overwrite_refuses_the_run_holding_the_working_directory(tmp_path, finished):
    """A run of only its own files is still refused while the command runs inside it (its
    top level or a folder of it): replacing it would pull the working directory away."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = tree_hash(tmp_path)
    refused(
        pyro_vae("train", DIGITS, *SETS, "--out", ".", "--overwrite", cwd=run), "working directory"
    )
    refused(
        pyro_vae("train", DIGITS, *SETS, "--out", "..", "--overwrite", cwd=run / "figures"),
        "working directory",
    )
    assert tree_hash(tmp_path) == before


def test_overwrite_replaces_a_run_and_leaves_nothing_beside_it(tmp_path, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "report.html").write_text("old")
    (tmp_path / "mine.txt").write_text("a neighbour")
    done = pyro_vae("train", DIGITS, *SETS, "--set=train.seed=1", "--out", run, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "run"]
    assert not (run / "report.html").exists() and not (run / LOCK).exists()
    assert Run(run).state() == "finished" and "seed: 1" in (run / "config.yaml").read_text()


class Holder:
    """A training of 2 epochs of 7 steps, checkpointed every 2 steps, held still at each phase
    of :data:`holder.PHASES` in turn (tests/holder.py) until :meth:`go`."""

    def __init__(self, run: Path, signals: Path) -> None:
        signals.mkdir()
        self.signals = signals
        args = [
            *SETS,
            "--set=data.limit=200",
            "--set=train.max_epochs=2",
            "--set=train.checkpoint_every_steps=2",
            "--out",
            str(run),
        ]
        self.proc = subprocess.Popen(
            [sys.executable, str(HOLDER), str(signals), ",".join(PHASES), "train", DIGITS, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def at(self, phase: str) -> None:
        """Wait until the training holds still at ``phase`` (a wait, not a timing assertion)."""
        deadline = time.monotonic() + 300
        while not (self.signals / phase).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(
                    f"never reached {phase}: exit {self.proc.wait()}, {self.proc.stderr.read()}"
                )
            time.sleep(0.05)
        assert self.proc.poll() is None

    def go(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()


def in_process(capsys: pytest.CaptureFixture[str], *args: object) -> subprocess.CompletedProcess:
    """``pyro_vae.cli.main(args)`` in this process (no imports to pay), as a finished process."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def writers(run: Path) -> list[tuple[object, ...]]:
    """Every command that writes into a run directory."""
    return [
        ("train", DIGITS, *SETS, "--out", run, "--overwrite"),
        ("evaluate", run),
        ("report", run),
        ("compare", "--checkpoint", run, "--estimators", "trace", "--repeats", "2"),
        ("encode", run, "--out", run / "z.npz"),
        ("sample", run, "-n", "4", "--out", run / "x.npz"),
        ("sample", run, "-n", "4", "--out", run.parent / "x.npz", "--png", run / "x.png"),
    ]


@pytest.mark.timing
def test_each_phase_of_a_training_refuses_every_writer_and_a_killed_holder_is_taken_over(
    tmp_path, capsys
):
    run = tmp_path / "run"
    holder = Holder(run, tmp_path / "signals")
    try:
        for phase in PHASES:
            holder.at(phase)
            before, mine = tree_hash(run), f"pid {holder.proc.pid} "
            for args in writers(run):
                refused(in_process(capsys, *args), str(run), mine, "pyro-vae train")
            if phase == "training":  # through the console script too; a reader is not refused
                refused(pyro_vae("report", run), mine)
                done = in_process(capsys, "encode", run, "--out", tmp_path / "z.npz")
                assert done.returncode == 0 and (tmp_path / "z.npz").is_file(), done.stderr
            assert tree_hash(run) == before and holder.proc.poll() is None
            if phase != PHASES[-1]:
                holder.go()
    finally:
        holder.proc.kill()
        holder.proc.communicate()
    assert (run / LOCK).read_text().split()[0] == str(holder.proc.pid)  # left behind by the kill
    done = pyro_vae("report", run)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not (run / LOCK).exists() and (run / "report.html").is_file()


def test_a_writer_takes_the_lock_before_it_reads_the_run(tmp_path, finished, capsys, monkeypatch):
    """What a command writes into a run comes from one state of it: a training that ends
    between an evaluate's reading of last.ckpt and its lock would otherwise get its final
    scores replaced by those of a checkpoint from before its end."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    reads: list[bool] = []

    def spy(module: object, name: str) -> None:
        read = getattr(module, name)

        def checked(*args: object, **kwargs: object) -> object:
            lock = run / LOCK
            reads.append(lock.is_file() and lock.read_text().split()[0] == str(os.getpid()))
            return read(*args, **kwargs)

        monkeypatch.setattr(module, name, checked)

    spy(prepared_module, "load_run")
    spy(report_module, "read_text")
    for args in writers(run)[1:]:
        reads.clear()
        done = in_process(capsys, *args)
        assert done.returncode == 0, done.stderr
        assert reads and all(reads), args
    assert not (run / LOCK).exists()


def test_report_replaces_a_symlink_and_never_writes_its_target(tmp_path, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    target = tmp_path / "precious.html"
    target.write_text("precious")
    (run / "report.html").symlink_to(target)
    done = pyro_vae("report", run)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "precious"
    assert not (run / "report.html").is_symlink() and "<html" in (run / "report.html").read_text()
    # a symbolic link for a folder inside the run is refused, not written through
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(run / "figures")
    (run / "figures").symlink_to(elsewhere)
    before = tree_hash(tmp_path)
    refused(pyro_vae("evaluate", run), "figures", "symbolic link")
    assert not list(elsewhere.iterdir())
    assert tree_hash(tmp_path) == before


def edit(run: Path, old: str, new: str) -> None:
    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new, 1))


# Each change the issue found accepted silently: a re-split of the data (test items leaking into
# training), another seed, batch size, activation or β.
EDITS = [
    ("  seed: 0\n  limit", "  seed: 1\n  limit", "data.seed (0 -> 1)"),
    ("constant\n  seed: 0", "constant\n  seed: 7", "train.seed (0 -> 7)"),
    ("batch_size: 32", "batch_size: 16", "train.batch_size (32 -> 16)"),
    ("activation: tanh", "activation: relu", "encoder.activation ('tanh' -> 'relu')"),
    ("beta: 1.0", "beta: 0.5", "beta (1.0 -> 0.5)"),
]


def test_resume_and_evaluate_refuse_a_hand_edited_config_naming_each_changed_key(
    tmp_path, finished
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for old, new, _ in EDITS:
        edit(run, old, new)
    before = tree_hash(tmp_path)
    for command in (["train", "--resume", run], ["evaluate", run]):
        refused(
            pyro_vae(*command),
            "config.yaml",
            "differs from the spec",
            "last.ckpt",
            *(key for _, _, key in EDITS),
        )
    assert tree_hash(tmp_path) == before


def test_a_foreign_checkpoint_of_the_same_shapes_is_refused(tmp_path, finished):
    other = tmp_path / "other"
    done = pyro_vae(
        "train",
        DIGITS,
        *SETS,
        "--set=estimator.name=mean_field",
        "--set=decoder.activation=relu",
        "--out",
        other,
    )
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.copy(Run(other).last, Run(run).last)
    before = tree_hash(tmp_path)
    for command in (["train", "--resume", run], ["evaluate", run]):
        refused(
            pyro_vae(*command),
            "decoder.activation ('relu' -> 'tanh')",
            "estimator.name ('mean_field' -> 'trace')",
        )
    assert tree_hash(tmp_path) == before


def test_a_checkpoint_from_before_the_record_resumes_with_a_notice(tmp_path, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = torch.load(Run(run).last, weights_only=True)
    del state["pyro_vae"]
    torch.save(state, Run(run).last)
    (run / MARKER).unlink()  # runs before this change had no marker either
    done = pyro_vae("train", "--resume", run, "--set=train.max_epochs=2", "--verbose")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: note: ") and "predates" in lines[0]
    assert "pyro_vae" in torch.load(Run(run).last, weights_only=True)  # recorded from now on


# metrics.csv of a run stopped after step 4 (its last row cut short), resumed from step 3
CUT_SHORT = "epoch,step,train_loss\n0,1,5.0\n0,2,4.0\n0,3,3.0\n0,4,2."


def metrics_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_a_resumed_runs_metrics_are_cut_back_atomically_and_never_through_a_link(
    tmp_path, monkeypatch
):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(CUT_SHORT)
    precious = tmp_path.parent / f"{tmp_path.name}-precious.txt"
    precious.write_text("precious")
    (tmp_path / ".metrics.csv.tmp").symlink_to(precious)  # a fixed temporary name, planted
    renamed = []
    replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda a, b: renamed.append((Path(a), Path(b))) or replace(a, b)
    )
    _ = RunCSVLogger(Run(tmp_path), first_step=3).experiment  # rewrites metrics.csv on creation
    assert precious.read_text() == "precious"
    assert metrics_rows(metrics) == [
        ["epoch", "step", "train_loss"],
        ["0", "1", "5.0"],
        ["0", "2", "4.0"],
    ]
    [(tmp, target)] = renamed  # a fresh sibling, renamed over metrics.csv, then gone
    assert target == metrics and tmp.parent == tmp_path and tmp.name != ".metrics.csv.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.csv.tmp", "metrics.csv"]


def test_a_failed_cut_back_of_metrics_leaves_the_file_whole_and_no_temporary(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(CUT_SHORT)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as raised:
        _ = RunCSVLogger(Run(tmp_path), first_step=3).experiment
    assert raised.value.filename == str(metrics)  # the real file, not a temporary one
    assert metrics.read_text() == CUT_SHORT
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_full_disk_while_drawing_the_figures_is_finished_by_the_same_command(
    tmp_path, capsys, monkeypatch
):
    """Training and scoring done, then the disk fills while the figures are drawn: one line
    naming the file and what finishes the run. ``--resume`` (the disk still full) and then the
    same command draw them, scoring again but training nothing and overwriting nothing."""
    from pyro_vae import figures

    run, draw = tmp_path / "run", figures.run_figures

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "figures" / "x.png"))

    monkeypatch.setattr(figures, "run_figures", full)
    train = ("train", DIGITS, *SETS, "--out", run)
    for args in (train, ("train", "--resume", run)):
        refused(
            in_process(capsys, *args),
            f"{run / 'figures' / 'x.png'}: No space left",
            f"the same command or pyro-vae train --resume {run} scores it",
        )
        assert Run(run).state() == "finished"
    trained = Run(run).last.read_bytes(), (run / "metrics.csv").read_bytes()
    monkeypatch.setattr(figures, "run_figures", draw)
    done = in_process(capsys, *train)
    assert done.returncode == 0 and "run directory" in done.stdout, done.stderr
    drawn = {p.name for p in (run / "figures" / "test").iterdir()}
    assert (run / "eval-test.json").is_file() and {"log_px.png", "reconstructions.png"} <= drawn
    assert (Run(run).last.read_bytes(), (run / "metrics.csv").read_bytes()) == trained
    refused(in_process(capsys, *train), "exists and is not empty")  # finished: not this case


def test_a_fifo_in_place_of_the_lock_file_is_refused_naming_it(tmp_path, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    os.mkfifo(run / LOCK)
    before = tree_hash(run)
    refused(pyro_vae("evaluate", run), f"{run / LOCK}: is not a regular file", "remove it")
    assert tree_hash(run) == before


def test_a_truncated_checkpoint_is_named_as_cut_short_by_load_run(tmp_path, finished):
    """torch reads a zip archive cut anywhere past its first bytes as ``OSError: [Errno 22]``
    or a zip reader's error; ``pyro_vae.load_run`` says what happened."""
    import pyro_vae
    from pyro_vae.registry import SpecError

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    whole = Run(run).last.read_bytes()
    for size in (10, 100, len(whole) // 2, len(whole) - 1):
        Run(run).last.write_bytes(whole[:size])
        with pytest.raises(SpecError, match="cannot read checkpoint: .*the file ends early"):
            pyro_vae.load_run(run)


def test_an_evaluation_keeps_its_per_point_arrays_and_refuses_a_mismatched_pair(tmp_path, finished):
    """``eval-test.npz`` beside ``eval-test.json``: the points' rows, per-point log p̂(x), its
    Monte Carlo s.e., ESS and ELBO, whose means are the summary's; the summary records the
    file's SHA-256, so an .npz of another evaluation is refused on reading, and ``--overwrite``
    still recognises the run."""
    import numpy as np

    from pyro_vae.registry import SpecError
    from pyro_vae.scoring import Evaluation

    run = Run(tmp_path / "run")
    shutil.copytree(finished, run.root)
    summary, points = run.summary("test"), run.points("test")
    assert summary["points_file"] == "eval-test.npz" and len(summary["data_sha256"]) == 64
    assert set(points) == {"index", "log_px", "log_px_se", "ess", "elbo", "bits_per_dim"}
    np.testing.assert_array_equal(points["index"], np.arange(summary["num_points"]))
    assert np.mean(points["log_px"]) == pytest.approx(summary["log_px"], abs=1e-12)
    assert np.mean(points["log_px_se"]) == pytest.approx(summary["log_px_stderr"], abs=1e-12)
    assert np.mean(points["ess"]) == pytest.approx(summary["ess"], abs=1e-12)
    assert np.mean(points["bits_per_dim"]) == pytest.approx(summary["bits_per_dim"], rel=1e-12)
    read = Evaluation.read(summary, points)  # what the command printed, back from the files
    assert read.log_px == summary["log_px"] and f"{summary['log_px']:.3f}" in read.lines()[0]
    np.testing.assert_array_equal(read.points.log_px.numpy(), points["log_px"])
    other = dict(points, log_px=points["log_px"] + 1.0)
    np.savez(run.root / "eval-test.npz", **other)
    with pytest.raises(SpecError, match="SHA-256 differs"):
        run.points("test")
    assert run.is_run() is None  # the .npz belongs to the layout
    (run.root / "eval-test.npz").unlink()
    with pytest.raises(SpecError, match="cannot read the per-point results"):
        run.points("test")
