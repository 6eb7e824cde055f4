"""``python -m benchmarks.published`` (the published protocol, section 3) at toy size: a job
killed mid-model continues from its checkpoint, two jobs share one state folder, and the
background make targets that start such jobs. The command lines run in a subprocess, as
``make bench-published`` runs them: tests never import ``benchmarks``."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from toy_jobs import published

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timing
def test_a_published_protocol_run_killed_mid_model_continues_from_its_checkpoint(tmp_path):
    """``make bench-published`` stopped in the middle of the VAE's training twice, by Ctrl-C (the
    run saves mid-epoch) and by SIGKILL (as a session's end: back to the last epoch's
    checkpoint), each time started again: the run resumes from ``last.ckpt`` and ends exactly as
    an uninterrupted run of the same length (Lightning restores weights, optimizer, loop and
    RNG)."""

    def command(state: Path, epochs: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.published",
            "--toy",
            "--models",
            "vae",
            "--max-epochs",
            str(epochs),
            "--state",
            str(state),
            "--results",
            str(state.parent / f"{state.name}-results"),
        ]

    progress = tmp_path / "state" / "vae-seed0.progress.json"

    def epoch() -> int:
        return json.loads(progress.read_text())["epoch"] if progress.is_file() else 0

    logs = []
    for stop in (signal.SIGINT, signal.SIGKILL):
        job = subprocess.Popen(
            command(tmp_path / "state", 1000),
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        start, deadline = epoch(), time.monotonic() + 600  # a guard against a hang, not a speed
        while epoch() < start + 2:  # of 1000 epochs: the signal comes long before the end
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0][-3000:]
            time.sleep(0.05)
        job.send_signal(stop)
        logs.append(job.communicate(timeout=600)[0])
    assert "interrupted (Ctrl-C)" in logs[0] and "resuming" in logs[1]
    end = epoch() + 2  # last.ckpt holds this epoch or the next one: one more at least
    # the report of a job in progress: epochs reached, and a cheap look at the best checkpoint
    report = tmp_path / "partial.md"
    done = subprocess.run(
        [*command(tmp_path / "state", 1000), "--report", "--peek", "8", "16", "--out", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in report.read_text().splitlines() if line.startswith("| VAE |"))
    assert "running" in row and "on the first 8 test images, K = 16" in row, row
    assert "Not finished (their targets pending): VAE (seed 0)" in report.read_text()
    assert end < 1000
    out = {}
    for name, state in (("resumed", tmp_path / "state"), ("straight", tmp_path / "straight")):
        done = subprocess.run(
            command(state, end), cwd=ROOT, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out[name] = done.stdout
    assert "VAE (seed 0): resuming" in out["resumed"] and "resuming" not in out["straight"]
    metrics = (tmp_path / "state" / "vae-seed0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    epochs = [
        int(row.split(",")[header.index("epoch")])
        for row in metrics[1:]
        if row.split(",")[header.index("val_elbo")]
    ]
    assert epochs == list(range(end))  # every epoch validated once: none lost, none repeated
    results = [
        json.loads((tmp_path / f"{s}-results" / "published" / "vae-seed0.json").read_text())
        for s in ("state", "straight")
    ]
    assert results[0]["epochs"] == results[1]["epochs"] == end
    for key in ("best_val_elbo", "log_px", "elbo"):
        assert results[0][key] == results[1][key], key
    # each test image's log p̂(x) is kept beside the record, and its mean is the record's
    record = tmp_path / "state-results" / "published" / "vae-seed0.json"
    points = record.with_suffix(".log-px.npy")
    kept = np.load(points, allow_pickle=False)
    assert kept.shape == (results[0]["test_points"],)
    assert kept.mean() == pytest.approx(results[0]["log_px"], abs=1e-9)
    # a record without them (scored by older code) is scored again for them alone, and only if
    # the mean comes out as recorded: here first with a record that says 1 nat more
    points.unlink()
    honest = record.read_text()
    record.write_text(json.dumps({**results[0], "log_px": results[0]["log_px"] + 1}))
    again = subprocess.run(
        command(tmp_path / "state", end), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "VAE (seed 0): not kept: scored again" in again.stdout, again.stdout[-3000:]
    assert not points.exists()
    record.write_text(honest)
    again = subprocess.run(
        command(tmp_path / "state", end), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "VAE (seed 0): per-image log p(x) kept in" in again.stdout, again.stdout[-3000:]
    assert "resuming" not in again.stdout and record.read_text() == honest
    np.testing.assert_allclose(np.load(points, allow_pickle=False), kept, rtol=0, atol=1e-9)


def test_a_published_protocol_job_leaves_a_run_another_job_holds_and_trains_the_next(tmp_path):
    """Two ``make bench-published`` jobs share one state directory, one per core: a job that finds
    a model's run locked by the other job moves on to the next model, and never trains or
    scores the locked one; it takes the models in the order given. The section it writes is the whole table, not its models alone."""
    from pyro_vae.rundir import LOCK, Run

    state, results = tmp_path / "state", tmp_path / "results"

    def job(models: str) -> str:
        return published(tmp_path, "--models", models, "--max-epochs", "1")

    (state / "vae-seed0").mkdir(parents=True)
    with Run(state / "vae-seed0").locked("the other job"):
        out = job("vamp,vae")  # in the order given, not the table's
        assert "VAE (seed 0): left to another job" in out, out[-3000:]
        assert out.index("VampPrior (seed 0): starting") < out.index("VAE (seed 0): left to")
        assert "in use by another pyro-vae process" in out
        assert sorted(p.name for p in (state / "vae-seed0").iterdir()) == [LOCK]
    assert sorted(p.name for p in (results / "published").glob("*.json")) == ["vamp-seed0.json"]
    report = (tmp_path / "BENCHMARKS.md").read_text()
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ")]
    assert {"| VAE", "| VampPrior", "| HVAE (2 layers)", "| IWAE k=5, DReG"} <= set(rows), rows
    assert (
        "Not finished (their targets pending): VAE (seed 0), HVAE (2 layers) (seed 0), "
        "IWAE k=5, DReG (seed 0)."
    ) in report
    # the VAE's run free again: trained and scored; the VampPrior's gain over it is paired
    out = job("vae,vamp")
    assert "VAE seed 0: test log p(x)" in out, out[-3000:]
    assert "VampPrior seed 0: test log p(x)" not in out  # finished: left as it is
    assert "VampPrior (seed 0): scoring" not in out
    d = np.load(results / "published" / "vamp-seed0.log-px.npy", allow_pickle=False) - np.load(
        results / "published" / "vae-seed0.log-px.npy", allow_pickle=False
    )
    gain = f"VampPrior {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} nats"
    assert gain in (tmp_path / "BENCHMARKS.md").read_text(), gain


@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git"
)
@pytest.mark.parametrize(
    "target, variable, folder",
    [("bench-published-bg", "STATE", "job-vae"), ("bench-ais-bg", "AIS_STATE", "job")],
)
def test_a_background_target_never_touches_a_folder_it_did_not_make(
    tmp_path, target, variable, folder
):
    """``make bench-published-bg STATE=...`` replaces the snapshot in its job folder; pointed at a
    directory where a folder of that name is the user's, it refuses and changes nothing."""
    mine = tmp_path / folder / "code" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("the user's")
    done = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            target,
            f"{variable}={tmp_path}",
            "MODELS=vae",
            f"RUN={tmp_path}",
            "THREADS=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    assert "is not a pyro-vae job folder; nothing was changed" in done.stderr
    assert mine.read_text() == "the user's"
    assert sorted(p.name for p in (tmp_path / folder).rglob("*")) == ["code", "mine.txt"]


