"""Annealed importance sampling (AIS) of log p(x) per data point, and BDMC sandwiches.

AIS (Neal 2001) moves C chains per data point x through the targets

    f_t(z) = q₀(z)^(1 − β_t) · p(x, z)^(β_t),    0 = β_0 < β_1 < … < β_T = 1,

where q₀ is the guide q(z | x) (``init="guide"``, Wu et al. 2017's "AIS + encoder") or the prior
p(z) (``init="prior"``). A chain starts at z_0 ~ q₀; for t = 1 … T it adds

    log w += (β_t − β_{t−1}) · h(z_{t−1}),    h(z) = log p(x, z) − log q₀(z),

and then (t < T) moves z_t ~ K_t(· | z_{t−1}) by one HMC transition that leaves f_t invariant.
E[w] = p(x) (the ratio of the normalisers of f_T and f_0), so

    log p̂(x) = log (1/C) Σ_c w_c

is a stochastic lower bound, with the delta-method standard error over chains and the ESS of
:mod:`inference.marginal` (same accumulator). With T = 1 no transition runs and log p̂ is the
importance-sampled estimate with K = C particles from q₀, on the same draws.

HMC runs in the unconstrained space u of every latent site, z = T(u) with T = ``biject_to`` of the
model site's support: the potential is U_β(u) = −[(1 − β) a(u) + β b(u)] with

    a(u) = log q₀(T(u)) + log|det ∂T/∂u|,    b(u) = log p(x, T(u)) + log|det ∂T/∂u|,

both evaluated by replaying the model (and guide) on the values in Pyro traces, with gradients
by autograd: the densities are the model's own. Keeping a, b and both gradients per state lets a
new β reuse the last evaluation, so a transition of L leapfrog steps costs L model evaluations.
Leapfrog: identity mass, momentum ρ ~ N(0, I), accept with probability min(1, exp(H₀ − H₁)),
H = U + ½‖ρ‖²; a non-finite H₁ (a divergent trajectory) is rejected.

Step sizes: one ε per data point and transition. In the first chunk of chains, ``adapt_chains``
extra *pilot* chains run beside the estimating chains; after each transition
log ε ← log ε + 0.2 · (ā − target), ā the pilot chains' mean acceptance probability at that
point, and every ε used is recorded. Later chunks replay the recorded schedule. The ε that
estimating chains use at step t depends on pilot chains only, which share no randomness with
them: conditional on the schedule, the estimating chains are a plain AIS run with fixed
f_t-invariant kernels, so E[w] = p(x) holds exactly (adapting on the estimating chains' own
acceptances would make K_t depend on the chains it moves and break it). Pilot weights are thrown
away. BDMC's reverse chains reuse the forward schedule reversed.

Memory: the chains are split into chunks whose measured memory per chain
(:func:`inference.marginal.measure_bytes_per_particle`, one evaluation with its gradient) fits
``memory_budget_mb``; all data points of the batch run together, every chain vectorized in an
outer particle plate as in :func:`inference.traces.particle_traces`.

Discrete latents: a model site marked for enumeration (``infer={"enumerate": "parallel"}``)
that q₀ does not sample is summed in every density, p(x, z) = Σ_y p(x, y, z) (and, for
``init="prior"``, q₀(z) = Σ_y p(y, z)), as in :mod:`inference.marginal`: HMC moves the
continuous sites of this marginal. A discrete site that q₀ draws is held where it was drawn
along each chain (named once by a warning): the transitions leave each f_t(z | y) invariant, so
f_t(y, z) too, and E[w] = p(x) still holds.

Autoguides: the chains' state is what q₀ draws. For a guide that samples the model's sites
(an encoder, ``AutoNormalMessenger``) that is z; for ``AutoNormal`` it is the auxiliary
u ~ q(u | x) (``z_unconstrained``), the model seeing its deterministic site z = T(u). HMC then
targets f_t(u) = q(u)^(1 − β_t) · (p(x, T(u)) |det ∂T/∂u|)^(β_t), whose normalisers are those of
the targets in z, so w and E[w] = p(x) are unchanged. A guide whose auxiliary site spans every
point (``AutoLowRankMultivariateNormal``, ``AutoIAFNormal``: one vector for the whole batch) has
no density per point and is refused, as by importance sampling.

BDMC (Grosse, Ghahramani and Adams 2015, "Sandwiching the marginal likelihood using bidirectional
Monte Carlo"): on data simulated from the model, (z*, x) ~ p(z) p(x | z), z* is an exact posterior
draw. Forward AIS gives a stochastic lower bound; AIS run backward (β from 1 to 0) from z* has
E[w_rev] = 1/p(x), so −log (1/C) Σ_c w_rev,c is a stochastic upper bound. The gap between the
two bounds the error of both, and shrinks to 0 as T grows. The reverse chains start at the model's
z*, which fixes no auxiliary site of a guide: with such a guide (``AutoNormal``), BDMC needs
``init="prior"`` or a guide that samples the model's sites.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import Transform
from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from torch import Tensor
from torch.distributions import biject_to, constraints
from torch.distributions.constraints import Constraint
from tqdm.auto import tqdm

from inference.marginal import (
    MarginalResult,
    chunk_size_for_budget,
    estimate_from_log_weights,
    measure_bytes_per_particle,
)
from inference.traces import (
    PARTICLE_PLATE,
    FixedPoints,
    Site,
    deterministic,
    enumerated,
    point_log_weights,
    sample_sites,
    sum_to_points,
    summed,
    warn_unsummed_discrete,
)

SCHEDULES = ("linear", "geometric", "sigmoid")
INITS = ("guide", "prior")
SIGMOID_RADIUS = 4.0  # δ of the sigmoidal schedule (Grosse et al. 2015)
GEOMETRIC_START = 1e-4  # β_1 of the geometric schedule
ADAPT_RATE = 0.2  # log ε moves by ADAPT_RATE · (acceptance − target) per transition
PILOT_LEAPFROG = 10  # leapfrog steps of the transitions that estimated_seconds times, at most


@dataclass(frozen=True, kw_only=True)
class AISOptions:
    """How :func:`ais_log_marginal_likelihood`, :func:`bdmc` and :func:`estimated_seconds` anneal
    (notation of the module docstring): keyword-only, frozen, checked on construction (a
    ValueError names the field). It travels as the one keyword ``options=``, so that every other
    keyword argument of those functions is the model's and guide's.

    =================  ==========================================================================
    num_chains         C ≥ 1 estimating chains per point: log p̂(x) = log (1/C) Σ_c w_c
    num_steps          T ≥ 1: targets f_0 … f_T with β_0 = 0 < β_1 < … < β_T = 1, T − 1 HMC
                       transitions; T = 1 is importance sampling with K = C particles from q₀
    leapfrog_steps     L ≥ 1 leapfrog steps per transition: C·(T − 1)·L evaluations of the model
                       with their gradients
    schedule           the β_t, one of :data:`SCHEDULES` (formulas in :func:`beta_schedule`)
    init               q₀ among :data:`INITS`: the guide q(z | x) or the prior p(z), in
                       f_t(z) = q₀(z)^(1 − β_t) · p(x, z)^(β_t)
    step_size          ε₀ > 0, every point's leapfrog step before adaptation
    target_accept      a* ∈ (0, 1): after each transition, log ε ← log ε + 0.2 · (ā − a*)
                       (0.2 = :data:`ADAPT_RATE`), ā the pilot chains' mean acceptance probability
    adapt_chains       P ≥ 0 pilot chains, which set ε only: their weights are discarded, so
                       E[w] = p(x) stays exact (P = 0: ε = ε₀ throughout)
    max_plate_nesting  n ≥ 1 plate dims of the model; the chains' plate is dim −(n + 1)
    data_plate         the name of the plate over data points (None: the plate every observed
                       site shares, :func:`inference.traces.find_data_plate`)
    memory_budget_mb   M > 0 MiB: chains run in chunks of ⌊M · 2²⁰ / m⌋, m the measured bytes
                       per chain (:func:`inference.marginal.measure_bytes_per_particle`)
    progress           a tqdm bar counting annealing steps (chunks × T)
    =================  ==========================================================================
    """

    num_chains: int = 16
    num_steps: int = 1000
    leapfrog_steps: int = 10
    schedule: str = "sigmoid"
    init: str = "guide"
    step_size: float = 0.05
    target_accept: float = 0.65
    adapt_chains: int = 4
    max_plate_nesting: int = 1
    data_plate: str | None = None
    memory_budget_mb: float = 512.0
    progress: bool = False

    def __post_init__(self) -> None:
        for name, low in (
            ("num_chains", 1),
            ("num_steps", 1),
            ("leapfrog_steps", 1),
            ("adapt_chains", 0),
            ("max_plate_nesting", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, choices in (("schedule", SCHEDULES), ("init", INITS)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}"
                )
        for name in ("step_size", "memory_budget_mb"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if (
            not isinstance(self.target_accept, numbers.Real)
            or not 0 < float(self.target_accept) < 1
        ):
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")
        if self.data_plate is not None and not isinstance(self.data_plate, str):
            raise ValueError(f"data_plate must be a plate's name or None, got {self.data_plate!r}")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True or False, got {self.progress!r}")


@dataclass
class AISResult(MarginalResult):
    """Per data point AIS estimates, each (B,): the fields of :class:`MarginalResult` with the C
    chains as its particles (``num_samples`` = C; ``elbo`` = (1/C) Σ_c log w_c, the conservative
    bound), plus the estimating chains' mean HMC acceptance probability and the step size of
    the last transition (nan when T = 1: no transition runs)."""

    acceptance: Tensor
    step_size: Tensor
    num_steps: int

    @classmethod
    def cat(cls, results: list[AISResult]) -> AISResult:  # type: ignore[override]
        """Join the results of several batches of data points (same C and T) into one."""
        steps = {r.num_steps for r in results}
        if len(steps) != 1:
            raise ValueError(f"results must share num_steps, got {sorted(steps)}")
        base = MarginalResult.cat(results)
        return cls(
            **vars(base),
            acceptance=torch.cat([r.acceptance for r in results]),
            step_size=torch.cat([r.step_size for r in results]),
            num_steps=steps.pop(),
        )

    def summary(self) -> dict[str, float]:
        """:meth:`MarginalResult.summary` plus mean acceptance, median step size and T."""
        return {
            **super().summary(),
            "acceptance": self.acceptance.mean().item(),
            "step_size": self.step_size.median().item(),
            "num_steps": self.num_steps,
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"log p(x) = {s['log_px']:.2f} ± {s['log_px_sem']:.2f} (AIS, {s['num_samples']} "
            f"chains × {s['num_steps']} steps, {s['num_points']} points, ± is the s.e. over "
            f"points; mean Monte Carlo s.e. {s['stderr']:.3f}, acceptance "
            f"{s['acceptance']:.2f}, median step size {s['step_size']:.3g})"
        )


@dataclass
class BDMCResult:
    """A BDMC sandwich per simulated data point: ``lower.log_px`` ≤ log p(x) ≤ ``upper.log_px``
    (stochastic bounds). ``upper`` holds −log (1/C) Σ_c w_rev,c in ``log_px`` and −(1/C) Σ_c
    log w_rev,c in ``elbo``; its stderr and ESS are those of the reverse weights."""

    x: Tensor  # the simulated data, as passed to the model
    lower: AISResult  # forward AIS from q₀
    upper: AISResult  # reverse AIS from the exact posterior draw

    @property
    def gap(self) -> Tensor:
        """upper − lower per point, in nats: how far either bound can be from log p(x)."""
        return self.upper.log_px - self.lower.log_px

    def summary(self) -> dict[str, float]:
        n = self.gap.numel()
        return {
            "lower": self.lower.log_px.mean().item(),
            "upper": self.upper.log_px.mean().item(),
            "gap": self.gap.mean().item(),
            "gap_sem": self.gap.std().item() / math.sqrt(n) if n > 1 else math.nan,
            "num_chains": self.lower.num_samples,
            "num_steps": self.lower.num_steps,
            "num_points": n,
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"BDMC on {s['num_points']} simulated points ({s['num_chains']} chains × "
            f"{s['num_steps']} steps): {sandwich(s['lower'], s['upper'])}, "
            f"gap {s['gap']:.3f} ± {s['gap_sem']:.3f} nats"
        )


def sandwich(lower: float, upper: float, digits: int = 2) -> str:
    """``lower ≤ log p(x) ≤ upper nats``; where the means of the two stochastic bounds cross
    (E[lower] ≤ log p(x) ≤ E[upper] holds in expectation only), says so instead."""
    lo, up = f"{lower:.{digits}f}", f"{upper:.{digits}f}"
    if lower <= upper:
        return f"{lo} ≤ log p(x) ≤ {up} nats"
    return (
        f"lower {lo} > upper {up} nats: the bounds cross, as they may when Monte Carlo noise "
        f"exceeds the gap"
    )


def beta_schedule(name: str, num_steps: int) -> Tensor:
    """β_0 = 0 < β_1 < … < β_T = 1 (float64, T + 1 values, T = ``num_steps``):

    linear     β_t = t / T
    geometric  β_t = 10^(−4 (T − t)/(T − 1)),  t ≥ 1   (β_1 = 10⁻⁴)
    sigmoid    β_t = (σ(δ(2t/T − 1)) − σ(−δ)) / (σ(δ) − σ(−δ)),  δ = 4   (Grosse et al. 2015)
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    if num_steps == 1 or name == "linear":
        return t
    if name == "geometric":
        exponent = math.log10(GEOMETRIC_START) * (1 - t[1:]) * num_steps / (num_steps - 1)
        return torch.cat([t.new_zeros(1), 10**exponent])
    s = torch.sigmoid(SIGMOID_RADIUS * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


@torch.no_grad()
def ais_log_marginal_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    options: AISOptions = AISOptions(),
    **kwargs: Any,
) -> AISResult:
    """AIS estimate of log p(x) for each data point of the batch ``model(*args, **kwargs)`` sees.

    ``model`` and ``guide`` are any Pyro callables whose sample sites all sit in one data plate
    (as for :func:`inference.log_marginal_likelihood`); the guide must sample every latent site
    of the model but those marked ``infer={"enumerate": "parallel"}``, which are summed (its
    auxiliary sites, as an autoguide's, are moved in their place: module docstring). ``options`` (:class:`AISOptions`) sets the chains C, the steps T, the schedule,
    q₀, HMC and its step-size adaptation (see the module docstring for why the adaptation keeps
    the estimator unbiased), the memory budget and the progress bar; every other keyword
    argument goes to the model and guide. Each chain's densities are unscaled: neither the
    subsample scale N/B nor a KL weight β (``poutine.scale``) enter. Validation of distribution
    arguments is off inside the leapfrog steps, where a divergent trajectory may pass through
    non-finite values.
    """
    sampler = _Sampler(model, guide, args, kwargs, options)
    betas = beta_schedule(options.schedule, options.num_steps)
    run = _run(sampler, sampler.draw, betas, _StepSizes.start(options), options)
    return run.result(betas)


