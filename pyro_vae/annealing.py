"""How loose is the importance-sampled bound? AIS and BDMC of a trained run
(``pyro-vae evaluate RUN --method ais|bdmc``), on :mod:`inference.ais`:

    ais    per point of a split: IS log p̂(x) (K = evaluate.num_samples) and AIS log p̂(x)
           (C chains × T steps from the guide); the gap AIS − IS is how much IS misses
           (Wu et al. 2017 found ≥ 1 nat at K = 10⁴ on binarized MNIST).
    bdmc   on points simulated from the model, (z*, x) ~ p(z) p(x | z): forward AIS ≤ log p(x) ≤
           reverse AIS from z* (Grosse et al. 2015); the gap bounds the error of either, so it
           tells how many steps the model needs.

Each writes a JSON summary with the per-point values under ``points``
(``eval-<split>-ais.json``, ``eval-simulated-bdmc.json``), the same values as arrays in the
``.npz`` beside it, and a figure (``figures/<split>/ais.png``, ``figures/simulated/bdmc.png``). All points of a call of
:data:`POINTS_PER_CALL` anneal together; the progress bar counts annealing steps.

Sizes are bounded before anything is allocated: besides its working chunk of chains (sized to
``evaluate.memory_budget_mb`` by :mod:`inference.ais`), a call keeps float64 arrays whose size
grows with C and T, which must fit the same budget (:meth:`Annealing.check_memory`); then a
long run announces its estimated time from a timed pilot (:func:`announce_duration`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor

from inference.ais import (
    AISOptions,
    AISResult,
    ais_log_marginal_likelihood,
    bdmc,
    estimated_seconds,
    sandwich,
)
from pyro_vae.figures import plot_ais, plot_bdmc
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.scoring import announce, importance_log_px
from pyro_vae.scoring import estimated_seconds as importance_seconds
from pyro_vae.vae import VAE

METHODS = ("ais", "bdmc")
SIMULATED = "simulated"  # the split name of BDMC's data
BDMC_POINTS = 50  # simulated points when no --limit is given
POINTS_PER_CALL = 100
_DEFAULT = AISOptions()  # sigmoid schedule from the guide, adapted step sizes


@dataclass(frozen=True)
class Annealing:
    """What ``--chains``, ``--steps``, ``--leapfrog`` and ``--limit`` set: C, T and L of
    :class:`inference.ais.AISOptions` (:meth:`ais_options`; its defaults for the rest), and the
    number of points."""

    num_chains: int = _DEFAULT.num_chains
    num_steps: int = _DEFAULT.num_steps
    leapfrog_steps: int = _DEFAULT.leapfrog_steps
    limit: int | None = None  # the first N points (ais: all of the split; bdmc: 50)

    def __post_init__(self) -> None:
        for flag, value in (
            ("--chains", self.num_chains),
            ("--steps", self.num_steps),
            ("--leapfrog", self.leapfrog_steps),
            ("--limit", self.limit),
        ):
            if value is not None and value < 1:
                raise SpecError(flag, f"must be >= 1, got {value}")

    def kept_bytes(self, points: int, method: str) -> int:
        """Bytes one call on ``points`` points keeps beside its working chunk, float64 (8 bytes):
        for B = min(points, POINTS_PER_CALL), the β schedule (T + 1), the step-size table
        (T − 1)·B and the chains' log-weights C·B twice (the chunks and their join); BDMC keeps
        both directions'."""
        t, c, b = self.num_steps, self.num_chains, min(points, POINTS_PER_CALL)
        return (2 if method == "bdmc" else 1) * 8 * ((t + 1) + (t - 1) * b + 2 * c * b)

    def check_memory(self, points: int, method: str, memory_budget_mb: float) -> None:
        """SpecError naming --steps (or --chains, when C·B outweighs) when :meth:`kept_bytes`
        exceeds ``memory_budget_mb``: arithmetic only, before anything is allocated, so that an
        absurd T or C (10¹², 2⁶³) is refused instead of failing an allocation."""
        need, b = self.kept_bytes(points, method), min(points, POINTS_PER_CALL)
        if need > memory_budget_mb * 2**20:
            flag = "--steps" if self.num_steps - 1 >= 2 * self.num_chains else "--chains"
            raise SpecError(
                flag,
                f"{self.num_chains} chains × {self.num_steps} steps on {b} "
                f"points at a time keep {need / 2**20:.3g} MiB of step sizes and "
                f"weights (8 bytes × (T + 1 + (T − 1 + 2C)·B)), more than "
                f"evaluate.memory_budget_mb = {memory_budget_mb:g} MiB; lower "
                "--steps or --chains",
            )

    def ais_options(self, memory_budget_mb: float, progress: bool = False) -> AISOptions:
        """The options of :mod:`inference.ais` these flags stand for, on ``memory_budget_mb``
        (``evaluate.memory_budget_mb``)."""
        return AISOptions(
            num_chains=self.num_chains,
            num_steps=self.num_steps,
            leapfrog_steps=self.leapfrog_steps,
            memory_budget_mb=memory_budget_mb,
            progress=progress,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "num_chains": self.num_chains,
            "num_steps": self.num_steps,
            "leapfrog_steps": self.leapfrog_steps,
            "schedule": _DEFAULT.schedule,
            "init": _DEFAULT.init,
        }


