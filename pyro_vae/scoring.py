"""Scoring a trained VAE: importance-sampled log p(x) plus the ELBO's parts, per data split.

    log p̂(x) = log (1/K) Σ_k p(x, z_k)/q(z_k|x),  z_k ~ q(z|x)     (a stochastic lower bound)
    ELBO(x)  = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))
    active units: #{u : Cov_x(E_q[z_u | x]) > 0.01}, per stochastic layer  (Burda et al. 2015)
    bits/dim = −log p̂(x) / (P ln 2)                   (discrete likelihoods or dequantized data)

A model kind that conditions on labels (``cvae``) is scored given them: log p̂(x | y), the ELBO
of log p(x | y), codes of q(z | x, y). A kind with a latent class (``m2``, ``gmvae``) is scored
as log p(x), y summed inside each importance sample, and its classifier q(y | x) on the split's
labels, ŷ = argmax_y q(y | x):

    accuracy          = (1/n) Σ_i 1[ŷ_i = y_i]                                    (m2)
    cluster accuracy  = max over one-to-one maps m of clusters to classes of
                        (1/n) Σ_i 1[m(ŷ_i) = y_i]   (Hungarian algorithm)        (gmvae)
    NMI               = I(ŷ; y) / ((H(ŷ) + H(y))/2)  (arithmetic normalization)  (gmvae)

A model fitted to transformed data x' = t(x) (``data.transform``) is scored on the data's own
scale: log p(x) = log p'(x') + log |∂x'/∂x| (the data bundle's ``log_jacobian``), and so are the
ELBO and its reconstruction term; the output names both scales.

The fast path scores several points per call when K is small: a call holds at most
``cells = ⌊budget / bytes per (particle, point)⌋`` (particle, point) pairs, so it takes
``⌊cells / K⌋`` points with all K particles, or one point in chunks of ``cells`` particles.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch

from inference.marginal import (
    MarginalResult,
    chunk_size_for_budget,
    estimate_from_log_weights,
    measure_bytes_per_particle,
)
from pyro_vae.console import progress_bar
from pyro_vae.models import LatentClass
from pyro_vae.ranks import gather_rows, rank_zero, world
from pyro_vae.registry import SpecError
from pyro_vae.vae import VAE

if TYPE_CHECKING:
    from pyro_vae.prepared import Prepared

ACTIVE_THRESHOLD = 0.01
LONG_EVALUATION_S = 60.0  # an evaluation expected to take longer says so before it starts
#: chunks above ~32 MiB of temporaries run slower per particle on a CPU, their working set
#: past the caches (``python -m benchmarks.small_k`` measures it)
FAST_CHUNK_BYTES = 32 * 2**20


@dataclass
class Evaluation:
    split: str
    num_points: int
    num_samples: int
    log_px: float  # mean over points of log p̂(x)
    log_px_sem: float  # standard error of that mean over points
    log_px_stderr: float  # mean per-point Monte Carlo standard error
    ess: float  # mean effective sample size
    elbo: float
    kl: float
    recon: float
    analytic_kl: bool  # False: the KL is the one-sample Monte Carlo term log q − log p
    active_units: int  # over all layers
    latent_dim: int  # over all layers
    active_per_layer: list[int]  # z_1 first
    latent_dims: list[int]
    bits_per_dim: float | None
    wall_time_s: float
    points: MarginalResult = field(repr=False, compare=False)  # per point, on the data scale
    scale: str = "data"  # the scale log_px, elbo and recon are on: always the data's own
    model_scale: str = "data"  # the scale the model sees: data, standardized or dequantized
    log_jacobian: float = 0.0  # log |∂x'/∂x|, added to the model's log p'(x') per point
    num_dims: int = 0  # P, the values per data point
    accuracy: float | None = None  # q(y | x)'s accuracy (m2)
    cluster_accuracy: float | None = None  # of q(y | x)'s clusters, best one-to-one match (gmvae)
    nmi: float | None = None  # normalized mutual information of clusters and labels (gmvae)

    def summary(self, data_sha256: str) -> dict[str, Any]:
        """The JSON summary (every field but the per-point arrays), for data of digest
        ``data_sha256``."""
        return {
            **{k: v for k, v in asdict(self).items() if k != "points"},
            "data_sha256": data_sha256,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Per point i of the first ``num_points`` rows of the split: ``index`` (its row),
        ``log_px`` = log (1/K) Σ_k w_k, ``log_px_se`` (its Monte Carlo s.e.), ``ess``, ``elbo``
        = (1/K) Σ_k log w_k, and where defined ``bits_per_dim`` = −log p̂(x)/(P ln 2)."""
        p = self.points
        out = {
            "index": np.arange(self.num_points, dtype=np.int64),
            "log_px": p.log_px.double().numpy(),
            "log_px_se": p.stderr.double().numpy(),
            "ess": p.ess.double().numpy(),
            "elbo": p.elbo.double().numpy(),
        }
        if self.bits_per_dim is not None:
            out["bits_per_dim"] = -out["log_px"] / (self.num_dims * math.log(2))
        return out

    @classmethod
    def read(cls, summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Evaluation:
        """An evaluation back from its summary and per-point arrays (:meth:`Run.evaluation`,
        :meth:`Run.points`)."""
        names = {f.name for f in fields(cls)} - {"points"}
        points = MarginalResult(
            log_px=torch.from_numpy(arrays["log_px"]),
            stderr=torch.from_numpy(arrays["log_px_se"]),
            ess=torch.from_numpy(arrays["ess"]),
            elbo=torch.from_numpy(arrays["elbo"]),
            num_samples=int(summary["num_samples"]),
        )
        return cls(**{k: v for k, v in summary.items() if k in names}, points=points)

    def lines(self) -> list[str]:
        out = [
            (
                f"{self.split}: log p(x) ≥ {self.log_px:.3f} ± {self.log_px_sem:.3f} nats on the "
                f"data scale (importance sampling, K={self.num_samples}, {self.num_points} points; "
                f"± is the s.e. over points, the mean Monte Carlo s.e. {self.log_px_stderr:.3f}; "
                f"mean ESS {self.ess:.1f})"
            ),
            (
                f"{self.split}: ELBO {self.elbo:.3f} = recon {self.recon:.3f} − KL {self.kl:.3f}"
                f"{'' if self.analytic_kl else ' (Monte Carlo KL, one sample)'}; "
                f"active units {self._active_text()}"
            ),
        ]
        if self.model_scale != "data":
            out.insert(
                1,
                f"{self.split}: = {self.log_px - self.log_jacobian:.3f} on the "
                f"{self.model_scale} scale the model sees + log-Jacobian "
                f"{self.log_jacobian:.3f}",
            )
        if self.bits_per_dim is not None:
            out.append(f"{self.split}: {self.bits_per_dim:.4f} bits/dim")
        if self.accuracy is not None:
            out.append(f"{self.split}: q(y|x) accuracy {self.accuracy:.4f}")
        if self.cluster_accuracy is not None and self.nmi is not None:
            out.append(
                f"{self.split}: clusters of q(y|x): accuracy {self.cluster_accuracy:.4f} "
                f"(best one-to-one match to the labels), NMI {self.nmi:.4f}"
            )
        out.append(f"evaluated in {self.wall_time_s:.1f} s")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_markdown_(self) -> str:
        return "\n\n".join(self.lines())

    def _active_text(self) -> str:
        """``a/D``, or per layer ``a1/D1 (z1), a2/D2 (z2)``."""
        if len(self.latent_dims) == 1:
            return f"{self.active_units}/{self.latent_dim}"
        return ", ".join(
            f"{a}/{d} (z{i + 1})"
            for i, (a, d) in enumerate(zip(self.active_per_layer, self.latent_dims))
        )


@dataclass(frozen=True)
class Plan:
    """How the fast path splits the work: ``points`` data points per call, their particles in
    chunks of ``particles``."""

    points: int
    particles: int


@torch.no_grad()
def plan_chunks(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int,
    memory_budget_mb: float,
    cap_bytes: int = FAST_CHUNK_BYTES,
    y: torch.Tensor | None = None,
) -> Plan:
    """The (particle, point) pairs one call may hold, ``cells = ⌊budget / b⌋`` with the budget
    capped at ``cap_bytes`` and b the bytes one particle of one point costs, measured on ``x[:1]``
    (:func:`inference.marginal.measure_bytes_per_particle`): ⌊cells / K⌋ points per call with
    all K particles when that is ≥ 1, else one point in chunks of ``cells`` particles (``y``:
    the labels of ``x``, for a kind that reads them). SpecError naming
    ``evaluate.memory_budget_mb`` when one particle does not fit."""
    with pyro.validation_enabled(False):
        per_particle = measure_bytes_per_particle(vae.log_weights(x[:1], _at(y, slice(1))))
    try:
        cells = chunk_size_for_budget(
            per_particle,
            min(memory_budget_mb, cap_bytes / 2**20),
            max(num_samples, len(x) * num_samples),
        )
    except ValueError:
        raise SpecError(
            "evaluate.memory_budget_mb",
            f"{memory_budget_mb:g} MiB is too small for "
            f"one importance sample of one data point, which needs "
            f"{per_particle / 2**20:.3g} MiB; raise it",
        ) from None
    if cells >= num_samples:
        return Plan(points=max(1, min(len(x), cells // num_samples)), particles=num_samples)
    return Plan(points=1, particles=cells)


def particles_per_chunk(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int,
    memory_budget_mb: float,
    y: torch.Tensor | None = None,
) -> int:
    """Particles drawn at once for one point of ``x`` (:func:`plan_chunks`)."""
    return plan_chunks(vae, x[:1], num_samples, memory_budget_mb, y=_at(y, slice(1))).particles


def _at(y: torch.Tensor | None, rows: slice | torch.Tensor) -> torch.Tensor | None:
    """The labels ``y[rows]``, or None without labels."""
    return None if y is None else y[rows]


@torch.no_grad()
def estimated_seconds(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int,
    memory_budget_mb: float,
    y: torch.Tensor | None = None,
) -> float:
    """Wall time that :func:`importance_log_px` should take on the points ``x``: t·K·N, with t
    the time per (particle, point) of one call of the fast path's :func:`plan_chunks` (the
    faster of two calls; the first pays for allocations). The RNG is left as it was."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        plan = plan_chunks(vae, x, num_samples, memory_budget_mb, y=y)
        draw, times = vae.log_weights(x[: plan.points], _at(y, slice(plan.points))), []
        for _ in range(2):
            start = time.perf_counter()
            float(draw(plan.particles).sum())  # a host read: the device has finished
            times.append(time.perf_counter() - start)
    return min(times) / (plan.points * plan.particles) * num_samples * len(x)


@torch.no_grad()
def importance_log_px(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int,
    memory_budget_mb: float,
    progress: bool = False,
    plan: Plan | None = None,
    y: torch.Tensor | None = None,
) -> MarginalResult:
    """Per-point IS estimate through the VAE's fast path (plain torch, no tracing), split as
    :func:`plan_chunks` says (or as ``plan`` says); ``y``: the labels of ``x`` for a kind
    that reads them.

    The estimates go into one preallocated (4, N) tensor, not a list of per-call results joined
    at the end, so that no small tensor outlives the calls' large temporaries (K × P floats):
    small survivors between large frees fragment the allocator's heap, and the process grows
    with the number of points instead of staying at one call's size."""
    plan = plan or plan_chunks(vae, x, num_samples, memory_budget_mb, y=y)
    fields = ("log_px", "stderr", "ess", "elbo")
    out = torch.empty((len(fields), len(x)), dtype=torch.float64, device=x.device)
    starts = range(0, len(x), plan.points)
    with pyro.validation_enabled(False):
        for i in progress_bar(
            starts,
            desc=f"log p(x), K={num_samples}",
            unit="call",
            disable=not progress,
            total=len(starts),
        ):
            fn = vae.log_weights(x[i : i + plan.points], _at(y, slice(i, i + plan.points)))
            part = estimate_from_log_weights(fn, num_samples, plan.particles)
            out[:, i : i + plan.points] = torch.stack([getattr(part, f) for f in fields])
    return MarginalResult(*out, num_samples=num_samples)


@torch.no_grad()
def evaluate(
    vae: VAE,
    x: torch.Tensor,
    split: str,
    num_samples: int,
    memory_budget_mb: float,
    progress: bool = False,
    log_px: Callable[..., MarginalResult] = importance_log_px,
    log_jacobian: float = 0.0,
    model_scale: str = "data",
    counts: bool = False,
    y: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> Evaluation:
    """``log_px(vae, x, num_samples, memory_budget_mb, progress=..., y=y)`` gives the per-point
    IS estimates (the training engine passes one that shards the points over DDP ranks);
    ``y``: the labels of ``x``, given to a kind that reads them; ``labels``: those the
    classifier of a kind with a latent class is scored on (:func:`class_metrics`).

    ``x`` is on the scale the model sees (``model_scale``); ``log_jacobian`` = log |∂x'/∂x| moves
    log p̂, the ELBO and its reconstruction term to the data's own scale. ``counts``: the data
    are integer counts (dequantized), so bits/dim apply though the likelihood is continuous."""
    vae.eval()
    start = time.perf_counter()
    model = log_px(vae, x, num_samples, memory_budget_mb, progress=progress, y=y)
    is_result = MarginalResult(
        log_px=model.log_px + log_jacobian,
        stderr=model.stderr,
        ess=model.ess,
        elbo=model.elbo + log_jacobian,
        num_samples=num_samples,
    )
    with pyro.validation_enabled(False):
        terms = vae.elbo_terms(x, y)
        layers = vae.encode_layers(x, y)
    active = [int((m.var(dim=0) > ACTIVE_THRESHOLD).sum()) if len(x) > 1 else 0 for m in layers]
    log_p = is_result.log_px.double()
    mean_log_px = float(log_p.mean())
    sem = float(log_p.std() / math.sqrt(len(log_p))) if len(log_p) > 1 else float("nan")
    discrete = vae.likelihood.discrete or counts
    bpd = -mean_log_px / (x.shape[1] * math.log(2)) if discrete else None
    return Evaluation(
        split=split,
        num_points=len(x),
        num_samples=num_samples,
        log_px=mean_log_px,
        log_px_sem=sem,
        log_px_stderr=float(is_result.stderr.mean()),
        ess=float(is_result.ess.mean()),
        elbo=float(terms.elbo.mean()) + log_jacobian,
        kl=float(terms.kl.mean()),
        recon=float(terms.recon.mean()) + log_jacobian,
        analytic_kl=terms.analytic_kl,
        active_units=sum(active),
        latent_dim=sum(vae.latent_dims),
        active_per_layer=active,
        latent_dims=list(vae.latent_dims),
        bits_per_dim=bpd,
        wall_time_s=time.perf_counter() - start,
        points=is_result,
        model_scale=model_scale,
        log_jacobian=log_jacobian,
        num_dims=int(x.shape[1]),
        **class_metrics(vae, x, labels),
    )


def class_metrics(vae: VAE, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    """The module docstring's accuracy (a kind that reads labels, m2) or cluster accuracy and
    NMI (gmvae) of ŷ = argmax q(y | x) on the points of ``x`` whose ``labels`` are given (≥ 0);
    none for a kind without a classifier or without labels."""
    if not isinstance(vae.kind, LatentClass) or labels is None:
        return {}
    labels = labels.to(x.device)
    known = labels >= 0
    if not known.any():
        return {}
    guess = vae.kind.classify(x[known]).argmax(-1).cpu().numpy()
    truth = labels[known].cpu().numpy()
    if vae.reads_labels:
        return {"accuracy": float((guess == truth).mean())}
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import normalized_mutual_info_score

    counts = np.zeros((vae.kind.num_classes, int(truth.max()) + 1))
    np.add.at(counts, (guess, truth), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {
        "cluster_accuracy": float(counts[rows, cols].sum() / len(truth)),
        "nmi": float(normalized_mutual_info_score(truth, guess)),
    }


def device_for(accelerator: str) -> torch.device:
    """The device a single-process evaluation runs on."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise SpecError(
            "--accelerator",
            "gpu (given, or the run's train.accelerator) but torch "
            "finds no CUDA device; pass --accelerator cpu",
        )
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def announce(what: str, seconds: float, measured: str) -> None:
    """On stderr (rank 0), before work whose estimated time ``seconds`` (extrapolated from a
    timed pilot, whose cost per unit ``measured`` names) exceeds ``LONG_EVALUATION_S``: one line,
    ``pyro-vae: WHAT will take about …``, so an absurd size does not run for hours silently."""
    if rank_zero() and seconds > LONG_EVALUATION_S:
        print(
            f"pyro-vae: {what} will take about {_duration(seconds)} ({measured} measured); "
            "Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )


def announce_duration(
    vae: VAE,
    x: torch.Tensor,
    split: str,
    k: int,
    budget: float,
    world_size: int = 1,
    y: torch.Tensor | None = None,
) -> None:
    """:func:`announce` an importance-sampled evaluation: its time from a measured cost per
    particle (:func:`estimated_seconds`), shared by ``world_size`` ranks."""
    seconds = estimated_seconds(vae, x, k, budget, y=y) / world_size
    per = seconds * world_size / (k * len(x))
    points = f"{len(x)} {split} point{'s' if len(x) > 1 else ''}"
    announce(
        f"log p(x) of {points} with K={k} importance samples",
        seconds,
        f"{per * 1e6:.3g} µs per particle",
    )


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def evaluate_run(
    prepared: Prepared,
    device: torch.device,
    split: str | None = None,
    num_samples: int | None = None,
    progress: bool = False,
    limit: int | None = None,
) -> Evaluation:
    """Importance-sampled evaluation on ``device`` (the spec's ``evaluate`` section by default)
    of the first ``limit`` points of the split (all by default), on the data's own scale.

    Under DDP rank r estimates log p(x) for points r, r + W, ... with its own RNG stream and the
    per-point estimates are all-gathered, so every rank returns the whole evaluation.
    """
    spec = prepared.spec.evaluate
    split, k = split or spec.split, num_samples or spec.num_samples
    rank, size = world()
    fields = ("log_px", "stderr", "ess", "elbo")

    def log_px(
        vae: VAE,
        x: torch.Tensor,
        num: int,
        budget: float,
        progress: bool = False,
        y: torch.Tensor | None = None,
    ) -> MarginalResult:
        def rows(i: torch.Tensor) -> torch.Tensor:
            result = importance_log_px(
                vae, x[i], num, budget, progress=progress and rank == 0, y=_at(y, i)
            )
            return torch.stack([getattr(result, f).double() for f in fields], dim=1)

        table = gather_rows(rows, torch.arange(len(x), device=x.device)).cpu()
        return MarginalResult(**dict(zip(fields, table.T.contiguous())), num_samples=num)

    vae = prepared.vae.to(device)
    y = prepared.labels(split, limit)
    y = None if y is None else y.to(device)
    try:
        announce_duration(
            vae,
            prepared.bundle.split(split)[:limit].to(device),
            split,
            k,
            spec.memory_budget_mb,
            size,
            y=y,
        )
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if size > 1:  # ranks share one RNG stream after training: give each its own
                torch.manual_seed(prepared.spec.train.seed + 1 + rank)
            bundle = prepared.bundle
            return evaluate(
                vae,
                bundle.split(split)[:limit].to(device),
                split,
                k,
                spec.memory_budget_mb,
                progress=progress,
                log_px=log_px,
                log_jacobian=bundle.log_jacobian,
                model_scale=bundle.scale_name,
                counts=bundle.transform == "dequantize",
                y=y,
                labels=_at(bundle.labels.get(split), slice(limit)),
            )
    finally:
        vae.cpu()