@torch.no_grad()
def bdmc(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    template: Any,
    *args: Any,
    options: AISOptions = AISOptions(),
    **kwargs: Any,
) -> BDMCResult:
    """Bidirectional Monte Carlo on data simulated from the model (module docstring).

    ``template`` is a batch of data as the model takes it as its first argument,
    ``model(template, *args, **kwargs)``, with one observed site: it sets the number and shape
    of the simulated points, its values are not used. (z*, x) is drawn by running the model
    under ``poutine.uncondition``; then forward AIS on ``model(x, *args, **kwargs)`` gives
    ``lower`` and reverse AIS from z*, with the forward run's step-size schedule reversed, gives
    ``upper``. ``options`` and the other arguments are those of
    :func:`ais_log_marginal_likelihood`.
    """
    with FixedPoints():  # the simulated points must be the points scored
        simulated = poutine.trace(poutine.uncondition(model)).get_trace(template, *args, **kwargs)
    observed = [s["name"] for s in sample_sites(simulated) if s["infer"].get("was_observed")]
    if len(observed) != 1:
        raise ValueError(f"bdmc needs a model with one observed site, found {observed}")
    x = simulated.nodes[observed[0]]["value"].detach()
    if x.shape != torch.as_tensor(template).shape:
        raise ValueError(
            f"the observed site '{observed[0]}' has shape {tuple(x.shape)}, not the "
            "template's: bdmc passes the simulated site as the model's first argument"
        )
    posterior = {
        s["name"]: (s["value"].detach(), s["fn"].event_dim)
        for s in sample_sites(simulated)
        if s["name"] != observed[0] and s["infer"].get("enumerate") != "parallel"
    }
    sampler = _Sampler(model, guide, (x, *args), kwargs, options)
    betas = beta_schedule(options.schedule, options.num_steps)
    forward = _run(sampler, sampler.draw, betas, _StepSizes.start(options), options)

    def from_posterior(k: int) -> dict[str, Tensor]:
        return {
            name: _with_chains(value, k, options.max_plate_nesting, event_dim)
            for name, (value, event_dim) in posterior.items()
        }

    # Replayed step sizes run no pilot chains (_run).
    reverse = _run(
        sampler, from_posterior, betas.flip(0), _StepSizes.replay(forward.schedule.flip(0)), options
    )
    return BDMCResult(x=x, lower=forward.result(betas), upper=reverse.result(betas, negate=True))


