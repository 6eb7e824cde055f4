"""Smoke test of the richer-models benchmark (section 6) at toy size (digits, tiny networks, one
epoch), in a subprocess as ``python -m benchmarks.richer`` runs it."""

import json

from toy_jobs import toy


def test_richer_benchmark_runs_at_toy_size(tmp_path):
    toy("benchmarks.richer", tmp_path)
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## 6. Richer models on Fashion-MNIST" in report
    record = json.loads((tmp_path / "results" / "richer.json").read_text())["data"]
    assert set(record) == {"diagonal, one layer", "IAF guide", "two stochastic layers", "gated MLP"}
    assert all(runs[0]["log_px"] < 0 for runs in record.values())
    # every row was trained and cached; without the cache's first row, --report trains nothing
    # and lists that row as pending beside the others
    cache_path = tmp_path / "results" / "cache" / "richer.json"
    cache = json.loads(cache_path.read_text())
    assert len(cache) == 4
    cache.pop(next(iter(cache)))
    cache_path.write_text(json.dumps(cache))
    toy("benchmarks.richer", tmp_path, "--report")
    assert len(json.loads(cache_path.read_text())) == 3  # nothing trained
    assert "diagonal, one layer: pending" in (tmp_path / "BENCHMARKS.md").read_text()
