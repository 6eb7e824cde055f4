"""ELBO estimators by name: one class per objective, each a :class:`pyro.infer.ELBO`.

With w = p(x, z) / q(z | x) and k particles z_1..z_k ~ q (vectorized in one plate outside the data
plate):

===========  =========================================  ===========================================
name         objective per data point                   gradient
===========  =========================================  ===========================================
trace        E_q[log w]                                  reparameterized / score function (Pyro)
mean_field   E_q[log p(x | z)] − KL(q(z | x) ‖ p(z))     analytic KL where registered (Pyro)
iwae         L_k = E[log (1/k) Σ_j w_j]                  reparameterized (Burda et al. 2015)
renyi        L_α = E[1/(1−α) log (1/k) Σ_j w_j^(1−α)]    reparameterized (Li & Turner 2016)
stl          E_q[log w]                                  path only (Roeder et al. 2017)
dreg         L_k                                         doubly reparameterized (Tucker et al. 2018)
===========  =========================================  ===========================================

Every loss is the negative objective summed over the minibatch and multiplied by the data plate's
scale N/B, as Pyro's losses are. ``est(model, guide)`` gives Pyro's ``ELBOModule``, whose forward is
``differentiable_loss``: its value is the loss, its gradient the estimator's.

``trace`` and ``mean_field`` are Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` with a fast
``differentiable_loss`` for the common case, a fully reparameterized guide with validation off
(:class:`_FastPathELBO`); their values and gradients are Pyro's on the same draws.

The importance-weighted family (iwae, renyi, stl, dreg) needs reparameterized guide sites, all
inside one data plate: the plate the observed sites share (:func:`inference.traces.find_data_plate`),
or the one named by ``data_plate=``, as in :func:`inference.log_marginal_likelihood`.
Its log weights are formed per data point: β factors
(``poutine.scale``) stay in, the subsample scale N/B is divided out before the log-sum-exp over
particles and multiplied back after it (Pyro's ``RenyiELBO`` keeps N/B inside the log-sum-exp, which
is a different, wrong bound under subsampling).
"""

from __future__ import annotations

import inspect
import math
import typing
from abc import abstractmethod
from typing import Any, Literal

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from pyro.infer.util import is_validation_enabled
from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import kl_divergence

# PointLogWeights and particle_traces are part of this module's API (re-exported from traces).
from inference.traces import (
    PointLogWeights,
    Site,
    deterministic,
    particle_traces,
    point_log_weights,
    replayed_traces,
    sample_sites,
    site_log_prob,
    sum_to_points,
)


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _pyro_kwargs(particles: int, max_plate_nesting: int) -> dict[str, Any]:
    _check_int("particles", particles, 1)
    _check_int("max_plate_nesting", max_plate_nesting, 1)
    return {"num_particles": particles, "max_plate_nesting": max_plate_nesting}


def _entropy_term(site: Site) -> tuple[Tensor, bool]:
    """(c_s · the entropy term of the site's score parts, whether its score-function term is 0).

    For a reparameterized density the entropy term is log q_s(z) and the score-function term 0
    (Pyro's ``score_parts``; partially reparameterized ones, e.g. rejection samplers, have both).
    """
    parts = site["fn"].score_parts(site["value"], *site["args"], **site["kwargs"])
    entropy = scale_and_mask(parts.entropy_term, site["scale"], site["mask"])
    return entropy, is_identically_zero(parts.score_function)


