"""Importance-sampled log p(x) per data point, with its Monte Carlo standard error and ESS.

For each data point x and K particles z_k ~ q(z | x) the importance weights are
``w_k = p(x, z_k) / q(z_k | x)`` and

    log p̂(x) = log (1/K) Σ_k w_k = m + log Σ_k exp(lw_k − m) − log K,    m = max_k lw_k,

a stochastic lower bound of log p(x) in expectation (Jensen), tightening as K grows (Burda et al.
2015, "Importance Weighted Autoencoders", Theorem 1). The particles are drawn in chunks and
reduced by a streaming log-sum-exp, so memory does not grow with K. Per point it also returns

    ESS    = (Σ_k w_k)² / Σ_k w_k²                      (Kong 1992; Owen 2013, ch. 9)
    stderr = sqrt((K/ESS − 1) / (K − 1))                 (delta method, see below)
    elbo   = (1/K) Σ_k log w_k                           (the ELBO estimate from the same particles)

Delta method: p̂ = mean_k w_k has Var(p̂) = Var(w)/K and log p̂ ≈ log μ + (p̂ − μ)/μ, so
Var(log p̂) ≈ Var(w) / (K μ²). Plugging in μ̂ = Σw/K and the unbiased sample variance
V̂ = (Σw² − (Σw)²/K)/(K − 1) gives

    stderr² = (K/ESS − 1)/(K − 1) = K/(K − 1) · (1/ESS − 1/K).

The K−1 form is used because the plug-in 1/ESS − 1/K underestimates Var(w) by the factor
(K−1)/K (it is 0 at K=1, where no spread can be seen; here K=1 gives nan). Both estimate the
spread of the weights actually drawn: with heavy-tailed weights (a guide narrower than the
posterior) the sample variance itself is unreliable and the stderr is optimistic.

Even K = 10⁴ can sit about 1 nat below the truth (Wu et al. 2017, "On the Quantitative Analysis
of Decoder-Based Generative Models"): report log p̂ as a stochastic lower bound with its stderr.

Discrete latents: a model site marked for enumeration (``infer={"enumerate": "parallel"}``,
``config_enumerate``) that the guide does not sample is summed exactly inside each particle,

    w_k = Σ_y p(x, y, z_k) / q(z_k | x),

by Pyro's tensor contraction (:mod:`inference.traces`): the estimator then samples only the
continuous sites, with the variance of the continuous part alone. A discrete site that is not
summed (not marked, or sampled by the guide) is drawn, from the guide or, absent there, from
its prior; a warning names it once per call.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm.auto import tqdm

from inference.traces import (
    FixedPoints,
    particle_traces,
    point_log_weights,
    warn_unsummed_discrete,
)

# Probe sizes for measuring memory per particle: the slope (peak(4) − peak(2)) / 2 removes the
# cost that does not grow with the particles (parameters, an encoder pass over the batch).
_PROBE_PARTICLES = (2, 4)
# Margin over the measured peak: allocator rounding and fragmentation, workspace that kernels
# allocate internally (not visible as tensors), and the accumulator's own (k, B) temporaries.
_SAFETY_FACTOR = 1.5
_MIB = 2**20


@dataclass
class MarginalResult:
    """Per data point importance-sampling estimates, all of shape (B,), in float64."""

    log_px: Tensor  # log (1/K) Σ_k w_k
    stderr: Tensor  # delta-method Monte Carlo standard error of log_px
    ess: Tensor  # (Σw)² / Σw², in [1, K]
    elbo: Tensor  # (1/K) Σ_k log w_k
    num_samples: int

    @classmethod
    def cat(cls, results: Sequence[MarginalResult]) -> MarginalResult:
        """Join the results of several batches of data points (same K) into one."""
        sizes = {r.num_samples for r in results}
        if len(sizes) != 1:
            raise ValueError(f"results must share num_samples, got {sorted(sizes)}")
        fields = ("log_px", "stderr", "ess", "elbo")
        joined = {f: torch.cat([getattr(r, f) for r in results]) for f in fields}
        return cls(**joined, num_samples=sizes.pop())

    def summary(self) -> dict[str, float]:
        """Means over the B data points.

        ``log_px_sem`` is the standard error of the mean over data points, std(log_px)/sqrt(B)
        (the spread of the data, not Monte Carlo error); ``stderr`` is the mean per-point Monte
        Carlo standard error.
        """
        n = self.log_px.numel()
        sem = self.log_px.std().item() / math.sqrt(n) if n > 1 else math.nan
        return {
            "log_px": self.log_px.mean().item(),
            "log_px_sem": sem,
            "stderr": self.stderr.mean().item(),
            "ess": self.ess.mean().item(),
            "elbo": self.elbo.mean().item(),
            "num_samples": self.num_samples,
            "num_points": n,
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"log p(x) = {s['log_px']:.2f} ± {s['log_px_sem']:.2f} "
            f"(K={s['num_samples']}, {s['num_points']} points, ± is the s.e. over points; "
            f"mean Monte Carlo s.e. {s['stderr']:.3f}, mean ESS {s['ess']:.1f}, "
            f"ELBO {s['elbo']:.2f})"
        )


@torch.no_grad()
def estimate_from_log_weights(
    log_weights: Callable[[int], Tensor],
    num_samples: int,
    chunk_size: int,
    progress: bool = False,
) -> MarginalResult:
    """Stream ``num_samples`` particles through ``log_weights`` in chunks of ``chunk_size``.

    ``log_weights(k)`` returns a (k, B) tensor of log-weights ``log p(x_b, z) − log q(z | x_b)``
    for k fresh particles. This is the one accumulator of the package: the generic traced path
    and any model-specific fast path (plain torch) both go through it. It keeps per point, in
    float64, the running max m and

        s1 = Σ_k exp(lw_k − m),   s2 = Σ_k exp(2 (lw_k − m)),   Σ_k lw_k,

    rescaling s1 by exp(m_old − m_new) and s2 by its square when the max grows. Then
    log p̂ = m + log s1 − log K, ESS = s1²/s2, stderr = sqrt((K/ESS − 1)/(K − 1)) (module
    docstring), elbo = Σ lw / K. A point whose weights are all zero gets log p̂ = −inf.
    """
    _check_positive(num_samples=num_samples, chunk_size=chunk_size)
    # 0-dim starts (m = −inf, sums 0) that the first chunk broadcasts to (B,)
    m = torch.tensor(-math.inf, dtype=torch.float64)
    s1 = s2 = sum_lw = torch.zeros((), dtype=torch.float64)
    done = 0
    with tqdm(total=num_samples, unit="particle", disable=not progress) as bar:
        while done < num_samples:
            k = min(chunk_size, num_samples - done)
            lw = log_weights(k).detach()
            if lw.dim() != 2 or lw.shape[0] != k:
                shape = tuple(lw.shape)
                raise ValueError(f"log_weights({k}) must return a ({k}, B) tensor, got {shape}")
            lw = lw.to(torch.float64)
            new_m = torch.maximum(m, lw.amax(0))
            shift = new_m.masked_fill(new_m == -math.inf, 0.0)  # all weights zero so far: sums 0
            decay = (m - shift).exp()
            u = (lw - shift).exp()
            s1 = s1 * decay + u.sum(0)
            s2 = s2 * decay.square() + u.square().sum(0)
            sum_lw = sum_lw + lw.sum(0)
            m = new_m
            done += k
            bar.update(k)
    ess = s1.square() / s2
    if num_samples > 1:
        var = ((num_samples / ess - 1.0) / (num_samples - 1)).clamp(min=0.0)
    else:
        var = torch.full_like(ess, math.nan)
    return MarginalResult(
        log_px=m + s1.log() - math.log(num_samples),
        stderr=var.sqrt(),
        ess=ess,
        elbo=sum_lw / num_samples,
        num_samples=num_samples,
    )


def chunk_size_for_budget(
    bytes_per_particle: int, memory_budget_mb: float, num_samples: int
) -> int:
    """Largest number of particles per chunk, ``min(K, floor(budget / bytes_per_particle))``.

    ``memory_budget_mb`` is in MiB (2²⁰ bytes). Raises ValueError when one particle does not fit.
    """
    _check_positive(num_samples=num_samples)
    if memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
    budget = int(memory_budget_mb * _MIB)
    if bytes_per_particle > budget:
        raise ValueError(
            f"memory_budget_mb={memory_budget_mb} is too small for one particle: one particle "
            f"needs {bytes_per_particle / _MIB:.4g} MiB ({bytes_per_particle} bytes) for this batch; "
            "raise the budget or pass fewer data points"
        )
    return min(num_samples, budget // max(bytes_per_particle, 1))


@torch.no_grad()
def measure_bytes_per_particle(log_weights: Callable[[int], Tensor]) -> int:
    """Memory that one more particle costs in a call of ``log_weights(k)``, in bytes.

    Measured, not guessed: the peak of live tensor bytes during ``log_weights(k)`` at the two
    probe sizes k = 2, 4 (after one warm-up call, so lazy initialisation does not count); the
    slope (peak(4) − peak(2)) / 2, times a safety factor of 1.5, is the cost per particle.
    Works for any device, since it counts tensor storage, not process memory.
    """
    log_weights(1)
    peaks = []
    for k in _PROBE_PARTICLES:
        with _ctrl_c_held(), _PeakTensorMemory() as meter:
            log_weights(k)
        peaks.append(meter.peak)
    slope = (peaks[1] - peaks[0]) / (_PROBE_PARTICLES[1] - _PROBE_PARTICLES[0])
    return math.ceil(_SAFETY_FACTOR * max(slope, 1.0))


@torch.no_grad()
def log_marginal_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 5000,
    max_plate_nesting: int = 1,
    memory_budget_mb: float = 512.0,
    data_plate: str | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> MarginalResult:
    """Importance-sampled log p(x) of each data point in the batch ``model(*args, **kwargs)`` sees.

    ``model`` and ``guide`` are any Pyro callables (functions or ``nn.Module``s) whose sample
    sites all sit in one data plate, ``pyro.plate("data", N, subsample=...)`` or plain; the
    result has one entry per point of the batch passed in. The guide is the proposal; all K
    particles run vectorized in an outer plate (:func:`inference.traces.particle_traces`), in
    chunks whose size keeps the measured per-particle memory within ``memory_budget_mb`` MiB (the
    memory that grows with the particles; the model's fixed cost comes on top).

    Per point, log w = log p(x, z) − log q(z | x) from :func:`inference.traces.point_log_weights`
    with ``unscaled=True``: each site's log density, masks applied, summed over every plate but
    the particle and data plates; the subsample scale N/B and ``poutine.scale`` (a KL weight β)
    do not enter. A model site marked ``infer={"enumerate": "parallel"}`` that the guide does not
    sample is summed exactly in each particle (module docstring); any other model latent the
    guide does not sample is drawn from its prior, where its p/q cancels, and left out (a
    discrete one is named by a warning, once). The data plate is the plate all observed sites share (pass
    ``data_plate`` to choose among several); a sample site outside it, e.g. a global latent,
    raises ValueError, as does a data plate that draws its own random subsample (no fixed points).
    """
    _check_positive(num_samples=num_samples)

    noticed: set[str] = set()

    def log_weights(k: int) -> Tensor:
        traces = particle_traces(model, guide, args, kwargs, k, max_plate_nesting, enumerate=True)
        warn_unsummed_discrete(*traces, noticed)
        return point_log_weights(
            *traces, max_plate_nesting, unscaled=True, data_plate=data_plate
        ).log_w

    with FixedPoints():
        chunk = chunk_size_for_budget(
            measure_bytes_per_particle(log_weights), memory_budget_mb, num_samples
        )
        return estimate_from_log_weights(log_weights, num_samples, chunk, progress)


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """A Ctrl-C (SIGINT) inside the block is delivered when it ends, to the handler that was there.

    Python prints and drops an exception raised in a weakref finalizer ("Exception ignored in:
    <finalize object>"), so a KeyboardInterrupt landing in one of :class:`_PeakTensorMemory`'s
    many finalizers would be lost and a long evaluation would go on. Only the main thread can
    set handlers; elsewhere, or under a handler not set from Python, nothing is held."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    seen: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if seen:
            signal.raise_signal(signal.SIGINT)


class _PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated and alive inside the ``with`` block.

    Every tensor an operation returns is counted once per storage, while any Python tensor
    object on that storage is alive (a weakref finalizer per tensor keeps the count). A view of a
    tensor made before the block counts its storage too: a cost that does not grow with the
    particles, so it drops out of the slope in :func:`measure_bytes_per_particle`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        # (device, storage address) -> [tensors alive on it, its bytes]
        self._holders: dict[tuple[torch.device, int], list[int]] = {}
        self._finalizers: list[weakref.finalize] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.layout == torch.strided:
                self._hold(t)
        return out

    def __exit__(self, *exc: object) -> None:
        for f in self._finalizers:
            f.detach()
        super().__exit__(*exc)

    def _hold(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        if key not in self._holders:
            self._holders[key] = [0, storage.nbytes()]
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._holders[key][0] += 1
        self._finalizers.append(weakref.finalize(t, self._release, key))

    def _release(self, key: tuple[torch.device, int]) -> None:
        holder = self._holders[key]
        holder[0] -= 1
        if holder[0] == 0:
            self.live -= holder[1]
            del self._holders[key]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
