"""Smoke test of the benchmark suite: every benchmark runs end to end at toy size (the embedded
digits, tiny networks, a handful of steps and particles), so the suite cannot rot. The command
lines run in a subprocess, as ``make bench`` runs them: tests never import ``benchmarks``."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path: Path, *module_and_args: str) -> str:
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", *module_and_args, "--toy", "--results", str(tmp_path / "results"),
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text()


def test_every_benchmark_runs_at_toy_size_and_the_report_holds_every_section(tmp_path):
    report = run(tmp_path, "benchmarks")
    for heading in ("## Targets", "## 1. Training step", "## 2. Importance-sampled",
                    "## 2b. Importance-sampled log p(x) at small K",
                    "## 3. Quality", "## 4. Scaling", "## GPU"):
        assert heading in report, heading
    assert "skipped" not in report.lower()  # toy sizes need only the embedded digits
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert sorted(records) == ["is", "is-small", "quality-quick", "scaling", "step"]
    for record in records.values():
        assert record["command"].startswith("python -m benchmarks --toy")
        assert record["machine"]["torch_threads"] == 2
    # the figures the targets are checked on exist and are positive numbers
    assert records["step"]["data"]["trace"]["ratio"]["median"] > 0
    assert records["is"]["data"]["speedup_c_over_a"] > 0
    assert records["is-small"]["data"]["k10"]["plan"]["points"] > 1  # small K: batched points
    assert len(records["quality-quick"]["data"]) == 4  # VAE, IWAE-DReG, VampPrior, digits


def test_the_quality_entry_point_continues_from_finished_runs_and_averages_over_seeds(tmp_path):
    run(tmp_path, "benchmarks.quality", "--seeds", "0")
    first = json.loads((tmp_path / "results" / "quality.json").read_text())["data"]
    cached = tmp_path / "results" / "runs" / "quality.json"
    assert len(json.loads(cached.read_text())) == 4  # one per model
    report = run(tmp_path, "benchmarks.quality", "--seeds", "0", "1")
    record = json.loads((tmp_path / "results" / "quality.json").read_text())["data"]
    assert all(len(runs) == 2 for runs in record.values())
    # seed 0 was not trained again: its runs, wall times included, are the first call's
    assert all(record[model][0] == first[model][0] for model in first)
    assert len(json.loads(cached.read_text())) == 8
    assert " ± " in report  # mean ± std over the two seeds