class _FastPathELBO(ELBO):
    """Pyro's ``differentiable_loss`` without its bookkeeping, for a guide whose every sample
    site is reparameterized (``has_rsample``, not enumerated) and with validation off:

        loss = −(1/k) Σ_{particles, sites} ELBO terms,

    the terms summed in one autograd graph, which is then its own surrogate. Pyro's path (via
    ``get_importance_trace``) also computes score parts for every site, reads each site's sum
    to the host and forms a surrogate; with no score-function term the value and gradient are
    the same, so here the guide is traced, the model replayed on its draws (the ``k`` particles
    vectorized in Pyro's own plate) and :meth:`_elbo` sums the scaled, masked densities. Nothing
    is read to the host, so Pyro's warnings on a NaN loss or loss gradient do not come (a
    training loop checks for those itself, e.g. with one ``isfinite`` per step).

    Otherwise Pyro's own ``differentiable_loss`` runs: with validation on (for its checks),
    for a ``GuideMessenger`` guide, and for a guide with a non-reparameterized or enumerated
    site, where it receives the guide replaying the draws already made (the guide's networks
    run a second time; its sites draw nothing new).
    """

    @abstractmethod
    def _elbo(self, model_trace: Trace, guide_trace: Trace) -> Tensor | None:
        """Σ over particles and sites of the ELBO's terms; None where Pyro's path is needed."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        if is_validation_enabled() or isinstance(poutine.unwrap(guide), Messenger):
            return super().differentiable_loss(model, guide, *args, **kwargs)
        model_trace, guide_trace = replayed_traces(
            self._vectorized_num_particles(model),
            self._vectorized_num_particles(guide),
            args,
            kwargs,
        )
        reparameterized = all(
            site["fn"].has_rsample and not site["infer"].get("enumerate")
            for site in sample_sites(guide_trace)
        )
        elbo = self._elbo(model_trace, guide_trace) if reparameterized else None
        if elbo is None:
            replayed = poutine.replay(guide, trace=guide_trace)
            return super().differentiable_loss(model, replayed, *args, **kwargs)
        return -elbo / self.num_particles


class TraceELBO(_FastPathELBO, Trace_ELBO):
    """ELBO = E_q[log p(x, z) − log q(z | x)], Pyro's ``Trace_ELBO`` (Wingate & Weber 2013;
    Kingma & Welling 2014; Ranganath et al. 2014), ``particles`` samples vectorized.

    Fast path: Σ_{model sites} c_s log p_s − Σ_{guide sites} c_s log q_s (c_s: scale · mask)."""

    def __init__(self, particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(**_pyro_kwargs(particles, max_plate_nesting), vectorize_particles=True)

    def _elbo(self, model_trace: Trace, guide_trace: Trace) -> Tensor | None:
        elbo = sum(
            (site_log_prob(site).sum() for site in sample_sites(model_trace)), torch.zeros(())
        )
        for site in sample_sites(guide_trace):
            entropy, reparameterized = _entropy_term(site)
            if not reparameterized:
                return None
            elbo = elbo - entropy.sum()
        return elbo


class MeanFieldELBO(_FastPathELBO, TraceMeanField_ELBO):
    """ELBO = E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)), Pyro's ``TraceMeanField_ELBO``: the KL in
    closed form where torch registers it, Monte Carlo E_q[log q − log p] otherwise. Needs a
    mean-field, reparameterized guide (Kingma & Welling 2014, eq. 10).

    Fast path, as Pyro sums it: Σ_{observed} c_s log p_s − Σ_{latent} c_s KL_s (or c_s (log q_s −
    log p_s)) − Σ_{guide-only auxiliary sites} c_s log q_s, with the guide site's c_s on KL_s."""

    def __init__(self, particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(**_pyro_kwargs(particles, max_plate_nesting), vectorize_particles=True)

    def _elbo(self, model_trace: Trace, guide_trace: Trace) -> Tensor | None:
        elbo: Tensor | float = 0.0
        q: Site
        for site in sample_sites(model_trace):
            if site["is_observed"]:
                elbo = elbo + site_log_prob(site).sum()
                continue
            q = guide_trace.nodes[site["name"]]  # a KeyError for a model-only latent, as in Pyro
            try:
                kl = kl_divergence(q["fn"], site["fn"])
            except NotImplementedError:
                elbo = elbo + site_log_prob(site).sum() - _entropy_term(q)[0].sum()
                continue
            kl = scale_and_mask(kl, q["scale"], q["mask"])
            elbo = elbo - (kl.sum() if torch.is_tensor(kl) else kl * q["fn"].batch_shape.numel())
        for q in sample_sites(guide_trace):
            if q["name"] not in model_trace.nodes:
                if not q["infer"].get("is_auxiliary"):
                    return None  # Pyro's path says what is wrong
                elbo = elbo - _entropy_term(q)[0].sum()
        return torch.as_tensor(elbo)


def log_mean_exp(t: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


class PointwiseELBO(ELBO):
    """The base of every per-point estimator (iwae, renyi, stl, dreg, reinforce), public for
    estimators of one's own. The contract: a subclass implements :meth:`objective`, which gets
    the log weights of the k particles of each of the B points of the minibatch,
    ``weights.log_w[j, b] = log p(x_b, z_jb) − log q(z_jb | x_b)`` (a (k, B) tensor of
    :class:`~inference.traces.PointLogWeights`, β kept in, N/B divided out), and returns
    (bound_b, surrogate_b), each of shape (B,). The loss is then

        loss = −(N/B) Σ_b bound_b   in value,   −(N/B) Σ_b ∇ surrogate_b   in gradient,

    so the surrogate's gradient is the estimator's (its value is discarded). Class attributes:
    ``stop_guide_params`` (log q evaluated with the guide's parameters detached: path-only
    gradients, as STL and DReG) and ``reparameterized_only`` (every guide site must have
    ``rsample``; a score-function estimator sets it to False). Every sample site must sit in
    one data plate (:func:`inference.traces.find_data_plate`, or ``data_plate=``)."""

    stop_guide_params = False
    reparameterized_only = True

    def __init__(self, particles: int, max_plate_nesting: int, data_plate: str | None) -> None:
        super().__init__(**_pyro_kwargs(particles, max_plate_nesting))
        if data_plate is not None and not isinstance(data_plate, str):
            raise ValueError(f"data_plate must be a plate's name, got {data_plate!r}")
        self.data_plate = data_plate

    def _get_trace(self, model, guide, args, kwargs) -> tuple[Trace, Trace]:
        return particle_traces(
            model, guide, args, kwargs, self.num_particles, self.max_plate_nesting
        )

    @abstractmethod
    def objective(self, weights: PointLogWeights) -> tuple[Tensor, Tensor]:
        """(bound, surrogate), each of shape (B,)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        """−(N/B) Σ_b bound_b in value; −(N/B) Σ_b ∇ surrogate_b in gradient."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        weights = point_log_weights(
            model_trace,
            guide_trace,
            self.max_plate_nesting,
            self.stop_guide_params,
            data_plate=self.data_plate,
        )
        site: Site
        for site in guide_trace.nodes.values():
            if (
                self.reparameterized_only
                and site["type"] == "sample"
                and not site["is_observed"]
                and not site["fn"].has_rsample
            ):
                raise ValueError(
                    f"guide site {site['name']!r} ({type(site['fn']).__name__}) is not "
                    "reparameterized; importance-weighted estimators need rsample"
                )
        bound, surrogate = self.objective(weights)
        return -weights.scale * (bound.detach() + (surrogate - surrogate.detach())).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()


class IWAE(PointwiseELBO):
    """Importance-weighted bound (Burda et al. 2015, eq. 8), per data point:

        L_k = E_{z_1..k ~ q}[log (1/k) Σ_j w_j],   w_j = p(x, z_j) / q(z_j | x),

    ELBO = L_1 ≤ L_k ≤ L_2k ≤ log p(x). Gradient: reparameterized, Σ_j w̃_j ∇ log w_j with
    normalized weights w̃_j = w_j / Σ_i w_i.
    """

    def __init__(
        self, particles: int = 5, max_plate_nesting: int = 1, data_plate: str | None = None
    ) -> None:
        super().__init__(particles, max_plate_nesting, data_plate)

    def objective(self, weights: PointLogWeights) -> tuple[Tensor, Tensor]:
        bound = log_mean_exp(weights.log_w)
        return bound, bound


class Renyi(PointwiseELBO):
    """Variational Rényi bound (Li & Turner 2016, eq. 13), per data point, α ≠ 1:

        L_α = E_{z_1..k ~ q}[1/(1−α) log (1/k) Σ_j w_j^(1−α)],

    the IWAE bound at α = 0 and the ELBO as α → 1; a lower bound on log p(x) for α ≥ 0.
    Gradient: reparameterized, Σ_j w̃_j^(α) ∇ log w_j with w̃_j^(α) ∝ w_j^(1−α).
    """

    def __init__(
        self,
        alpha: float = 0.5,
        particles: int = 5,
        max_plate_nesting: int = 1,
        data_plate: str | None = None,
    ) -> None:
        if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha == 1:
            raise ValueError(
                f"alpha must be a finite number other than 1 (alpha = 1 is the ELBO: "
                f"use 'trace'), got {alpha!r}"
            )
        self.alpha = float(alpha)
        super().__init__(particles, max_plate_nesting, data_plate)

    def objective(self, weights: PointLogWeights) -> tuple[Tensor, Tensor]:
        bound = log_mean_exp((1 - self.alpha) * weights.log_w) / (1 - self.alpha)
        return bound, bound


class STL(PointwiseELBO):
    """Sticking the landing (Roeder et al. 2017): the ELBO E_q[log p(x, z) − log q_φ(z | x)] with
    the score term E_q[∇_φ log q_φ(z)] (zero in expectation) dropped from the gradient:

        ∇_φ ≈ (1/k) Σ_j ∂/∂z [log p(x, z) − log q_{sg(φ)}(z | x)]|_{z=z_j} · ∂z_j/∂φ,
        z_j = z(ε_j, φ),

    exactly zero for every sample once q equals the posterior (log p(x, z) − log q(z | x) is then
    log p(x) for all z). Model parameters get the plain ELBO gradient. Mean-field guides only,
    autoguides' z = T(u) included (:func:`inference.traces.point_log_weights`).
    """

    stop_guide_params = True

    def __init__(
        self, particles: int = 1, max_plate_nesting: int = 1, data_plate: str | None = None
    ) -> None:
        super().__init__(particles, max_plate_nesting, data_plate)

    def objective(self, weights: PointLogWeights) -> tuple[Tensor, Tensor]:
        bound = weights.log_w.mean(0)
        return bound, bound


class DReG(PointwiseELBO):
    """Doubly reparameterized gradient of the IWAE bound L_k (Tucker et al. 2018, eq. 5):

        ∇_φ L_k ≈ Σ_j w̃_j² ∂log w_j/∂z_j · ∂z_j/∂φ   (log q's parameters stopped inside log w_j)
        ∇_θ L_k ≈ Σ_j w̃_j ∇_θ log p_θ(x, z_j)         (the usual IWAE model gradient)

    with w̃_j = w_j / Σ_i w_i. Unbiased for ∇ L_k, and its guide SNR does not decay with k as
    IWAE's does (Rainforth et al. 2018). With a KL weight β on a site s (``poutine.scale``: a
    β-VAE, KL warm-up), log w_j = log p(x | z_j) + Σ_s β_s [log p(z_sj) − log q(z_sj | x)], and
    the same identity, E_q[f ∇_φ log q] = E_ε[∂f/∂z · ∂z/∂φ] with f = w̃_j, turns the score term
    −β_s Σ_j w̃_j ∇_φ log q(z_sj) into −β_s Σ_j w̃_j (1 − w̃_j) ∂log w_j/∂z_sj · ∂z_sj/∂φ:

        ∇_φ L_k ≈ Σ_j Σ_s w̃_j (1 − β_s + β_s w̃_j) ∂log w_j/∂z_sj · ∂z_sj/∂φ,

    w̃_j² at β = 1. Implemented with the surrogate Σ_j sg(w̃_j) log w_j and a gradient hook that
    multiplies the gradient reaching each guide draw z_sj by 1 − β_s + β_s w̃_j; a hook at each
    draw is right for mean-field guides (draws not computed from one another), which is what this
    estimator supports. An autoguide's z = T(u) (a ``Delta`` site) gets no hook of its own: its
    gradient flows into the draw u, whose hook applies the factor once.
    """

    stop_guide_params = True
    traceable = False  # the hook is Python: a torch.jit trace (inference.compiled) drops it

    def __init__(
        self, particles: int = 5, max_plate_nesting: int = 1, data_plate: str | None = None
    ) -> None:
        super().__init__(particles, max_plate_nesting, data_plate)

    def objective(self, weights: PointLogWeights) -> tuple[Tensor, Tensor]:
        log_w = weights.log_w
        # exp(log w − logsumexp log w), not torch.softmax, which over a leading dim of size 1
        # (one particle) is far slower on CPU than this expression.
        normalized = (log_w.detach() - log_w.detach().logsumexp(0)).exp()
        site: Site
        for site in weights.guide_trace.nodes.values():
            if site["type"] == "sample" and site["value"].requires_grad and not deterministic(site):
                factor = weights.broadcast_to(normalized, site)
                beta = site["scale"] / weights.scale  # β_s: the site's scale over N/B
                if site["mask"] is not None or not (isinstance(beta, float) and beta == 1.0):
                    c = torch.as_tensor(scale_and_mask(torch.ones(()), beta, site["mask"]))
                    c = c.reshape(c.shape + (1,) * len(site["fn"].event_shape))
                    factor = 1 - c + c * factor  # per batch element: β_s and the mask
                site["value"].register_hook(lambda grad, factor=factor: grad * factor)
        return log_mean_exp(log_w), (normalized * log_w).sum(0)


class EnumELBO(TraceEnum_ELBO):
    """ELBO with every discrete latent summed exactly, Pyro's ``TraceEnum_ELBO`` with parallel
    enumeration (Obermeyer et al. 2019), ``particles`` samples of the other latents vectorized.
    For a discrete latent y and the others z,

        ELBO = E_{q(z | x)}[Σ_y q(y | x, z) (log p(x, y, z) − log q(y, z | x))]

    (a discrete latent only the model has is summed inside p: log Σ_y p(x, y, z)). Gradient:
    exact in the enumerated sites (the sum is differentiated), reparameterized or score function
    for the others. Every discrete site without an ``infer["enumerate"]`` of its own, in the
    guide and in the model, is marked ``"parallel"`` (:func:`pyro.infer.config_enumerate`; a site
    marked ``infer={"enumerate": None}`` is left sampled). Enumeration takes batch dims left of
    the ``max_plate_nesting`` plates and the particle plate, which must therefore be exact: the
    number of plates nested around any site.
    """

    traceable = False  # enumeration allocates dims at run time: a torch.jit trace fixes them

    def __init__(self, particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(**_pyro_kwargs(particles, max_plate_nesting), vectorize_particles=True)

    def _get_traces(self, model, guide, args, kwargs):
        return super()._get_traces(
            config_enumerate(model, "parallel"), config_enumerate(guide, "parallel"), args, kwargs
        )


BaselineName = Literal["average", "leave_one_out", "none"]


class Reinforce(PointwiseELBO):
    """The ELBO E_q[log w] with the score-function (REINFORCE) gradient for the guide's
    non-reparameterized sites (a discrete y), with a baseline b (Williams 1992; Mnih & Gregor
    2014), per data point and particle j:

        ∇ ELBO ≈ (1/k) Σ_j [∇ log w_j + (sg(log w_j) − b_j) ∇ log q(y_j | x)],

    where ∇ log w_j takes the reparameterized sites' path and log q(y_j | x) sums the
    non-reparameterized guide sites' densities (masked; a site's β scale weighs the objective,
    not the sampling, so it is not applied to the score). Unbiased for any b_j that does not
    depend on y_j:

    * ``none``: b = 0;
    * ``average``: a decaying average of the learning signal over earlier calls,
      a_t = ``decay`` · a_{t−1} + (1 − ``decay``) · mean_{j,b} sg(log w), used debiased,
      b = a_{t−1} / (1 − decay^{t−1}) (0 at the first call); one number for every point, so it
      removes the signal's mean, not its spread over points. It lives in the estimator, not in a
      checkpoint: a resumed run starts it again;
    * ``leave_one_out``: b_j = (1/(k−1)) Σ_{i≠j} sg(log w_i), the other particles' mean for the
      same point (needs ``particles`` ≥ 2; Kool et al. 2019).

    The value is the ELBO, (1/k) Σ_j log w_j per point. Every sample site must sit in the data
    plate (:class:`PointwiseELBO`).
    """

    reparameterized_only = False
    traceable = False  # the average baseline is Python state: a torch.jit trace would freeze it

    def __init__(
        self,
        baseline: BaselineName = "average",
        decay: float = 0.9,
        particles: int = 1,
        max_plate_nesting: int = 1,
        data_plate: str | None = None,
    ) -> None:
        if baseline not in typing.get_args(BaselineName):
            raise ValueError(
                f"baseline must be one of {', '.join(typing.get_args(BaselineName))}, "
                f"got {baseline!r}"
            )
        if not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if baseline == "leave_one_out" and particles < 2:
            raise ValueError(f"baseline leave_one_out needs particles >= 2, got {particles}")
        self.baseline = baseline
        self.decay = float(decay)
        self.average = torch.zeros(())  # a_t of the average baseline, and t
        self.calls = 0
        super().__init__(particles, max_plate_nesting, data_plate)

    def objective(self, weights: PointLogWeights) -> tuple[Tensor, Tensor]:
        log_w = weights.log_w
        score = sum(
            (
                sum_to_points(
                    torch.as_tensor(scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])),
                    weights.batch_dims,
                    weights.data_dim,
                    log_w.shape,
                )
                for site in sample_sites(weights.guide_trace)
                if not site["is_observed"] and not site["fn"].has_rsample
            ),
            torch.zeros(()),
        )
        signal = log_w.detach()
        bound = log_w.mean(0)
        return bound, bound + ((signal - self._baseline(signal)) * score).mean(0)

    def _baseline(self, signal: Tensor) -> Tensor:
        """b for the (k, B) learning signal (class docstring); updates the average."""
        if self.baseline == "none":
            return torch.zeros(())
        if self.baseline == "leave_one_out":
            return (signal.sum(0) - signal) / (signal.shape[0] - 1)
        b = self.average / (1 - self.decay**self.calls) if self.calls else torch.zeros(())
        self.average = self.decay * self.average.to(signal) + (1 - self.decay) * signal.mean()
        self.calls += 1
        return b