@torch.no_grad()
def estimated_seconds(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    options: AISOptions = AISOptions(),
    **kwargs: Any,
) -> float:
    """Wall time that :func:`ais_log_marginal_likelihood` with these ``options`` should take on
    its batch, t · (C + P) · (T − 1) · L / L': t the time per chain of one HMC transition of
    L' = min(L, :data:`PILOT_LEAPFROG`) leapfrog steps on the first chunk of chains (the faster
    of two: the first pays for allocations), C + P the estimating and pilot chains, T − 1 the
    transitions. Two short transitions run, so an absurd T or L costs nothing here; the RNG is
    left as it was."""
    sampler = _Sampler(model, guide, args, kwargs, options)
    pilot = options.adapt_chains if options.num_steps > 1 else 0
    leapfrog = min(options.leapfrog_steps, PILOT_LEAPFROG)
    devices = [a.device for a in args if isinstance(a, Tensor) and a.device.type == "cuda"]
    with torch.random.fork_rng(devices=devices[:1]):
        first = _chunk_counts(sampler, sampler.draw, options, pilot)[0] + pilot
        chains, times = sampler.start(sampler.draw(first), leapfrog), []
        eps = chains.state.a.new_full(
            chains.layout.shape[1:], options.step_size, dtype=torch.float64
        )
        for _ in range(2):
            start = time.perf_counter()
            float(chains.transition(0.5, eps).sum())  # a host read: the device has finished
            times.append(time.perf_counter() - start)
    moves = (options.num_chains + pilot) * (options.num_steps - 1) * options.leapfrog_steps
    return min(times) / first * moves / leapfrog


