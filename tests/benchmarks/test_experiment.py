"""benchmarks/experiment.py at toy size: the sweep of the priors experiment, its aggregate and
the section, whose gains are the aggregate's."""

from __future__ import annotations

import json

from benchmarks.common import Options
from benchmarks.experiment import run


def test_the_experiment_section_holds_the_aggregate_of_its_sweep(tmp_path):
    section = run(Options(toy=True, results=tmp_path, threads=1), "python -m benchmarks.experiment")
    record = json.loads((tmp_path / "experiment" / "aggregate.json").read_text())
    assert [g["label"] for g in record["groups"]] == [g["label"] for g in section.data["groups"]]
    assert len(record["groups"]) == 4 and all(len(g["runs"]) == 2 for g in record["groups"])
    for gain in (g for g in record["gains"] if g["metric"] == "log_px"):
        assert f"{gain['group']}" in section.body
    assert "paired per test image within each seed" in section.body
    assert (tmp_path / "experiment" / "aggregate.png").stat().st_size > 0
