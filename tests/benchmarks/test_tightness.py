"""``python -m benchmarks.published --tightness`` (benchmarks/tightness.py) at toy size: AIS
against IS for each scored model, kept per image, and section 3's paired δ recomputed from the
records. The jobs run in a subprocess, as the make targets run them."""

import json
import math
import statistics

import pytest
from toy_jobs import published

from benchmarks.tightness import shift


def test_each_scored_model_gets_ais_against_is_and_the_gain_its_paired_shift(tmp_path):
    published(tmp_path, "--models", "vae,vamp", "--max-epochs", "2", "--seeds", "1")
    out = published(tmp_path, "--tightness", "--models", "vae,vamp,hvae", "--seeds", "1")
    assert "HVAE (2 layers) (seed 1): not scored yet; no tightness" in out, out[-3000:]
    folder = tmp_path / "results" / "published"
    records = {
        m: json.loads((folder / f"{m}-seed1.tightness.json").read_text()) for m in ("vae", "vamp")
    }
    gaps = {}
    for name, r in records.items():
        ais, is_ = r["points"]["log_px"], r["points"]["is_log_px"]
        assert len(ais) == len(is_) == r["num_points"] == 8
        gaps[name] = [a - b for a, b in zip(ais, is_)]
        assert statistics.fmean(gaps[name]) == r["gap"]  # the summary is the per-image mean
        assert r["num_steps"] == 5 and r["num_chains"] == 16 and r["is_num_samples"] == 16
    # the pieces are kept beside the runs, which stay runs (nothing foreign inside them)
    pieces = sorted(p.name for p in (tmp_path / "state" / "tightness").iterdir())
    assert [p.split("-")[0] for p in pieces] == ["vae", "vamp"], pieces
    assert not any((tmp_path / "state" / "vae-seed1").rglob("ais-*"))
    # the section: both rows, and δ = the paired mean of the gap differences ± its s.e.
    d = [a - b for a, b in zip(gaps["vamp"], gaps["vae"])]
    shift = f"VampPrior {statistics.fmean(d):+.3f} ± {statistics.stdev(d) / math.sqrt(len(d)):.3f} nats (seed 1, 8 images)"
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert shift in report, report[-3000:]
    assert "| VampPrior | 1 | 8 |" in report
    assert "the table below measures each one's looseness" in report
    # scored once: a second job keeps the records as they are, and --report (no seeds named)
    # still shows the seed-1 rows it finds
    before = {m: (folder / f"{m}-seed1.tightness.json").read_bytes() for m in records}
    published(tmp_path, "--tightness", "--models", "vae,vamp", "--seeds", "1")
    assert before == {m: (folder / f"{m}-seed1.tightness.json").read_bytes() for m in records}
    published(tmp_path, "--report")
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert shift in report and "| VAE | 1 |" in report
    # a scored row without its record is named: to measure, or gone with its run
    (folder / "vamp-seed1.tightness.json").unlink()
    published(tmp_path, "--report")
    assert "Not measured yet: VampPrior (seed 1)" in (tmp_path / "BENCHMARKS.md").read_text()
    (tmp_path / "state" / "vamp-seed1" / "checkpoints" / "best.ckpt").unlink()
    out = published(tmp_path, "--tightness", "--models", "vamp", "--seeds", "1")
    assert "VampPrior (seed 1): its run is no longer on disk; no tightness" in out, out[-3000:]
    assert (
        "Not measurable: VampPrior (seed 1), whose runs are no longer on disk"
        in (tmp_path / "BENCHMARKS.md").read_text()
    )


def test_gaps_over_different_images_are_not_paired():
    one = {"points": {"log_px": [1.0, 2.0], "is_log_px": [0.5, 1.5]}}
    two = {"points": {"log_px": [1.0, 2.0, 3.0], "is_log_px": [0.5, 1.5, 2.0]}}
    with pytest.raises(ValueError, match="different images"):
        shift(one, two)
    assert shift(two, two) == (0.0, 0.0, 3)


def test_tightness_and_report_are_one_or_the_other(capsys):
    from benchmarks.published import main

    with pytest.raises(SystemExit) as exit_:
        main(["--report", "--tightness"])
    assert exit_.value.code == 2
    assert "--tightness: not allowed with argument --report" in capsys.readouterr().err