# --- the machinery -------------------------------------------------------------------------------


class _Sampler:
    """The model's densities at given latent values, per (chain, point): the guide (or, for
    ``init="prior"``, the model itself) run on the values of the sites it draws, the model
    replayed on that trace with its enumerated sites summed, and
    :func:`inference.traces.point_log_weights` of the two (unscaled).

    The chains' state is the sites q₀ draws, auxiliary ones included: an autoguide's
    u ~ q(u | x) with the model's z = T(u) a :func:`~inference.traces.deterministic` site of the
    guide. Model sites marked for enumeration are not part of it (they are summed); discrete
    sites that are part of it are held fixed along each chain."""

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        options: AISOptions,
    ) -> None:
        self.model, self.guide = model, guide if options.init == "guide" else None
        self.args, self.kwargs = args, kwargs
        self.max_plate_nesting, self.data_plate = options.max_plate_nesting, options.data_plate
        self.noticed: set[str] = set()  # discrete sites already named by a warning

    def _plate(self, k: int) -> pyro.plate:
        return pyro.plate(PARTICLE_PLATE, k, dim=-self.max_plate_nesting - 1)

    def draw(self, k: int) -> dict[str, Tensor]:
        """Values of k chains drawn from q₀, each (k, …): every site q₀ draws, but the model's
        sites marked for enumeration and an autoguide's deterministic z = T(u); a data plate
        drawing a random subsample of its own is refused here, once per chunk
        (:class:`FixedPoints`; the transitions replay the points drawn)."""
        proposal = self.model if self.guide is None else self.guide
        with FixedPoints():
            trace = poutine.trace(self._plate(k)(proposal)).get_trace(*self.args, **self.kwargs)
        drawn = _drawn(trace)
        if self.guide is None:  # the model's sites marked for enumeration are summed, not drawn
            drawn = [s for s in drawn if s["infer"].get("enumerate") != "parallel"]
        return {s["name"]: s["value"].detach() for s in drawn}

    def traces(self, values: dict[str, Tensor], k: int) -> tuple[Trace, Trace]:
        """(model trace, q₀'s trace) at ``values``, log densities computed."""
        # The enumeration handler sees each site first (it records the enumerated dims a site
        # depends on), then the values are set: a site given a value is not enumerated.
        given, plate = _Given(values), self._plate(k)
        model = enumerated(plate(self.model), self.max_plate_nesting)
        if self.guide is None:
            q_trace = model_trace = poutine.trace(given(model)).get_trace(*self.args, **self.kwargs)
        else:
            q_trace = poutine.trace(given(plate(self.guide))).get_trace(*self.args, **self.kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=q_trace)).get_trace(
                *self.args, **self.kwargs
            )
        model_trace.compute_log_prob()
        q_trace.compute_log_prob()
        return model_trace, q_trace

    def start(self, values: dict[str, Tensor], leapfrog_steps: int) -> _Chains:
        """The chains at ``values`` (constrained), after checking that q₀ samples every latent
        site of the model that is not enumerated (an autoguide's auxiliary sites aside), and
        that ``values`` hold every site q₀ draws."""
        k = next(iter(values.values())).shape[0]
        model_trace, q_trace = self.traces(values, k)
        latent = {
            s["name"]: s for s in sample_sites(model_trace) if not (s["is_observed"] or summed(s))
        }
        proposed = {
            s["name"]
            for s in sample_sites(q_trace)
            if not (s["is_observed"] or summed(s) or s["infer"].get("is_auxiliary"))
        }
        missing, extra = sorted(set(latent) - proposed), sorted(proposed - set(latent))
        if missing or extra:
            raise ValueError(
                f"AIS needs q₀ to sample exactly the model's latent sites (those not "
                f"enumerated): the guide misses {missing}, and the model lacks {extra}"
            )
        unset = sorted({s["name"] for s in _drawn(q_trace)} - set(values))
        if unset:
            raise ValueError(
                f"the chains start with no value for the sites {unset} that q₀ draws: reverse "
                "chains start at the model's simulated latents, which fix no auxiliary site of "
                "a guide (an autoguide's u); use init='prior' or a guide that samples the "
                "model's sites"
            )
        source = "the guide" if self.guide is not None else "the prior, q₀,"
        warn_unsummed_discrete(model_trace, q_trace, self.noticed, f"{source} held fixed")
        weights = point_log_weights(
            model_trace, q_trace, self.max_plate_nesting, unscaled=True, data_plate=self.data_plate
        )
        sites = {**{s["name"]: s for s in sample_sites(q_trace)}, **latent}
        supports = {name: _unmixed(sites[name]["fn"].support) for name in values}
        transforms = {n: biject_to(c) for n, c in supports.items() if not c.is_discrete}
        if not transforms:
            raise ValueError("AIS needs a continuous latent site for HMC to move")
        fixed = {n: v for n, v in values.items() if n not in transforms}
        layout = _Layout(weights.batch_dims, weights.data_dim, weights.log_p.shape)
        return _Chains(self, transforms, fixed, layout, leapfrog_steps, values)


