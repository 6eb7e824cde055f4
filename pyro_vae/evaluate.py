"""Scoring a trained VAE: importance-sampled log p(x) plus the ELBO's parts, per data split.

    log p̂(x) = log (1/K) Σ_k p(x, z_k)/q(z_k|x),  z_k ~ q(z|x)     (a stochastic lower bound)
    ELBO(x)  = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))
    active units: #{u : Cov_x(E_q[z_u | x]) > 0.01}                 (Burda et al. 2015)
    bits/dim = −log p̂(x) / (P ln 2)                                  (discrete likelihoods only)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from inference.marginal import (MarginalResult, chunk_size_for_budget, estimate_from_log_weights,
                                measure_bytes_per_particle)
from pyro_vae.atomic import write_text_atomic
from pyro_vae.registry import SpecError
from pyro_vae.vae import VAE

ACTIVE_THRESHOLD = 0.01
FAST_CHUNK_BYTES = 32 * 2**20  # chunks above ~32 MiB get slower on CPU (PYRO-NOTES)


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
    active_units: int
    latent_dim: int
    bits_per_dim: float | None
    wall_time_s: float
    points: MarginalResult = field(repr=False, compare=False)  # per-point estimates

    def to_json(self, path: Path) -> None:
        summary = {k: v for k, v in asdict(self).items() if k != "points"}
        write_text_atomic(path, json.dumps(summary, indent=2) + "\n")

    def lines(self) -> list[str]:
        out = [
            f"{self.split}: log p(x) ≥ {self.log_px:.3f} ± {self.log_px_sem:.3f} nats "
            f"(importance sampling, K={self.num_samples}, {self.num_points} points, "
            f"mean ESS {self.ess:.1f})",
            f"{self.split}: ELBO {self.elbo:.3f} = recon {self.recon:.3f} − KL {self.kl:.3f}; "
            f"active units {self.active_units}/{self.latent_dim}",
        ]
        if self.bits_per_dim is not None:
            out.append(f"{self.split}: {self.bits_per_dim:.4f} bits/dim")
        out.append(f"evaluated in {self.wall_time_s:.1f} s")
        return out


@torch.no_grad()
def particles_per_chunk(vae: VAE, x: torch.Tensor, num_samples: int,
                        memory_budget_mb: float) -> int:
    """Particles drawn at once for the points ``x``: min(K, ⌊budget / bytes per particle⌋), the
    bytes measured on ``x`` (:func:`inference.marginal.measure_bytes_per_particle`) and the
    budget capped at 32 MiB. SpecError naming ``evaluate.memory_budget_mb`` when one particle
    does not fit."""
    with pyro.validation_enabled(False):
        per_particle = measure_bytes_per_particle(vae.log_weights(x))
    try:
        return chunk_size_for_budget(per_particle, min(memory_budget_mb, FAST_CHUNK_BYTES / 2**20),
                                     num_samples)
    except ValueError:
        raise SpecError("evaluate.memory_budget_mb", f"{memory_budget_mb:g} MiB is too small for "
                        f"one importance sample of {len(x)} data point(s), which needs "
                        f"{per_particle / 2**20:.3g} MiB; raise it") from None


@torch.no_grad()
def importance_log_px(vae: VAE, x: torch.Tensor, num_samples: int, memory_budget_mb: float,
                      points_per_call: int = 1, progress: bool = False) -> MarginalResult:
    """Per-point IS estimate through the VAE's fast path (plain torch, no tracing), in chunks
    of :func:`particles_per_chunk` particles."""
    results = []
    chunk = particles_per_chunk(vae, x[:points_per_call], num_samples, memory_budget_mb)
    starts = range(0, len(x), points_per_call)
    with pyro.validation_enabled(False):
        for i in tqdm(starts, desc=f"log p(x), K={num_samples}", unit="chunk", disable=not progress,
                      total=len(starts)):
            fn = vae.log_weights(x[i:i + points_per_call])
            results.append(estimate_from_log_weights(fn, num_samples, chunk))
    return MarginalResult.cat(results)


@torch.no_grad()
def evaluate(vae: VAE, x: torch.Tensor, split: str, num_samples: int,
             memory_budget_mb: float, progress: bool = False,
             log_px: Callable[..., MarginalResult] = importance_log_px) -> Evaluation:
    """``log_px(vae, x, num_samples, memory_budget_mb, progress=...)`` gives the per-point IS
    estimates (the training engine passes one that shards the points over DDP ranks)."""
    vae.eval()
    start = time.perf_counter()
    is_result = log_px(vae, x, num_samples, memory_budget_mb, progress=progress)
    with pyro.validation_enabled(False):
        terms = vae.elbo_terms(x)
        means = vae.encode(x)[0]
    active = int((means.var(dim=0) > ACTIVE_THRESHOLD).sum()) if len(x) > 1 else 0
    log_px = is_result.log_px.double()
    mean_log_px = float(log_px.mean())
    sem = float(log_px.std() / math.sqrt(len(log_px))) if len(log_px) > 1 else float("nan")
    bpd = -mean_log_px / (x.shape[1] * math.log(2)) if vae.likelihood.discrete else None
    return Evaluation(
        split=split, num_points=len(x), num_samples=num_samples,
        log_px=mean_log_px, log_px_sem=sem,
        log_px_stderr=float(is_result.stderr.mean()), ess=float(is_result.ess.mean()),
        elbo=float(terms.elbo.mean()), kl=float(terms.kl.mean()), recon=float(terms.recon.mean()),
        active_units=active, latent_dim=vae.latent_dim, bits_per_dim=bpd,
        wall_time_s=time.perf_counter() - start, points=is_result,
    )