def announce_duration(
    vae: VAE,
    x: Tensor,
    split: str,
    method: str,
    options: Annealing,
    num_samples: int,
    memory_budget_mb: float,
    y: Tensor | None = None,
) -> None:
    """:func:`pyro_vae.scoring.announce` the annealing of the points ``x`` (labels ``y`` for a
    kind that reads them) before it starts: the
    time of a call on the first :data:`POINTS_PER_CALL` points
    (:func:`inference.ais.estimated_seconds`, from two timed transitions) times N / B, for
    both directions with BDMC; with AIS, plus the IS beside it
    (:func:`pyro_vae.scoring.estimated_seconds`)."""
    vae.eval()
    chains, steps, leapfrog = options.num_chains, options.num_steps, options.leapfrog_steps
    part, directions = x[:POINTS_PER_CALL], 2 if method == "bdmc" else 1
    with pyro.settings.context(module_local_params=True):
        seconds = estimated_seconds(
            vae.model,
            vae.guide,
            part,
            y=_rows(y, 0),
            options=options.ais_options(memory_budget_mb),
        )
    seconds *= directions * len(x) / len(part)
    moves = directions * len(x) * chains * (steps - 1) * leapfrog
    measured = (
        [f"{seconds / moves * 1e6:.3g} µs per leapfrog step of a chain and point"] if moves else []
    )
    what = (
        f"{method.upper()} of {len(x)} {SIMULATED if method == 'bdmc' else split} "
        f"point{'s' if len(x) > 1 else ''} ({chains} chains × {steps} "
        f"step{'s' if steps > 1 else ''} × {leapfrog} leapfrog steps)"
    )
    if method == "ais":
        is_seconds = importance_seconds(vae, x, num_samples, memory_budget_mb, y=y)
        seconds += is_seconds
        what += f" beside IS at K={num_samples}"
        measured.append(f"{is_seconds / (num_samples * len(x)) * 1e6:.3g} µs per IS particle")
    announce(what, seconds, ", ".join(measured))