def _unmixed(support: Constraint) -> Constraint:
    """A mixture's support as its components' (torch wraps a ``MixtureSameFamily``'s to check
    values, and ``biject_to`` knows no bijection for the wrapper), inside ``independent`` too."""
    if isinstance(support, constraints.MixtureSameFamilyConstraint):
        return _unmixed(support.base_constraint)
    if isinstance(support, constraints.independent):
        base = _unmixed(support.base_constraint)
        return constraints.independent(base, support.reinterpreted_batch_ndims)
    return support


class _Given(Messenger):
    """Sets each latent site named in ``values`` to its value, as ``poutine.replay`` does but
    keeping the site's own ``infer`` (a ``GuideMessenger`` guide keeps its record of the
    prior there); a site it sets is not enumerated."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: Message) -> None:
        if msg["name"] in self.values and not msg["is_observed"]:
            msg["value"], msg["done"] = self.values[msg["name"]], True


def _drawn(trace: Trace) -> list[Site]:
    """The sites of q₀'s trace that the chains hold: every latent site q₀ draws, but an
    autoguide's deterministic z = T(u) and the enumerated sites."""
    return [
        s for s in sample_sites(trace) if not (s["is_observed"] or deterministic(s) or summed(s))
    ]


@dataclass(frozen=True)
class _Layout:
    batch_dims: int  # max_plate_nesting + 1
    data_dim: int  # the data plate's dim, from the right of the batch dims
    shape: torch.Size  # (k, B)

    def points(self, t: Tensor) -> Tensor:
        """Sum a tensor of batch dims + trailing dims to (k, B)."""
        if t.dim() > self.batch_dims:
            t = t.flatten(self.batch_dims).sum(-1)
        return sum_to_points(t, self.batch_dims, self.data_dim, self.shape)

    def spread(self, t: Tensor, like: Tensor) -> Tensor:
        """A (k, B) or (B,) tensor reshaped to broadcast against ``like`` (batch + trailing)."""
        shape = [1] * like.dim()
        if t.dim() == 2:
            shape[0] = t.shape[0]
        shape[self.batch_dims + self.data_dim] = t.shape[-1]
        return t.reshape(shape)


