"""Smoke test of ``python -m benchmarks`` (benchmarks/__main__.py: sections 1, 2, 4 and 7): every
speed benchmark runs end to end at toy size (the embedded digits, tiny networks, a handful of
steps and particles), so the suite cannot rot. The command line runs in a subprocess, as ``make
bench`` runs it: tests never import ``benchmarks``."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_speed_benchmark_runs_at_toy_size_and_the_report_holds_every_section(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--toy",
            "--results",
            str(tmp_path / "results"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    for heading in (
        "## Targets",
        "## How to read ±",
        "## 1. Training step",
        "## 2. Importance-sampled",
        "### Importance-sampled log p(x) at small K",
        "## 4. Scaling",
        "## 7. CLI start-up",
        "## GPU",
    ):
        assert heading in report, heading
    assert "quick smoke run" not in report and "3b" not in report  # the dropped section
    assert "skipped" not in report.lower()  # toy sizes need only the embedded digits
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert sorted(records) == ["is", "is-small", "scaling", "startup", "step", "sweep"]
    for record in records.values():
        assert record["command"].startswith("python -m benchmarks --toy")
        assert record["machine"]["torch_threads"] == 2
    # the figures the targets are checked on exist and are positive numbers
    assert records["step"]["data"]["trace"]["ratio"]["median"] > 0
    assert records["is"]["data"]["speedup_c_over_a"] > 0
    assert records["is-small"]["data"]["k10"]["plan"]["points"] > 1  # small K: batched points


def test_the_epoch_is_measured_against_the_plain_loop_and_a_bare_lightning_module(tmp_path):
    """Section 1's epoch: both ratios from the same interleaved epochs, each with its n and
    spread; the target row and the note under the targets say which one the target divides
    by."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--toy",
            "--only",
            "step",
            "--results",
            str(tmp_path / "results"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    epoch = json.loads((tmp_path / "results" / "step.json").read_text())["data"]["epoch"]
    seconds = epoch["seconds"]
    assert set(seconds) == {"pyro-vae", "plain PyTorch loop", "bare LightningModule"}
    assert len({len(s) for s in seconds.values()}) == 1 and all(
        t > 0 for s in seconds.values() for t in s
    )  # one epoch of each per triple
    for name in ("pyro-vae / plain PyTorch loop", "pyro-vae / bare LightningModule"):
        ratio = epoch["ratios"][name]
        assert (
            ratio["n"] == len(seconds["pyro-vae"])
            and ratio["low"] <= ratio["median"] <= ratio["high"]
        ), name
    assert epoch["target_divides_by"] == "bare LightningModule"  # on CPU
    report = out.read_text()
    row = next(
        line
        for line in report.splitlines()
        if line.startswith("| 1 ") and "| epoch, pyro-vae" in line
    )
    assert "/ bare LightningModule (median of n=1 paired epochs)" in row, row
    assert "The epoch row of section 1 divides by **a bare LightningModule**" in report
    assert "against the plain PyTorch loop the same epoch is" in report
