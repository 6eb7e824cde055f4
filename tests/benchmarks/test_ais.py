"""Smoke test of ``python -m benchmarks.ais`` (section 5): the speed part and the quality part on
a tiny trained run, at toy sizes, in a subprocess (tests never import ``benchmarks``)."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _figures(data: dict) -> dict:
    """The scored figures of each AIS row (not its times)."""
    keys = ("num_points", "log_px", "log_px_sem", "is_log_px", "gap", "gap_sem", "acceptance")
    return {steps: {k: r[k] for k in keys} for steps, r in data["ais"].items()}


def test_ais_benchmark_runs_at_toy_size_with_and_without_a_trained_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(
        "pyro_vae.cli",
        "train",
        "examples/configs/digits.yaml",
        "--out",
        str(run),
        "--set",
        "train.max_epochs=1",
        "--set",
        "train.progress=false",
        "--set",
        "evaluate.num_samples=8",
        "--set",
        "encoder.hidden=[16]",
        "--set",
        "decoder.hidden=[16]",
        "--set",
        "latent_dim=2",
    )
    results, out = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    common = ["--toy", "--results", str(results), "--out", str(out)]
    _run("benchmarks.ais", *common)
    quality = [
        *common,
        "--quality",
        str(run),
        "--test-points",
        "30",
        "--bdmc-points",
        "2",
        "--state",
        str(tmp_path / "state"),
    ]
    _run("benchmarks.ais", *quality, "--report")  # nothing scored yet: all pending
    assert "BDMC (16 chains × 3 steps, 2 simulated images): pending" in out.read_text()
    assert not list((tmp_path / "state").glob("*/*.json"))
    _run("benchmarks.ais", *quality)
    speed = json.loads((results / "ais.json").read_text())
    assert speed["data"]["ratio"]["median"] > 0 and speed["targets"][0]["name"].startswith("AIS")
    scored = json.loads((results / "ais-quality.json").read_text())["data"]
    assert len(scored["ais"]) == 2 and scored["bdmc"]["num_points"] == 2
    assert all(r["num_points"] == 30 for r in scored["ais"].values())
    report = out.read_text()
    assert "## 5. Annealed importance sampling: speed" in report
    assert "### Annealed importance sampling: how loose is IS?" in report  # a part of section 5
    assert "log p(x) ± s.e. over images" in report
    assert "In progress" not in report
    # Saved pieces of 25 + 5 images per step count, and the BDMC run. With one piece lost (an
    # interrupted run), --report shows the images finished so far and scores nothing; the run
    # then recomputes that piece alone, to the same figures.
    pieces = sorted((tmp_path / "state").glob("*/*.json"))
    assert len(pieces) == 5 and pieces[0].name.startswith("ais-c16-l10-t3-k16-0+25")
    kept = {p: p.stat().st_mtime_ns for p in pieces[1:]}
    pieces[0].unlink()
    _run("benchmarks.ais", *quality, "--report")
    partial = json.loads((results / "ais-quality.json").read_text())["data"]
    assert partial["ais"]["3"]["num_points"] == 5 and partial["ais"]["5"]["num_points"] == 30
    assert not pieces[0].exists() and "In progress" in out.read_text()
    _run("benchmarks.ais", *quality)
    again = json.loads((results / "ais-quality.json").read_text())["data"]
    assert pieces[0].is_file() and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert _figures(again) == _figures(scored)
    # Two jobs share the pieces: a piece that another live job holds (its flock taken here) is
    # passed over, the others are kept, and the report says what is left. The lock file of a
    # killed job (no holder) blocks nothing: the next run scores the piece, to the same figures.
    lock = pieces[1].with_suffix(".lock")
    pieces[1].unlink()
    holder = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        log = _run("benchmarks.ais", *quality)
    finally:
        os.close(holder)
    assert f"{pieces[1].stem}: scored by another job; passed over" in log, log
    assert not pieces[1].exists() and "In progress" in out.read_text()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items() if p != pieces[1])
    _run("benchmarks.ais", *quality)
    assert pieces[1].is_file() and not lock.exists() and "In progress" not in out.read_text()
    assert _figures(json.loads((results / "ais-quality.json").read_text())["data"]) == _figures(
        scored
    )