@torch.no_grad()
def evaluate_ais(
    vae: VAE,
    x: Tensor,
    split: str,
    options: Annealing,
    num_samples: int,
    memory_budget_mb: float,
    progress: bool = False,
    log_jacobian: float = 0.0,
    y: Tensor | None = None,
) -> dict[str, Any]:
    """IS and AIS log p̂(x) of each row of ``x`` (on the model's scale), reported on the data's
    own scale, log p(x) = log p'(x') + ``log_jacobian`` (:mod:`pyro_vae.scoring`): the summary,
    with per-point values. ``y``: the labels of ``x`` for a kind that reads them (cvae), which
    is then scored as log p(x | y)."""
    vae.eval()
    start = time.perf_counter()
    is_result = importance_log_px(vae, x, num_samples, memory_budget_mb, y=y)
    is_time = time.perf_counter() - start
    ais = AISResult.cat(
        [
            _anneal(vae, part, _rows(y, i), options, memory_budget_mb, progress)
            for i, part in enumerate(x.split(POINTS_PER_CALL))
        ]
    )
    ais_time = time.perf_counter() - start - is_time
    head = {
        "split": split,
        "method": "ais",
        **options.describe(),
        "log_jacobian": log_jacobian,
        "is_num_samples": num_samples,
    }
    points = {
        "log_px": _list(ais.log_px.double().cpu() + log_jacobian),
        "stderr": _list(ais.stderr),
        "is_log_px": _list(is_result.log_px.double().cpu() + log_jacobian),
        "acceptance": _list(ais.acceptance),
        "step_size": _list(ais.step_size),
    }
    return _ais_summary(head, points, ais_time, is_time)