@pytest.mark.timing
@pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None or shutil.which("setsid") is None,
    reason="needs make, git and setsid",
)
def test_a_background_target_takes_a_state_folder_with_spaces_and_quotes(tmp_path):
    """``make bench-quality-bg STATE="..."`` with a space and a quote in the path: the job folder
    is made there, the job (a stand-in python recording its arguments) gets the path as one
    argument, and a refusal names the whole path (before: an empty one, split at the space)."""
    record, fake = tmp_path / "argv", tmp_path / "python"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$PWD" "$@" > "{record}.tmp" && mv "{record}.tmp" "{record}"\n'
    )
    fake.chmod(0o755)

    def make(state: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "make",
                "-s",
                "-o",
                ".venv/.installed",
                "bench-quality-bg",
                f"STATE={state}",
                "MODELS=vae",
                "THREADS=1",
                f"PY={fake}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    theirs = tmp_path / "their state" / "job-vae"
    theirs.mkdir(parents=True)
    done = make(theirs.parent)
    assert done.returncode != 0 and not any(theirs.iterdir())
    assert f"{theirs} exists and is not a pyro-vae job folder" in done.stderr, done.stderr

    state = tmp_path / "my state's runs"
    done = make(state)
    assert done.returncode == 0 and f"log {state / 'job-vae' / 'log'}" in done.stdout, done.stderr
    deadline = time.monotonic() + 600  # the job's record, however late: a guard against a hang
    while not record.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    argv = record.read_text().splitlines()
    assert argv[0] == str(state / "job-vae" / "code")
    assert argv[argv.index("--state") + 1] == str(state)
    assert (state / "job-vae" / "code" / "Makefile").is_file()


def test_the_report_shows_every_seed_found_and_a_one_seed_model_running_at_another(tmp_path):
    """``--report`` with no ``--seeds``: the seeds of the runs and records it finds; a model the
    table shows at one seed gets a row at another seed once a job is training it there."""
    state = tmp_path / "state"
    state.mkdir()
    progress = {
        "epoch": 3,
        "val_elbo": -50.0,
        "best_val_elbo": -49.0,
        "epochs_since_best": 1,
        "epoch_seconds": [1.0, 1.0, 1.0],
    }
    (state / "hvae-seed1.progress.json").write_text(json.dumps(progress))
    published(tmp_path, "--report")
    rows = [r for r in (tmp_path / "BENCHMARKS.md").read_text().splitlines() if r.startswith("| ")]
    assert any(r.startswith("| HVAE (2 layers) | 1 | 3 (running") for r in rows), rows
    assert any(r.startswith("| VAE | 1 | not started") for r in rows), rows  # seeds 0 and 1
    assert not any(r.startswith("| IWAE k=5, DReG | 1 |") for r in rows), rows  # not trained
    published(tmp_path, "--report", "--seeds", "7")  # trains nothing: no row for seed 7
    rows = [r for r in (tmp_path / "BENCHMARKS.md").read_text().splitlines() if r.startswith("| ")]
    assert not any(" | 7 | " in r for r in rows), rows
    assert any(r.startswith("| VAE | 1 | not started") for r in rows), rows  # still found


@pytest.mark.parametrize("mode", ["--report", "--tightness"])
def test_a_job_that_trains_nothing_refuses_a_state_folder_that_is_not_there(tmp_path, mode, capsys):
    """A mistyped ``--state`` would have the section say that every run is gone from disk."""
    from benchmarks.published import main

    out = tmp_path / "BENCHMARKS.md"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                mode,
                "--state",
                str(tmp_path / "nowhere"),
                "--out",
                str(out),
                "--results",
                str(tmp_path),
            ]
        )
    assert exit_.value.code == 2
    assert f"--state {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "-1"], "argument --seeds: -1 is out of range: it must be in [0, 4294967295]"),
        (["--seeds", "4294967296"], "4294967296 is out of range"),
        (["--threads", "0"], "argument --threads: 0 is out of range: it must be in [1, 1024]"),
        (["--threads", "5000"], "argument --threads: 5000 is out of range"),
        (["--max-epochs", "0"], "argument --max-epochs: 0 is out of range"),
        (["--peek", "10", "x"], "argument --peek: 'x' is not an integer"),
    ],
)
def test_a_count_or_seed_out_of_range_is_a_one_line_error(args, message, capsys, tmp_path):
    """What ``train.seed`` refuses, and a count below one, stop the command before any work (and
    were the check gone, the report it ran would land in ``tmp_path``, not the repository)."""
    from benchmarks.published import main

    where = ["--state", str(tmp_path), "--results", str(tmp_path), "--out", str(tmp_path / "B.md")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--report", *where])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_time_left_is_not_moved_by_a_paused_epoch(tmp_path):
    """One epoch stretched to 20 min by a SIGSTOP among 10 s epochs: the pace stays 10 s, 5.6 h
    for the 2000 epochs left, where the mean (308 s) would say 171 h."""
    from benchmarks.published import MODELS, PROGRESS, Entry, remaining

    entry = Entry(MODELS[0], 1, tmp_path, tmp_path / "results")
    entry.write(
        PROGRESS,
        {
            "epoch": 4,
            "val_elbo": -240.0,
            "best_val_elbo": -240.0,
            "epochs_since_best": 0,
            "epoch_seconds": [10.0, 10.0, 1200.0, 10.0],
        },
    )
    assert remaining(entry, 2004) == "epoch 4/2004, 10.0 s/epoch, at most 5.6 h left"
