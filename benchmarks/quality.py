"""Training and scoring a spec as a user would (``pyro_vae.pipeline.fit``, then
``pyro_vae.scoring.evaluate`` with K = 5000) under our earlier quality protocol (:data:`FULL`:
100 epochs, no warm-up, the last checkpoint), for :mod:`benchmarks.richer`'s rows.

The quick smoke section this module once wrote (one epoch on 6000 images, "3b") was dropped: the
published protocol (:mod:`benchmarks.published`) is the quality section now, and a one-epoch
figure beside it compared with nothing. The whole path at toy size is covered by the tests.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import Options, prepared, spec_from
from pyro_vae.pipeline import fit
from pyro_vae.scoring import evaluate

TOY_NETS = ("latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]")


@dataclass(frozen=True)
class Protocol:
    epochs: int  # Fashion-MNIST models
    digits_epochs: int
    seeds: tuple[int, ...]
    train_limit: int | None  # training images (None: all)
    test_points: int | None  # test images scored (None: all)
    num_samples: int


#: our earlier 100-epoch protocol on our configs (``benchmarks.richer`` trains its rows with it)
FULL = Protocol(
    epochs=100,
    digits_epochs=60,
    seeds=(0, 1, 2),
    train_limit=None,
    test_points=None,
    num_samples=5000,
)
TOY = Protocol(epochs=1, digits_epochs=1, seeds=(0,), train_limit=64, test_points=4, num_samples=16)


def overrides_for(
    config: str, extra: tuple[str, ...], protocol: Protocol, seed: int, options: Options
) -> list[str]:
    digits = config.startswith("digits")
    # toy: digits stand in for Fashion-MNIST (a new data.name resets data's other keys: first)
    swap = ["data.name=digits", "data.binarize=dynamic"] if options.toy and not digits else []
    out = [
        *swap,
        *extra,
        f"train.seed={seed}",
        "train.progress=false",
        f"train.max_epochs={protocol.digits_epochs if digits else protocol.epochs}",
        f"evaluate.num_samples={protocol.num_samples}",
    ]
    if protocol.train_limit and not digits:
        out.append(f"data.limit={protocol.train_limit}")
    if options.toy:
        out += [*TOY_NETS, f"data.limit={protocol.train_limit}", "train.batch_size=16"]
        if "prior.name=vamp" in extra:
            out.append("prior.pseudo_inputs=4")
    if options.device.type == "cuda":
        out.append("train.accelerator=gpu")
    return out


def train_and_score(
    config: str, overrides: list[str], protocol: Protocol, options: Options
) -> dict[str, float]:
    prep = prepared(spec_from(config, overrides))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fit(prep, Path(tmp) / "run")
    train_s = time.perf_counter() - start
    x = prep.bundle.split("test")[: protocol.test_points].to(options.device)
    torch.manual_seed(prep.spec.train.seed)
    result = evaluate(
        prep.vae.to(options.device),
        x,
        "test",
        protocol.num_samples,
        prep.spec.evaluate.memory_budget_mb,
    )
    return {
        "log_px": result.log_px,
        "log_px_sem": result.log_px_sem,
        "elbo": result.elbo,
        "mc_stderr": result.log_px_stderr,
        "ess": result.ess,
        "active_units": result.active_units,
        "latent_dim": result.latent_dim,
        "active_per_layer": result.active_per_layer,
        "bits_per_dim": result.bits_per_dim or float("nan"),
        "test_points": len(x),
        "train_items": len(prep.bundle.train),
        "train_s": train_s,
        "eval_s": result.wall_time_s,
    }


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _mean_std(values: list[float]) -> str:
    """The mean ± the s.d. over seeds (one value: the value alone)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _load_runs(path: Path | None) -> dict[str, dict[str, float]]:
    """Finished runs kept by a long benchmark (``benchmarks.richer``), {} when none."""
    try:
        return json.loads(path.read_text()) if path else {}
    except FileNotFoundError:
        return {}