@dataclass
class _State:
    """k chains at u: a = log q₀ + log|J|, b = log p(x, z) + log|J| (each (k, B)) and their
    gradients with respect to u."""

    u: dict[str, Tensor]
    a: Tensor
    b: Tensor
    grad_a: dict[str, Tensor]
    grad_b: dict[str, Tensor]

    @property
    def h(self) -> Tensor:
        """log p(x, z) − log q₀(z): the AIS weight increment per unit of β."""
        return self.b - self.a

    def potential(self, beta: float) -> Tensor:
        return -((1 - beta) * self.a + beta * self.b)

    def grad(self, beta: float) -> dict[str, Tensor]:
        return {n: -((1 - beta) * self.grad_a[n] + beta * self.grad_b[n]) for n in self.u}


class _Chains:
    """HMC on f_β(z) in the unconstrained space, for k chains over B points at once."""

    def __init__(
        self,
        sampler: _Sampler,
        transforms: dict[str, Transform],
        fixed: dict[str, Tensor],
        layout: _Layout,
        leapfrog_steps: int,
        values: dict[str, Tensor],
    ) -> None:
        self.sampler, self.transforms, self.layout = sampler, transforms, layout
        self.fixed = fixed  # the discrete sites of the state, held where they were drawn
        self.leapfrog_steps = leapfrog_steps
        self.state = self.evaluate({n: t.inv(values[n]) for n, t in transforms.items()})

    def evaluate(self, u: dict[str, Tensor]) -> _State:
        """a, b and their gradients at u: one model evaluation and two backward passes (the one
        of a through q₀ alone). With an autoguide u is its own draw, z = T(u) its deterministic
        site: a = log q(u), b = log p(x, T(u)) + log|det ∂T/∂u|, the Jacobian being the guide's
        (``log_q_delta`` of :class:`inference.traces.PointLogWeights` is its negative)."""
        k = self.layout.shape[0]
        with torch.enable_grad():
            u = {n: v.detach().requires_grad_() for n, v in u.items()}
            z = {n: self.transforms[n](v) for n, v in u.items()}
            model_trace, q_trace = self.sampler.traces({**z, **self.fixed}, k)
            w = point_log_weights(
                model_trace,
                q_trace,
                self.sampler.max_plate_nesting,
                unscaled=True,
                data_plate=self.sampler.data_plate,
            )
            jacobian = sum(
                self.layout.points(t.log_abs_det_jacobian(u[n], z[n]))
                for n, t in self.transforms.items()
            )
            # In the space of q₀'s own draws: an autoguide's log|det ∂T⁻¹/∂z| leaves both.
            a = w.log_q - w.log_q_delta + jacobian
            b = w.log_p - w.log_q_delta + jacobian
            leaves = list(u.values())
            grad_b = _grad(b, leaves, retain_graph=True)
            grad_a = _grad(a, leaves, retain_graph=False)
        names = list(u)
        return _State(
            {n: v.detach() for n, v in u.items()},
            a.detach(),
            b.detach(),
            dict(zip(names, grad_a)),
            dict(zip(names, grad_b)),
        )

    def kinetic(self, rho: dict[str, Tensor]) -> Tensor:
        return 0.5 * sum((self.layout.points(r.square()) for r in rho.values()), torch.zeros(()))

    def transition(self, beta: float, eps: Tensor) -> Tensor:
        """One HMC transition leaving f_β invariant, with step size ``eps`` (B,) per point;
        returns the acceptance probability of each chain and point, (k, B)."""
        old, spread = self.state, self.layout.spread
        rho = {n: torch.randn_like(u) for n, u in old.u.items()}
        h0 = old.potential(beta) + self.kinetic(rho)
        step = {n: spread(eps, u).to(u) for n, u in old.u.items()}
        grad, u, new = old.grad(beta), old.u, old
        with pyro.validation_enabled(False):
            for i in range(self.leapfrog_steps):
                rho = {n: rho[n] - (0.5 if i == 0 else 1.0) * step[n] * grad[n] for n in rho}
                u = {n: u[n] + step[n] * rho[n] for n in u}
                new = self.evaluate(u)
                grad = new.grad(beta)
        rho = {n: rho[n] - 0.5 * step[n] * grad[n] for n in rho}
        log_accept = (h0 - new.potential(beta) - self.kinetic(rho)).nan_to_num(nan=-math.inf)
        accept_prob = log_accept.clamp(max=0.0).exp()
        accept = torch.rand_like(accept_prob).log() < log_accept

        def pick(new_t: dict[str, Tensor], old_t: dict[str, Tensor]) -> dict[str, Tensor]:
            return {n: torch.where(spread(accept, v), v, old_t[n]) for n, v in new_t.items()}

        self.state = _State(
            pick(new.u, old.u),
            torch.where(accept, new.a, old.a),
            torch.where(accept, new.b, old.b),
            pick(new.grad_a, old.grad_a),
            pick(new.grad_b, old.grad_b),
        )
        return accept_prob


