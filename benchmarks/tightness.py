"""How loose each published-protocol model's IS bound is, and how far that could move its gain.

For each scored (model, seed) of :mod:`benchmarks.published`: AIS (16 chains × 1000 steps, the
settings of ``pyro-vae evaluate --method ais``) against IS at the row's K (5000) on the first
200 test images, at the checkpoint the row was scored with. Per image,

    gap_i = log p̂_AIS(x_i) − log p̂_IS(x_i),

both stochastic lower bounds of log p(x_i), AIS the tighter. A gain over the VAE is a
difference of two IS bounds; measured with AIS instead, on the same images and seed, it
moves by

    δ = mean_i (gap_model,i − gap_VAE,i),    s.e. = std_i(gap_model,i − gap_VAE,i) / √n,

so |δ| is how much of the gain the bounds' looseness could account for (δ > 0: IS understates
the gain). δ is measured on the first 200 test images, the gain on all 10 000.

The work is cut into pieces of :data:`benchmarks.ais.PIECE` images, each seeded by its name
and saved under ``STATE/tightness/<model>-seed<s>-<checkpoint digest>/`` (beside the runs, not
in them), so a killed job continues after its last piece. The finished record, with each
image's two estimates, is ``<results>/published/<model>-seed<s>.tightness.json`` (committed).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.ais import Pieces
from benchmarks.common import Options, table
from benchmarks.protocol import TIGHTNESS
from pyro_vae.atomic import write_json_atomic

POINTS, STEPS = 200, 1000  # test images, annealing steps (the protocol)
TOY_POINTS, TOY_STEPS = 8, 5


def record_path(result: Path) -> Path:
    """The tightness record beside the result record ``<model>-seed<s>.json``."""
    return result.with_suffix(TIGHTNESS)


def read(result: Path) -> dict[str, Any] | None:
    """The tightness record of the result record ``result``, or None."""
    try:
        return json.loads(record_path(result).read_text())
    except FileNotFoundError:
        return None


def score(run_dir: Path, result: Path, state: Path, options: Options) -> dict[str, Any] | None:
    """AIS against IS on the first :data:`POINTS` test images of the run in ``run_dir`` at the
    checkpoint its row was scored with (its pieces under ``state``); the record, also written
    beside ``result``. A record already there is returned as it is; None while another job
    scores some of its pieces."""
    from pyro_vae.annealing import merge_ais
    from pyro_vae.prepared import load_run
    from pyro_vae.rundir import Run

    kept = read(result)
    if kept is not None:
        return kept
    prep = load_run(run_dir)
    checkpoint = Run(run_dir).evaluated_checkpoint(prep.spec)
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    points, steps = (TOY_POINTS, TOY_STEPS) if options.toy else (POINTS, STEPS)
    k = prep.spec.evaluate.num_samples  # the row's K
    vae = prep.vae.to(options.device)
    x = prep.bundle.split("test")[:points].to(options.device)
    budget = prep.spec.evaluate.memory_budget_mb
    pieces = Pieces(state / "tightness" / f"{run_dir.name}-{sha256[:16]}", len(x) * steps)
    done = pieces.ais(vae, x, steps, k, budget)
    if any(d is None for d in done):  # another live job holds a piece: no record yet
        return None
    merged = merge_ais([d for d in done if d is not None])
    record = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256,
        **{key: v for key, v in merged.items() if key != "points"},
        "points": {key: merged["points"][key] for key in ("log_px", "is_log_px")},
    }
    write_json_atomic(record_path(result), record)
    return record


def gaps(record: dict[str, Any]) -> list[float]:
    """gap_i = AIS − IS of each image of a tightness record."""
    return [a - b for a, b in zip(record["points"]["log_px"], record["points"]["is_log_px"])]


def _mean_sem(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def shift(model: dict[str, Any], vae: dict[str, Any]) -> tuple[float, float, int]:
    """(δ, its s.e. over images, n): the mean paired difference of the two records' gaps."""
    a, b = gaps(model), gaps(vae)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("tightness records over different images cannot be paired")
    return (*_mean_sem([p - q for p, q in zip(a, b)]), len(a))


def text(
    rows: list[tuple[str, int, dict[str, Any]]],
    vae_by_seed: dict[int, dict],
    waiting: Sequence[str] = (),
    gone: Sequence[str] = (),
) -> str:
    """The table of the records in ``rows`` (label, seed, record); for each non-VAE row with
    the VAE's record at its seed, δ: how far the bounds' looseness could move its gain; the
    scored rows not measured yet (``waiting``) and those whose run is gone (``gone``)."""
    if not rows:
        return ""
    first = rows[0][2]
    lines = [
        [
            label,
            seed,
            r["num_points"],
            f"{r['log_px']:.2f} ± {r['log_px_sem']:.2f}",
            f"{r['is_log_px']:.2f}",
            f"{r['gap']:.3f} ± {r['gap_sem']:.3f}",
            f"{r['acceptance']:.2f}",
            f"{r['ais_seconds_per_point']:.1f}",
        ]
        for label, seed, r in rows
    ]
    moves = []
    for label, seed, r in rows:
        vae = vae_by_seed.get(seed)
        if vae is None or r is vae:
            continue
        delta, se, n = shift(r, vae)
        moves.append(f"{label} {delta:+.3f} ± {se:.3f} nats (seed {seed}, {n} images)")
    intro = (
        f"**How tight the bounds are.** AIS ({first['num_chains']} chains × "
        f"{first['num_steps']} steps) against IS (K = {first['is_num_samples']}) on the first "
        f"{first['num_points']} test images, at the checkpoint each row was scored with "
        "(`python -m benchmarks.published --tightness`); ± **s.e. over images**."
    )
    out = [
        intro,
        table(
            [
                "model",
                "seed",
                "images",
                "AIS log p(x) ± s.e. over images",
                "IS, same images",
                "AIS − IS (nats) ± s.e. over images",
                "acceptance",
                "AIS s per image",
            ],
            lines,
        ),
    ]
    if moves:
        out.append(
            "Measured with AIS instead of IS, a gain over the VAE would move by δ = mean over "
            "images of (AIS − IS of the model) − (AIS − IS of the VAE), paired, same seed: "
            + "; ".join(moves)
            + ". That is how much of each gain the bounds' looseness could account for "
            "(δ > 0: IS understates the gain)."
        )
    left = []
    if waiting:
        left.append(
            "Not measured yet: " + ", ".join(waiting) + " (`python -m benchmarks.published "
            "--tightness --models MODEL --seeds SEED`)."
        )
    if gone:
        left.append("Not measurable: " + ", ".join(gone) + ", whose runs are no longer on disk.")
    if left:
        out.append(" ".join(left))
    return "\n\n".join(out)