def merge_ais(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of :func:`evaluate_ais` from summaries of the same settings on disjoint
    points (in order): per-point values concatenated, means and standard errors recomputed."""
    first = pieces[0]
    head = {k: v for k, v in first.items() if k in _AIS_HEAD}
    if any({k: v for k, v in p.items() if k in _AIS_HEAD} != head for p in pieces):
        raise ValueError("merge_ais: the pieces were scored with different settings")
    points = {k: [v for p in pieces for v in p["points"][k]] for k in first["points"]}
    seconds = {
        k: sum(p[k] * p["num_points"] for p in pieces)
        for k in ("ais_seconds_per_point", "is_seconds_per_point")
    }
    return _ais_summary(head, points, *seconds.values())


_AIS_HEAD = (
    "split",
    "method",
    "num_chains",
    "num_steps",
    "leapfrog_steps",
    "schedule",
    "init",
    "log_jacobian",
    "is_num_samples",
)


def _ais_summary(
    head: dict[str, Any], points: dict[str, list[float]], ais_seconds: float, is_seconds: float
) -> dict[str, Any]:
    """The summary of per-point AIS and IS values: means over points, their standard errors
    s/√n, and the gap AIS − IS."""
    v = {k: torch.tensor(values, dtype=torch.float64) for k, values in points.items()}
    gap, n = v["log_px"] - v["is_log_px"], len(v["log_px"])
    return {
        **head,
        "num_points": n,
        "log_px": _mean(v["log_px"]),
        "log_px_sem": _sem(v["log_px"]),
        "log_px_stderr": _mean(v["stderr"]),
        "is_log_px": _mean(v["is_log_px"]),
        "gap": _mean(gap),
        "gap_sem": _sem(gap),
        "acceptance": _mean(v["acceptance"]),
        "step_size": float(v["step_size"].median()),
        "ais_seconds_per_point": ais_seconds / n,
        "is_seconds_per_point": is_seconds / n,
        "points": points,
    }


@torch.no_grad()
def evaluate_bdmc(
    vae: VAE,
    template: Tensor,
    options: Annealing,
    memory_budget_mb: float,
    progress: bool = False,
    scale: str = "data",
    y: Tensor | None = None,
) -> dict[str, Any]:
    """BDMC on as many points simulated from the model as ``template`` has rows; the bounds are
    on the model's own scale (named by ``scale``), where the simulated points live. ``y``: for
    a kind that reads labels, the class of each simulated point, (z*, x) ~ p(z | y) p(x | z, y),
    whose bounds are then on log p(x | y)."""
    vae.eval()
    start = time.perf_counter()
    parts = []
    for i, part in enumerate(template.split(POINTS_PER_CALL)):
        with pyro.settings.context(module_local_params=True):
            parts.append(
                bdmc(
                    vae.model,
                    vae.guide,
                    part,
                    y=_rows(y, i),
                    options=options.ais_options(memory_budget_mb, progress),
                )
            )
    lower = AISResult.cat([p.lower for p in parts])
    upper = AISResult.cat([p.upper for p in parts])
    gap = (upper.log_px - lower.log_px).double().cpu()
    return {
        "split": SIMULATED,
        "method": "bdmc",
        "num_points": len(template),
        **options.describe(),
        "scale": scale,
        "lower": _mean(lower.log_px),
        "upper": _mean(upper.log_px),
        "gap": _mean(gap),
        "gap_sem": _sem(gap),
        "acceptance": _mean(lower.acceptance),
        "seconds_per_point": (time.perf_counter() - start) / len(template),
        "points": {
            "lower": _list(lower.log_px),
            "upper": _list(upper.log_px),
            "lower_stderr": _list(lower.stderr),
            "upper_stderr": _list(upper.stderr),
        },
    }


def write(run: Run, summary: dict[str, Any], data_sha256: str) -> Path:
    """The summary (with the data's digest) and its per-point arrays
    (:meth:`Run.write_evaluation`: ``index``, and the per-point values of ``summary["points"]``,
    ``stderr`` as ``log_px_se``) and its figure, in the run directory; returns the JSON's path.
    A linked figures folder is refused before anything is written."""
    split, method, points = summary["split"], summary["method"], summary["points"]
    run.directory(run.figures_dir(split))
    arrays = {
        "index": np.arange(summary["num_points"], dtype=np.int64),
        **{
            "log_px_se" if k == "stderr" else k: np.asarray(v, dtype=np.float64)
            for k, v in points.items()
        },
    }
    path = run.write_evaluation({**summary, "data_sha256": data_sha256}, arrays, method)
    if method == "ais":
        figure = plot_ais(
            points["is_log_px"],
            points["log_px"],
            summary["is_num_samples"],
            summary["num_chains"],
            summary["num_steps"],
        )
    else:
        figure = plot_bdmc(points["lower"], points["upper"])
    run.write_figures({method: figure}, split)
    return path


def lines(summary: dict[str, Any]) -> list[str]:
    """What the command prints."""
    s, chains = summary, summary["num_chains"]
    runs = f"{chains} chain{'s' if chains > 1 else ''} × {s['num_steps']} steps"
    if s["method"] == "ais":
        mc = f"{s['log_px_stderr']:.3f}" if chains > 1 else "undefined with one chain"
        return [
            (
                f"{s['split']}: log p(x) ≥ {s['log_px']:.3f} ± {s['log_px_sem']:.3f} nats on the "
                f"data scale (AIS, {runs}, {s['num_points']} points; ± is the s.e. over points, "
                f"the mean Monte Carlo s.e. {mc}; acceptance {s['acceptance']:.2f})"
            ),
            (
                f"{s['split']}: IS at K={s['is_num_samples']} on the same points "
                f"{s['is_log_px']:.3f}; AIS − IS = {s['gap']:.3f} ± {s['gap_sem']:.3f} nats"
            ),
            f"AIS took {s['ais_seconds_per_point']:.2f} s per point",
        ]
    return [
        (
            f"{SIMULATED}: {sandwich(s['lower'], s['upper'], 3)} (BDMC, {runs}, "
            f"{s['num_points']} points); gap {s['gap']:.3f} ± {s['gap_sem']:.3f} nats"
        ),
        f"BDMC took {s['seconds_per_point']:.2f} s per point",
    ]


def _anneal(
    vae: VAE,
    x: Tensor,
    y: Tensor | None,
    options: Annealing,
    memory_budget_mb: float,
    progress: bool,
) -> AISResult:
    with pyro.settings.context(module_local_params=True):
        return ais_log_marginal_likelihood(
            vae.model, vae.guide, x, y=y, options=options.ais_options(memory_budget_mb, progress)
        )


def _rows(y: Tensor | None, part: int) -> Tensor | None:
    """The labels of the ``part``-th call's points (:data:`POINTS_PER_CALL` a call), or None."""
    return None if y is None else y[part * POINTS_PER_CALL : (part + 1) * POINTS_PER_CALL]


def _mean(t: Tensor) -> float:
    return float(t.double().mean())


def _sem(t: Tensor) -> float:
    return float(t.double().std() / math.sqrt(len(t))) if len(t) > 1 else math.nan


def _list(t: Tensor) -> list[float]:
    return [float(v) for v in t.double().cpu()]