class _StepSizes:
    """ε per transition and point: adapted on pilot chains and recorded, or replayed."""

    def __init__(self, initial: float, target: float | None, table: Tensor | None) -> None:
        self.initial, self.target, self.table = initial, target, table
        self.log_eps: Tensor | None = None

    @classmethod
    def start(cls, options: AISOptions) -> _StepSizes:
        """Adapted toward ``target_accept`` when there are pilot chains, else fixed at
        ``step_size``."""
        target = options.target_accept if options.adapt_chains else None
        return cls(options.step_size, target, None)

    @classmethod
    def replay(cls, table: Tensor) -> _StepSizes:
        return cls(1.0, None, table)

    @property
    def frozen(self) -> bool:
        return self.table is not None and self.log_eps is None

    def begin(self, transitions: int, points: int, device: torch.device) -> None:
        """Start recording a schedule of ``transitions`` × ``points`` step sizes."""
        if self.table is None:
            self.table = torch.empty(transitions, points, dtype=torch.float64, device=device)
            self.log_eps = self.table.new_full((points,), math.log(self.initial))
        self.table = self.table.to(device)

    def at(self, t: int) -> Tensor:
        if self.table is None:
            raise RuntimeError("begin() records a schedule before at() reads it")
        if self.log_eps is not None:
            self.table[t] = self.log_eps.exp()
        return self.table[t]

    def update(self, pilot_accept: Tensor) -> None:
        """log ε += ADAPT_RATE · (ā − target), ā the pilot chains' mean acceptance (B,)."""
        if self.log_eps is not None and self.target is not None and len(pilot_accept):
            self.log_eps += ADAPT_RATE * (pilot_accept.double().mean(0) - self.target)

    def freeze(self) -> None:
        self.log_eps = None


