"""``python -m benchmarks.carry``: the published job's unfinished runs carried to another machine
through the repository, and put back by the next job, which goes on as if never moved. In a
subprocess, as ``make bench-carry`` and ``make bench-published-bg`` run them."""

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from toy_jobs import published, toy_run

from pyro_vae.rundir import LOCK, Run

ROOT = Path(__file__).resolve().parents[2]
#: the job's progress.json beside such a run after its second epoch (figures made up)
PROGRESS = json.dumps(
    {
        "epoch": 2,
        "val_elbo": -40.0,
        "best_val_elbo": -40.0,
        "epochs_since_best": 0,
        "epoch_seconds": [1.0, 1.0],
    }
)
#: a job that, on Ctrl-C's signal, takes a second to save, records it and exits
STAND_IN = """# a benchmarks.published job stands in
import signal, sys, time
def stop(*_):
    time.sleep(1)
    open({stopped!r}, "w").write("saved")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


def command(*argv: str, code: int = 0) -> str:
    """``argv`` run in the repository: its output; an exit other than ``code`` fails the test."""
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stdout + done.stderr[-3000:]
    return done.stdout + done.stderr


def carry(*args: str, code: int = 0) -> str:
    return command(sys.executable, "-m", "benchmarks.carry", *args, code=code)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The toy published job's VAE trained 3 epochs without a stop (its results and state)."""
    folder = tmp_path_factory.mktemp("whole")
    published(folder, "--models", "vae", "--max-epochs", "3")
    return folder


@pytest.fixture(scope="module")
def two_epochs(whole, tmp_path_factory) -> Path:
    """A state folder whose VAE run stopped after 2 of the job's epochs, as a job stopped there
    leaves it (no done.json): trained by ``pyro-vae train`` from the job's own spec."""
    state = tmp_path_factory.mktemp("trained") / "state"
    config = whole / "state" / "vae-seed0" / "config.yaml"
    pyro_vae = str(Path(sys.executable).with_name("pyro-vae"))
    command(
        pyro_vae,
        "train",
        str(config),
        "--set",
        "train.max_epochs=2",
        "--out",
        str(state / "vae-seed0"),
    )
    (state / "vae-seed0.progress.json").write_text(PROGRESS)
    return state


@pytest.fixture(scope="module")
def carried(two_epochs, tmp_path_factory) -> Path:
    """:func:`two_epochs`'s state carried into a folder of its own."""
    to = tmp_path_factory.mktemp("carried") / "carry"
    out = carry("save", "--state", str(two_epochs), "--carry", str(to), "--results", str(to.parent))
    assert "VAE (seed 0): carried at step" in out, out
    assert not (two_epochs / "vae-seed0" / LOCK).exists()  # the save's lock let go
    return to


def saved(tmp_path: Path, carried: Path) -> Path:
    """A copy of :func:`carried` of this test's own."""
    return Path(shutil.copytree(carried, tmp_path / "carry"))


def test_a_carried_run_goes_on_in_another_state_folder_as_if_never_moved(
    tmp_path, two_epochs, carried, whole
):
    """Saved from one state folder, restored by the next job into another (another machine's):
    the job resumes it, and its scores equal an uninterrupted job's of the same length, image
    by image (the best checkpoint kept its judgement across the move)."""
    to = saved(tmp_path, carried)
    manifest = json.loads((to / "carry.json").read_text())["vae-seed0"]
    step = Run(two_epochs / "vae-seed0").kept()
    assert manifest["global_step"] == max(step)
    assert {"config.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt"} <= set(
        manifest["files"]
    )
    assert not [f for f in manifest["files"] if "step-" in f or f.endswith(LOCK)]
    assert set(manifest["beside"]) == {"vae-seed0.progress.json"}

    out = published(tmp_path, "--models", "vae", "--max-epochs", "3", "--carry", str(to))
    assert f"VAE (seed 0): restored from {to} at step {manifest['global_step']}" in out, out
    assert "VAE (seed 0): resuming" in out, out
    assert not list((tmp_path / "state").glob(".*carry*"))
    moved, uninterrupted = (
        np.load(p / "results" / "published" / "vae-seed0.log-px.npy") for p in (tmp_path, whole)
    )
    assert np.array_equal(moved, uninterrupted)


def test_save_refuses_a_run_another_process_holds_and_writes_nothing(tmp_path, two_epochs):
    shutil.copytree(two_epochs, tmp_path / "a")
    with Run(tmp_path / "a" / "vae-seed0").locked("a training job"):
        out = carry(
            "save",
            "--state",
            str(tmp_path / "a"),
            "--carry",
            str(tmp_path / "carry"),
            "--results",
            str(tmp_path / "results"),
            code=2,
        )
    assert "in use by another pyro-vae process" in out and "a training job" in out
    assert not (tmp_path / "carry").exists()