class _LinearLogProb:
    """log Cat(y; p) = Σ_i y_i log p_i for y on the simplex: the categorical log probability of
    a one-hot y, extended linearly to relaxed values."""

    logits: Tensor

    def log_prob(self, value: Tensor) -> Tensor:
        return (value * self.logits).sum(-1)


class _Relaxed(_LinearLogProb, dist.RelaxedOneHotCategorical):
    """A Concrete draw whose log_prob is :class:`_LinearLogProb`'s."""


class _StraightThrough(_LinearLogProb, dist.RelaxedOneHotCategoricalStraightThrough):
    """The straight-through draw (one-hot in value, the relaxed gradient) with the same log_prob."""


class Relax(Messenger):
    """Replaces each latent ``OneHotCategorical(p)`` site, in the guide and in the model alike,
    by a relaxed one: values drawn from the Concrete distribution at ``temperature``
    (``RelaxedOneHotCategorical``, or its straight-through variant), scored by the categorical
    log probability extended linearly, Σ_i y_i log p_i. A latent ``Categorical`` site, whose
    integer value cannot be relaxed, is refused: write the site as a ``OneHotCategorical`` whose
    one-hot value the model reads."""

    def __init__(self, temperature: float, straight_through: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.straight_through = straight_through

    def _pyro_sample(self, msg: Message) -> None:
        fn: Any = msg["fn"]
        if msg["is_observed"] or site_is_subsample(msg):
            return
        if isinstance(fn, torch.distributions.OneHotCategorical):
            relaxed = _StraightThrough if self.straight_through else _Relaxed
            temperature = torch.tensor(self.temperature, dtype=fn.logits.dtype)
            msg["fn"] = relaxed(temperature.to(fn.logits.device), logits=fn.logits)
        elif isinstance(fn, torch.distributions.Categorical):
            raise ValueError(
                f"site {msg['name']!r} is a Categorical, whose integer value cannot be relaxed: "
                "write it as a OneHotCategorical whose one-hot value the model reads"
            )


class Gumbel(TraceELBO):
    """The ELBO of the model and guide with every discrete latent relaxed (the Gumbel-softmax
    or Concrete estimator of Jang et al. 2017 and Maddison et al. 2017), reparameterized. Each
    latent ``OneHotCategorical`` site, in guide and model, is replaced (:class:`Relax`) by the
    Concrete distribution at temperature τ,

        y = softmax((log q + g) / τ),   g_i ~ Gumbel(0, 1) i.i.d.,

    and scored, in q and in p alike, by the categorical log probability extended linearly to the
    simplex, log Cat(y; p) = Σ_i y_i log p_i (not Maddison et al.'s Concrete density); the model
    reads the relaxed y. So the objective is

        L_τ = E_g[log p(x, y_τ(g), z) − log q(y_τ(g), z | x)]   (linear log Cat in both),

    the ELBO itself as τ → 0 (y_τ → a one-hot draw of q), with the gradient ∇ L_τ by the path
    through y_τ: biased for the ELBO's gradient at τ > 0, with a bias that shrinks as τ does and
    a variance that grows. ``straight_through``: y is the one-hot arg max in value and y_τ in
    gradient (Bengio et al. 2013), so the value is the ELBO's on a discrete draw.

    Temperature schedule (Jang et al. 2017, §4): at training step t,
    τ_t = max(``final_temperature``, ``temperature`` · exp(−``rate`` · t)), where t counts the
    calls of :meth:`differentiable_loss` with gradients enabled (one per training step), unless a
    training loop sets it with :meth:`anneal` (a resumed run then continues the schedule).
    """

    traceable = False  # τ is a Python number that changes with the step

    def __init__(
        self,
        temperature: float = 1.0,
        final_temperature: float = 0.5,
        rate: float = 1.0e-4,
        straight_through: bool = False,
        particles: int = 1,
        max_plate_nesting: int = 1,
    ) -> None:
        for name, value in (("temperature", temperature), ("final_temperature", final_temperature)):
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if final_temperature > temperature:
            raise ValueError(
                f"final_temperature ({final_temperature}) must not exceed temperature "
                f"({temperature})"
            )
        if not isinstance(rate, (int, float)) or not 0 <= rate < math.inf:
            raise ValueError(f"rate must be a number >= 0, got {rate!r}")
        self.initial_temperature = float(temperature)
        self.final_temperature = float(final_temperature)
        self.rate = float(rate)
        self.straight_through = bool(straight_through)
        self.step = 0
        super().__init__(particles, max_plate_nesting)

    @property
    def temperature(self) -> float:
        """τ at the current step (class docstring)."""
        decayed = self.initial_temperature * math.exp(-self.rate * self.step)
        return max(self.final_temperature, decayed)

    def anneal(self, step: int) -> None:
        """Set the training step t that the temperature follows."""
        self.step = step

    def _relax(self) -> Relax:
        return Relax(self.temperature, self.straight_through)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        with self._relax():
            loss = super().differentiable_loss(model, guide, *args, **kwargs)
        if torch.is_grad_enabled():
            self.step += 1
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        with self._relax():
            return super().loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        with self._relax():
            return super().loss_and_grads(model, guide, *args, **kwargs)


ESTIMATORS: dict[str, type[ELBO]] = {
    "trace": TraceELBO,
    "mean_field": MeanFieldELBO,
    "iwae": IWAE,
    "renyi": Renyi,
    "stl": STL,
    "dreg": DReG,
    "enum": EnumELBO,
    "reinforce": Reinforce,
    "gumbel": Gumbel,
}


def make_estimator(name: str, **params: Any) -> ELBO:
    """Build the estimator ``name`` (a key of :data:`ESTIMATORS`) from its keyword parameters."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choices: {', '.join(sorted(ESTIMATORS))}")
    cls = ESTIMATORS[name]
    accepted = inspect.signature(cls).parameters
    for key in params:
        if key not in accepted:
            raise ValueError(
                f"estimator {name!r} has no parameter {key!r}; parameters: {', '.join(accepted)}"
            )
    return cls(**params)