@dataclass
class _Run:
    log_w: Tensor  # (C, B) float64
    acceptance: Tensor  # (B,) mean acceptance probability of the estimating chains
    schedule: Tensor  # (T − 1, B) the step sizes used

    def result(self, betas: Tensor, negate: bool = False) -> AISResult:
        """The per-point estimate of log p(x) from the weights (of 1/p(x) when ``negate``)."""
        num_chains = self.log_w.shape[0]
        r = estimate_from_log_weights(lambda k: self.log_w, num_chains, num_chains)
        sign = -1.0 if negate else 1.0
        last = self.schedule[-1] if len(self.schedule) else torch.full_like(r.log_px, math.nan)
        return AISResult(
            log_px=sign * r.log_px,
            stderr=r.stderr,
            ess=r.ess,
            elbo=sign * r.elbo,
            num_samples=num_chains,
            acceptance=self.acceptance,
            step_size=last,
            num_steps=len(betas) - 1,
        )


def _run(
    sampler: _Sampler,
    draw: Callable[[int], dict[str, Tensor]],
    betas: Tensor,
    sizes: _StepSizes,
    options: AISOptions,
) -> _Run:
    """Anneal ``options.num_chains`` chains drawn by ``draw`` along ``betas``, in chunks of
    chains that fit the memory budget; the first chunk carries the ``options.adapt_chains`` pilot
    chains while ``sizes`` records (none when it replays a schedule or has no target)."""
    num_chains, transitions = options.num_chains, len(betas) - 1 - 1
    adapting = transitions > 0 and not sizes.frozen and sizes.target is not None
    pilot = options.adapt_chains if adapting else 0
    counts = _chunk_counts(sampler, draw, options, pilot)
    chunks: list[Tensor] = []
    accepted: Tensor | float = 0.0
    with tqdm(
        total=len(counts) * (len(betas) - 1), desc="AIS", unit="step", disable=not options.progress
    ) as bar:
        for i, n in enumerate(counts):
            chains = sampler.start(draw(n + (pilot if i == 0 else 0)), options.leapfrog_steps)
            sizes.begin(transitions, chains.layout.shape[1], chains.state.a.device)
            lw, acc = _anneal(chains, betas, sizes, n, bar)
            chunks.append(lw)
            accepted = accepted + acc
            sizes.freeze()
    log_w = torch.cat(chunks)
    acceptance = (
        torch.as_tensor(accepted / (num_chains * transitions))
        if transitions
        else torch.full_like(log_w[0], math.nan)
    )
    assert sizes.table is not None  # begin() ran for the first chunk
    return _Run(log_w, acceptance, sizes.table)


def _chunk_counts(
    sampler: _Sampler, draw: Callable[[int], dict[str, Tensor]], options: AISOptions, pilot: int
) -> list[int]:
    """Estimating chains per chunk: each chunk holds as many chains as the measured memory per
    chain (one evaluation with its gradient) fits in ``options.memory_budget_mb``, the first
    ``pilot`` pilot chains beside its estimating ones."""
    num_chains, leapfrog_steps = options.num_chains, options.leapfrog_steps
    per_chain = measure_bytes_per_particle(lambda k: sampler.start(draw(k), leapfrog_steps).state.b)
    chunk = chunk_size_for_budget(per_chain, options.memory_budget_mb, num_chains + pilot)
    first = min(num_chains, max(chunk - pilot, 0))
    return [first] + [min(chunk, num_chains - done) for done in range(first, num_chains, chunk)]


def _anneal(
    chains: _Chains, betas: Tensor, sizes: _StepSizes, estimating: int, bar: tqdm
) -> tuple[Tensor, Tensor]:
    """log w of the first ``estimating`` chains (float64, (n, B)) and the sum of their acceptance
    probabilities per point; the chains after them are pilots."""
    log_w = chains.state.a.new_zeros(chains.layout.shape, dtype=torch.float64)
    accepted = log_w.new_zeros(chains.layout.shape[1])
    num_steps = len(betas) - 1
    for t in range(1, num_steps + 1):
        log_w += (betas[t] - betas[t - 1]) * chains.state.h.double()
        if t < num_steps:
            accept = chains.transition(float(betas[t]), sizes.at(t - 1))
            sizes.update(accept[estimating:])
            accepted += accept[:estimating].double().sum(0)
        bar.update()
    return log_w[:estimating], accepted


def _grad(output: Tensor, leaves: list[Tensor], retain_graph: bool) -> list[Tensor]:
    """d output.sum() / d leaf for each leaf; zeros where the output does not depend on it."""
    if not output.requires_grad:
        return [torch.zeros_like(leaf) for leaf in leaves]
    grads = torch.autograd.grad(output.sum(), leaves, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]


def _with_chains(value: Tensor, k: int, max_plate_nesting: int, event_dim: int) -> Tensor:
    """A value of batch + event shape expanded to k chains in the particle plate's dim."""
    batch = value.dim() - event_dim
    value = value.reshape((1,) * (max_plate_nesting + 1 - batch) + value.shape)
    return value.expand((k,) + value.shape[1:])