def test_restore_checks_every_file_and_leaves_what_it_does_not_own(tmp_path, carried):
    to = saved(tmp_path, carried)
    state = tmp_path / "b"

    def restore(code: int = 0) -> str:
        return carry(
            "restore",
            "--state",
            str(state),
            "--carry",
            str(to),
            "--results",
            str(tmp_path / "results"),
            code=code,
        )

    # a folder of the user's where the run would go: left as it is
    (state / "vae-seed0").mkdir(parents=True)
    (state / "vae-seed0" / "notes.txt").write_text("mine")
    assert "is not a pyro-vae run; left alone" in restore()
    assert [p.name for p in (state / "vae-seed0").iterdir()] == ["notes.txt"]
    shutil.rmtree(state / "vae-seed0")

    # a carried file changed after it was saved: nothing restored, nothing left behind
    last = to / "vae-seed0" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    last.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert "does not match its SHA-256" in restore(code=2)
    assert sorted(p.name for p in state.iterdir()) == []
    job = toy_run(  # a job finding it stops, saying so, and trains nothing
        "benchmarks.published",
        tmp_path,
        "--models",
        "vae",
        "--state",
        str(state),
        "--carry",
        str(to),
    )
    assert job.returncode == 1 and job.stderr.startswith("VAE (seed 0): not restored from")
    assert "does not match its SHA-256" in job.stderr and "Traceback" not in job.stderr
    assert sorted(p.name for p in state.iterdir()) == []
    last.write_bytes(good)

    assert "VAE (seed 0): restored" in restore()
    assert Run(state / "vae-seed0").is_run() is None
    assert (state / "vae-seed0.progress.json").read_text() == PROGRESS
    # restored again: the state's run is as far as the carried one, so it stays
    assert "kept" in restore()

    # a manifest naming a path outside a run is refused before anything is read
    manifest = json.loads((to / "carry.json").read_text())
    manifest["vae-seed0"]["files"]["../../escape"] = "0" * 64
    (to / "carry.json").write_text(json.dumps(manifest))
    assert "is not a path inside a run" in restore(code=2)


def test_save_keeps_a_run_it_cannot_see_and_drops_one_finished(tmp_path, carried):
    """On a new machine, a save before the runs were restored must not lose the carried ones;
    a run whose result and tightness record are in the results folder is dropped."""
    to = saved(tmp_path, carried)
    empty = tmp_path / "empty-state"
    args = ["--state", str(empty), "--carry", str(to), "--results", str(tmp_path / "results")]
    none = [*args[:2], "--carry", str(tmp_path / "none"), *args[4:]]
    assert "nothing unfinished to carry" in carry("save", *none)
    assert not (tmp_path / "none").exists()  # nothing to say: no folder, no manifest
    assert "vae-seed0: kept as carried" in carry("save", *args)
    assert (to / "vae-seed0" / "checkpoints" / "last.ckpt").is_file()
    assert (to / "vae-seed0.progress.json").is_file()

    published_results = tmp_path / "results" / "published"
    published_results.mkdir(parents=True)
    (published_results / "vae-seed0.json").write_text("{}")
    (published_results / "vae-seed0.tightness.json").write_text("{}")
    assert "vae-seed0: finished, dropped from the carry" in carry("save", *args)
    assert sorted(p.name for p in to.iterdir()) == ["carry.json"]
    assert json.loads((to / "carry.json").read_text()) == {}


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("tail") is None, reason="needs make and tail"
)
def test_make_bench_carry_stops_the_running_job_and_waits_for_it_before_saving(tmp_path):
    """A stand-in job in the state folder (as ``make bench-published-bg`` starts one) gets
    Ctrl-C's signal, and the save (a stand-in python recording what it found) starts only once
    the job has ended: a job saves where it is on that signal, so a save before its end would
    carry the checkpoint before."""
    state, stopped, record = tmp_path / "state", tmp_path / "stopped", tmp_path / "save"
    fake = tmp_path / "python"
    fake.write_text(
        f'#!/bin/sh\n[ -f "{stopped}" ] && s=after || s=before\n'
        f'printf "%s\\n" "$s" "$@" > "{record}"\n'
    )
    fake.chmod(0o755)
    job = subprocess.Popen(
        [sys.executable, "-c", STAND_IN.format(stopped=str(stopped))],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert job.stdout is not None and job.stdout.readline() == "ready\n"
    threading.Thread(target=job.wait, daemon=True).start()  # reaped at its end: no zombie
    (state / "job-vae").mkdir(parents=True)
    (state / "job-vae" / "pid").write_text(f"{job.pid}\n")
    done = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "bench-carry",
            f"STATE={state}",
            f"CARRY={tmp_path / 'carry'}",
            f"PY={fake}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"stopping job {job.pid}" in done.stdout
    assert job.poll() == 0 and stopped.read_text() == "saved"
    found, *argv = record.read_text().splitlines()
    assert found == "after"
    assert argv == [
        "-m",
        "benchmarks.carry",
        "save",
        "--state",
        str(state),
        "--carry",
        str(tmp_path / "carry"),
    ]
