"""pyro_vae.aggregation: every figure of the tables recomputed with NumPy from the files a run
holds (written here by hand in the run-directory format: config.yaml, the marker,
eval-<split>.json and its per-point .npz); mismatched points and a missing baseline refused in
one line. No training: fixture runs hold random per-point values from a seeded generator."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pyro_vae.aggregation import (
    AGGREGATE_CSV,
    AGGREGATE_JSON,
    AGGREGATE_MD,
    AGGREGATE_PNG,
    METRICS,
    NOT_COMPUTED,
    Aggregate,
    aggregate,
    decimals,
    find_runs,
    plus_minus,
    t_quantile,
)
from pyro_vae.registry import SpecError
from pyro_vae.spec import dump_spec, load_spec

SEEDS = (0, 1, 2)
#: Three groups: the baseline (defaults), β = 2 and a smaller latent space.
GROUPS = {"base": [], "beta2": ["beta=2.0"], "small": ["latent_dim=4"]}
POINTS = 40


def write_run(
    run: Path,
    overrides: list[str],
    rng: np.random.Generator,
    index: np.ndarray | None = None,
    data_sha256: str = "d" * 64,
    seconds: int = 60,
    bits: bool = True,
    split: str = "test",
) -> Path:
    """A finished run in the run-directory format, scored on ``split`` with random per-point
    values; ``index`` (default: rows 0, 2, 4, …) and ``data_sha256`` name the points."""
    run.mkdir(parents=True)
    dump_spec(load_spec(None, overrides), run / "config.yaml")
    created = "2026-01-01T10:00:00Z"
    updated = f"2026-01-01T10:{seconds // 60:02d}:{seconds % 60:02d}Z"
    (run / ".pyro-vae-run").write_text(
        json.dumps({"pyro_vae_run": 1, "state": "finished", "created": created, "updated": updated})
        + "\n"
    )
    (run / "metrics.csv").write_text("epoch,step,val_elbo\n0,10,-90.0\n")
    index = np.arange(0, 2 * POINTS, 2, dtype=np.int64) if index is None else index
    log_px = rng.normal(-90.0, 4.0, len(index))
    points = {
        "index": index,
        "log_px": log_px,
        "log_px_se": rng.uniform(0.01, 0.2, len(index)),
        "ess": rng.uniform(1, 100, len(index)),
        "elbo": log_px - rng.gamma(2.0, 1.0, len(index)),
    }
    if bits:
        points["bits_per_dim"] = -log_px / (64 * math.log(2))
    buffer = io.BytesIO()
    np.savez(buffer, **points)
    data = buffer.getvalue()
    (run / f"eval-{split}.npz").write_bytes(data)
    summary = {
        "split": split,
        "num_points": len(index),
        "num_samples": 100,
        "log_px": float(points["log_px"].mean()),
        "log_px_sem": 0.1,
        "log_px_stderr": 0.01,
        "ess": float(points["ess"].mean()),
        "elbo": float(points["elbo"].mean()),
        "kl": 1.0,
        "recon": -89.0,
        "analytic_kl": True,
        "active_units": int(rng.integers(2, 9)),
        "latent_dim": 16,
        "active_per_layer": [3],
        "latent_dims": [16],
        "bits_per_dim": float(points["bits_per_dim"].mean()) if bits else None,
        "wall_time_s": 1.0,
        "scale": "data",
        "model_scale": "data",
        "log_jacobian": 0.0,
        "points_file": f"eval-{split}.npz",
        "points_sha256": hashlib.sha256(data).hexdigest(),
        "data_sha256": data_sha256,
    }
    (run / f"eval-{split}.json").write_text(json.dumps(summary))
    return run


def read(run: Path) -> tuple[dict, dict]:
    """The JSON summary and the per-point arrays, as a reader with only NumPy sees them."""
    with np.load(run / "eval-test.npz") as arrays:
        return json.loads((run / "eval-test.json").read_text()), dict(arrays)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    rng = np.random.default_rng(27)
    root = tmp_path / "sweep"
    for name, overrides in GROUPS.items():
        for seed in SEEDS:
            write_run(
                root / f"{name}-s{seed}",
                [*overrides, f"train.seed={seed}"],
                rng,
                seconds=30 + 7 * seed + 11 * len(name),
            )
    return root


def label(result: Aggregate, name: str) -> str:
    return {
        "base": "beta=1.0, latent_dim=16",
        "beta2": "beta=2.0, latent_dim=16",
        "small": "beta=1.0, latent_dim=4",
    }[name]


def test_every_figure_equals_a_numpy_recomputation(sweep: Path, tmp_path: Path):
    result = aggregate([sweep])
    assert [g.label for g in result.groups] == sorted(label(result, n) for n in GROUPS)
    assert result.baseline.label == label(result, "base")  # first in sorted label order
    out = tmp_path / "out"
    result.write(out)
    rows = {r["group"]: r for r in csv.DictReader(io.StringIO((out / AGGREGATE_CSV).read_text()))}
    saved = json.loads((out / AGGREGATE_JSON).read_text())
    markdown = (out / AGGREGATE_MD).read_text()
    files = {name: [read(sweep / f"{name}-s{s}") for s in SEEDS] for name in GROUPS}

    for name in GROUPS:
        group = next(g for g in result.groups if g.label == label(result, name))
        assert group.seeds == SEEDS
        summaries = [summary for summary, _ in files[name]]
        values = {
            "log_px": [p["log_px"].mean() for _, p in files[name]],
            "elbo": [p["elbo"].mean() for _, p in files[name]],
            "active_units": [s["active_units"] for s in summaries],
            "bits_per_dim": [p["bits_per_dim"].mean() for _, p in files[name]],
            "run_time_s": [30 + 7 * s + 11 * len(name) for s in SEEDS],
        }
        assert values.keys() == METRICS.keys()
        for metric, x in values.items():
            mean, se = np.mean(x), np.std(x, ddof=1) / np.sqrt(len(x))
            est = group.metrics[metric]
            assert est.mean == pytest.approx(mean, rel=1e-12, abs=1e-12)
            assert est.se == pytest.approx(se, rel=1e-12, abs=1e-12)
            assert float(rows[group.label][f"{metric}_mean"]) == pytest.approx(mean, rel=1e-12)
            assert float(rows[group.label][f"{metric}_se"]) == pytest.approx(se, rel=1e-12)
            assert plus_minus(mean, se) in markdown

        if name == "base":
            assert rows[group.label]["gain_log_px"] == ""
            continue
        for metric in ("log_px", "elbo"):
            d = [p[metric] - b[metric] for (_, p), (_, b) in zip(files[name], files["base"])]
            per_seed = np.array([x.mean() for x in d])
            per_seed_se = np.array([x.std(ddof=1) / np.sqrt(POINTS) for x in d])
            mean = per_seed.mean()
            se = per_seed.std(ddof=1) / np.sqrt(len(SEEDS))
            point_se = np.sqrt(np.mean(per_seed_se**2)) / np.sqrt(len(SEEDS))  # rms / √S
            from scipy.stats import t

            half = t.ppf(0.975, len(SEEDS) - 1) * se
            gain = result.gain(group.label, metric)
            assert gain.seeds == SEEDS and gain.points == (POINTS,) * len(SEEDS)
            np.testing.assert_allclose(gain.per_seed, per_seed, rtol=1e-12)
            np.testing.assert_allclose(gain.per_seed_se, per_seed_se, rtol=1e-12)
            assert gain.mean == pytest.approx(mean, rel=1e-12)
            assert gain.se == pytest.approx(se, rel=1e-12)
            assert gain.point_se == pytest.approx(point_se, rel=1e-12)
            assert (gain.low, gain.high) == pytest.approx((mean - half, mean + half), rel=1e-9)
            row = rows[group.label]
            for column, value in [
                ("", mean),
                ("_se", se),
                ("_point_se", point_se),
                ("_low", mean - half),
                ("_high", mean + half),
            ]:
                assert float(row[f"gain_{metric}{column}"]) == pytest.approx(value, rel=1e-9)
            digits = decimals(se)
            assert (
                " | ".join(
                    [
                        plus_minus(mean, se),
                        f"{point_se:.{decimals(point_se)}f}",
                        f"[{mean - half:.{digits}f}, {mean + half:.{digits}f}]",
                    ]
                )
                in markdown
            )
            [stored] = [
                g for g in saved["gains"] if g["group"] == group.label and g["metric"] == metric
            ]
            np.testing.assert_allclose(stored["per_seed"], per_seed, rtol=1e-12)
            assert stored["point_se"] == pytest.approx(point_se, rel=1e-12)
            # the group means and the paired gain agree: the same points, in the same order
            assert mean == pytest.approx(
                np.mean([s[metric] for s, _ in files[name]])
                - np.mean([s[metric] for s, _ in files["base"]])
            )

    [json_group] = [g for g in saved["groups"] if g["label"] == label(result, "small")]
    assert [r["seed"] for r in json_group["runs"]] == list(SEEDS)
    assert json_group["metrics"]["log_px"]["values"] == pytest.approx(
        [p["log_px"].mean() for _, p in files["small"]], rel=1e-12
    )


def test_outputs_written_and_the_forest_plot_is_drawn(sweep: Path):
    result = aggregate([sweep], out=None)
    paths = result.write()  # default: the runs' common parent
    assert [p.name for p in paths] == [AGGREGATE_MD, AGGREGATE_CSV, AGGREGATE_JSON, AGGREGATE_PNG]
    assert all(p.parent == sweep.resolve() and p.is_file() for p in paths)
    text = (sweep / AGGREGATE_MD).read_text()
    assert "log p(x), mean ± s.e. over seeds" in text
    assert "Δ log p(x), mean ± s.e. over seeds" in text and "point-level s.e." in text
    image = imread(sweep / AGGREGATE_PNG)
    assert image.ndim == 3 and image.shape[0] > 100 and image[..., :3].std() > 0.05
    assert "mean ± s.e. over seeds" in repr(result)
    assert result._repr_markdown_() == text
    assert not list(sweep.glob(".*.tmp"))


def test_a_run_named_twice_or_found_below_counts_once(sweep: Path):
    runs = find_runs([sweep, sweep / "base-s0"])
    assert len(runs) == 9
    (sweep / ".hidden" / "x").mkdir(parents=True)
    write_run(sweep / ".hidden" / "x" / "run", ["train.seed=5"], np.random.default_rng(0))
    assert len(find_runs([sweep])) == 9


def test_mismatched_index_arrays_are_refused_naming_both_runs(tmp_path: Path):
    rng = np.random.default_rng(1)
    base = write_run(tmp_path / "a", [], rng)
    other = write_run(
        tmp_path / "b", ["beta=2.0"], rng, index=np.arange(1, 2 * POINTS, 2, dtype=np.int64)
    )
    with pytest.raises(SpecError) as caught:
        aggregate([tmp_path])
    text = str(caught.value)
    assert str(base) in text and str(other) in text and "\n" not in text
    assert "index" in text


def test_reordered_points_are_refused(tmp_path: Path):
    rng = np.random.default_rng(2)
    write_run(tmp_path / "a", [], rng)
    write_run(
        tmp_path / "b",
        ["beta=2.0"],
        rng,
        index=np.arange(0, 2 * POINTS, 2, dtype=np.int64)[::-1].copy(),
    )
    with pytest.raises(SpecError, match="other rows or another order"):
        aggregate([tmp_path])


def test_different_data_are_refused_naming_both_runs(tmp_path: Path):
    rng = np.random.default_rng(3)
    base = write_run(tmp_path / "a", [], rng)
    other = write_run(tmp_path / "b", ["beta=2.0"], rng, data_sha256="e" * 64)
    with pytest.raises(SpecError) as caught:
        aggregate([tmp_path])
    text = str(caught.value)
    assert str(base) in text and str(other) in text and "data_sha256" in text
    assert "\n" not in text


def test_a_points_file_from_another_evaluation_is_refused(tmp_path: Path):
    rng = np.random.default_rng(4)
    write_run(tmp_path / "a", [], rng)
    other = write_run(tmp_path / "b", ["beta=2.0"], rng)
    np.savez(other / "eval-test.npz", index=np.arange(3))
    with pytest.raises(SpecError, match="SHA-256"):
        aggregate([tmp_path])


def test_the_baseline_is_chosen_by_key_and_value(sweep: Path):
    result = aggregate([sweep], baseline=["beta=2"])  # YAML 2 is the spec's 2.0
    assert result.baseline.label == label(result, "beta2")
    assert {g.group for g in result.gains} == {label(result, "base"), label(result, "small")}
    result = aggregate([sweep], baseline=["latent_dim=4"])
    assert result.baseline.label == label(result, "small")


def test_a_missing_baseline_names_the_key_and_the_values(sweep: Path):
    with pytest.raises(SpecError) as caught:
        aggregate([sweep], baseline=["beta=3"])
    text = str(caught.value)
    assert text.startswith("beta:") and "1.0" in text and "2.0" in text and "\n" not in text
    with pytest.raises(SpecError, match="2 groups match beta=1.0"):
        aggregate([sweep], baseline=["beta=1.0"])
    with pytest.raises(SpecError, match="did you mean 'beta'"):
        aggregate([sweep], baseline=["betta=1"])
    with pytest.raises(SpecError, match="KEY=VALUE"):
        aggregate([sweep], baseline=["beta"])
    with pytest.raises(SpecError, match="does not tell groups apart"):
        aggregate([sweep], baseline=["train.seed=0"])


def test_a_folder_without_runs_is_an_error(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SpecError, match="holds no pyro-vae run") as caught:
        aggregate([tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(caught.value)
    with pytest.raises(SpecError, match="no such directory"):
        find_runs([tmp_path / "missing"])


def test_a_run_without_the_split_scored_is_named(sweep: Path):
    with pytest.raises(SpecError, match="no is evaluation of the val split"):
        aggregate([sweep], split="val")


def test_one_seed_gives_the_point_level_interval_and_no_seed_se(tmp_path: Path):
    rng = np.random.default_rng(5)
    base = write_run(tmp_path / "a", [], rng, bits=False)
    other = write_run(tmp_path / "b", ["prior.name=normal"], rng, bits=False)
    result = aggregate([tmp_path], baseline=["prior.name=standard_normal"])
    (_, b), (_, o) = read(base), read(other)
    d = o["log_px"] - b["log_px"]
    point_se = d.std(ddof=1) / np.sqrt(len(d))
    [gain] = [g for g in result.gains if g.metric == "log_px"]
    assert math.isnan(gain.se) and gain.point_level
    assert gain.point_se == pytest.approx(point_se, rel=1e-12)
    assert (gain.low, gain.high) == pytest.approx(
        (d.mean() - 1.959964 * point_se, d.mean() + 1.959964 * point_se), rel=1e-6
    )
    assert "prior.name=normal" in [g.label for g in result.groups]
    text = result.markdown()
    assert "± —" in text and "point-level" in text
    assert all(math.isnan(g.metrics["bits_per_dim"].mean) for g in result.groups)


def test_one_group_is_labelled_all_and_pairs_nothing(tmp_path: Path):
    rng = np.random.default_rng(6)
    for seed in SEEDS:
        write_run(
            tmp_path / f"r{seed}",
            [
                f"train.seed={seed}",
                f"train.jit={seed != 1}",
                f"evaluate.memory_budget_mb={64 + seed}",
            ],
            rng,
        )
    result = aggregate([tmp_path], out=tmp_path / "out")
    assert [g.label for g in result.groups] == ["all"] and result.gains == []
    assert "train.jit" in NOT_COMPUTED
    assert imread(tmp_path / "out" / AGGREGATE_PNG)[..., :3].std() > 0


def test_the_same_seed_twice_in_a_group_is_refused(tmp_path: Path):
    rng = np.random.default_rng(7)
    write_run(tmp_path / "a", ["train.progress=false"], rng)
    write_run(tmp_path / "b", [], rng)
    with pytest.raises(SpecError, match="same spec and train.seed=0"):
        aggregate([tmp_path])


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 29, 30, 100])
def test_t_quantile_matches_scipy(df: int):
    from scipy.stats import t

    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(t.ppf(p, df), rel=1e-9)


def test_the_module_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, pyro_vae.aggregation; "
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_groups_without_a_seed_in_common_have_no_gain(tmp_path: Path):
    rng = np.random.default_rng(8)
    write_run(tmp_path / "a", [], rng)
    write_run(tmp_path / "b", ["beta=2.0", "train.seed=1"], rng)
    result = aggregate([tmp_path])
    assert all(g.seeds == () and math.isnan(g.mean) for g in result.gains)
    assert "| beta=2.0 | — | — | — |" in result.gain_table()
    result.write(tmp_path / "out")


def test_real_runs_aggregate_through_the_command_line(tmp_path, capsys):
    """Two groups × two seeds trained and scored by ``pyro-vae train``: ``pyro-vae aggregate``
    pairs the files the runs really wrote, and its gain equals the NumPy recomputation."""
    from pyro_vae.cli import main
    from pyro_vae.rundir import Run
    from tests.tiny_runs import DIGITS, TINY

    for group, extra in (("base", []), ("beta2", ["beta=2.0"])):
        for seed in (0, 1):
            sets = [f"--set={s}" for s in (*TINY, *extra, f"train.seed={seed}")]
            assert main(["train", DIGITS, *sets, "--out", str(tmp_path / group / f"s{seed}")]) == 0
    capsys.readouterr()
    assert main(["aggregate", str(tmp_path), "--baseline", "beta=1.0"]) == 0
    out = capsys.readouterr().out
    assert "paired differences against" in out and f"aggregate: {tmp_path / AGGREGATE_JSON}" in out
    record = json.loads((tmp_path / AGGREGATE_JSON).read_text())
    gains = [g for g in record["gains"] if g["metric"] == "log_px"]
    per_seed = [
        np.mean(
            Run(tmp_path / "beta2" / f"s{s}").points("test")["log_px"]
            - Run(tmp_path / "base" / f"s{s}").points("test")["log_px"]
        )
        for s in (0, 1)
    ]
    assert len(gains) == 1 and gains[0]["mean"] == pytest.approx(np.mean(per_seed), abs=1e-9)
