"""Per-point log densities of k particles from Pyro traces: what the importance-weighted
estimators and the importance-sampled log p(x) share; and the bare model/guide traces with the
scaled site densities that the fast path of ``trace`` and ``mean_field`` sums.

k particles z_1..z_k ~ q(z | x) are drawn at once in one vectorized plate outside every model
plate, and the model is replayed on them. For the B points of the data plate, per particle j and
point b,

    log p[j, b] = Σ_{model sites s} c_s log p_s,    log q[j, b] = Σ_{guide latents s} c_s log q_s,

each site's log density summed over every plate but the particle and data plates, with the factor

    c_s = mask_s · scale_s / (N/B)   (default: β of ``poutine.scale`` kept, the subsample scale
                                      N/B of the data plate divided out)
    c_s = mask_s                     (``unscaled``: the densities themselves, for log p(x)).

A model latent the guide does not sample is drawn from its prior inside the model, where its
p/q = 1 cancels: it is left out of both sums.

Discrete sites summed by enumeration (the model under :func:`enumerated`: a model site marked
``infer={"enumerate": "parallel"}``, e.g. by ``config_enumerate``, that the guide does not
sample, takes all its values at once in a dim left of the particle plate). Then

    log p[j, b] = log Σ_y Π_{model sites s} p_s^{mask_s}     (y: every enumerated value)

is contracted by Pyro's own machinery (``pyro.ops.contract.contract_to_tensor`` in the log
semiring, as ``TraceEnum_ELBO`` does): each enumerated site is summed inside the plates it
sits in, every other plate product-reduced, down to the particle and data plates. A discrete
latent that is not summed (not marked, or sampled by the guide) is drawn: from the guide, or
from its prior where the guide lacks it; :func:`warn_unsummed_discrete` names it.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.distributions.util import detach, scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import pack, unpack
from pyro.ops.rings import LogRing
from pyro.poutine import Trace
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample
from torch import Tensor

PARTICLE_PLATE = "num_particles_vectorized"

# A trace node read, not written: Pyro types its ``fn`` as any callable, here a distribution.
Site = Mapping[str, Any]


def particle_traces(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    particles: int,
    max_plate_nesting: int,
    enumerate: bool = False,
) -> tuple[Trace, Trace]:
    """Model and guide traces of ``particles`` samples drawn in one plate at dim
    −(max_plate_nesting + 1), with log densities computed and shapes validated; with
    ``enumerate``, the model's sites marked for it are enumerated (:func:`enumerated`)."""
    plate = pyro.plate(PARTICLE_PLATE, particles, dim=-max_plate_nesting - 1)
    model = plate(model)
    if enumerate:
        model = enumerated(model, max_plate_nesting)
    return get_importance_trace("flat", max_plate_nesting + 1, model, plate(guide), args, kwargs)


def enumerated(model: Callable[..., Any], max_plate_nesting: int) -> Callable[..., Any]:
    """The model (already inside the particle plate) with its sites marked
    ``infer={"enumerate": "parallel"}`` enumerated in dims left of the particle plate (first
    available dim −(max_plate_nesting + 2)); a site that a replayed guide trace supplies is not
    enumerated. Nothing changes for a model without such sites."""
    return poutine.enum(model, first_available_dim=-max_plate_nesting - 2)


def replayed_traces(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> tuple[Trace, Trace]:
    """(model trace, guide trace): the guide run once and the model replayed on its draws, as in
    Pyro's ``get_importance_trace``, without its checks and with no log density computed yet."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def site_log_prob(site: Site) -> Tensor:
    """c_s log p_s(value) per batch element, c_s = scale_s · mask_s: Pyro's ``site["log_prob"]``."""
    log_prob = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_prob, site["scale"], site["mask"])


def find_data_plate(
    model_trace: Trace, guide_trace: Trace, name: str | None = None
) -> CondIndepStackFrame:
    """The data plate: the plate named ``name``, else the vectorized plate all observed model sites
    share (among several, the one holding every sample site). Every sample site must sit in it:
    per-point weights are undefined with global latents."""
    sites = sample_sites(model_trace) + sample_sites(guide_trace)
    observed = [_plates(site) for site in sample_sites(model_trace) if site["is_observed"]]
    if not observed:
        raise ValueError(
            "the model has no observed site: per-point log weights need "
            "observations in a data plate"
        )
    if name is None:
        shared = set.intersection(*(set(plates) for plates in observed))
        if not shared:
            raise ValueError(
                "the observed sites share no plate: per-point log weights need every "
                "sample site inside one vectorized data plate, e.g. "
                "pyro.plate('data', N)"
            )
        if (
            len(shared) > 1
        ):  # nested plates around the observations: the data plate holds every site
            shared = {n for n in shared if all(n in _plates(site) for site in sites)} or shared
        if len(shared) > 1:
            raise ValueError(
                f"cannot tell the data plate among {sorted(shared)}: pass data_plate=<name>"
            )
        (name,) = shared
    for site in sites:
        if name not in _plates(site):
            raise ValueError(
                f"site '{site['name']}' is outside the data plate '{name}': "
                "per-point log weights are undefined with global latents"
            )
    return _plates(sites[0])[name]


@dataclass(frozen=True)
class PointLogWeights:
    """Per-point log densities of k particles over a minibatch of B points, each (k, B):

        log_p[j, b] = log p(x_b, z_jb),   log_q[j, b] = log q(z_jb | x_b)

    summed over the sites and over every plate but the particle and data plates, with the factors
    c_s of the module docstring (enumerated model sites summed out, see there); ``scale`` is the
    data plate's subsample scale N/B. ``log_q_delta`` is the part of ``log_q`` from
    :func:`deterministic` guide sites: for an autoguide's z = T(u), log |det ∂T⁻¹/∂z|, so that
    ``log_q − log_q_delta`` is the density of the guide's own draws u.
    """

    log_p: Tensor
    log_q: Tensor
    log_q_delta: Tensor
    scale: float
    guide_trace: Trace
    data_dim: int  # the data plate's dim, counted from the right of a site's batch shape
    batch_dims: int  # max_plate_nesting + 1: the particle plate is the leftmost batch dim

    @property
    def log_w(self) -> Tensor:
        return self.log_p - self.log_q

    def broadcast_to(self, t: Tensor, site: Site) -> Tensor:
        """Reshape a (k, B) tensor to broadcast against ``site``'s value (batch + event dims)."""
        shape = [1] * self.batch_dims + [1] * len(site["fn"].event_shape)
        shape[0], shape[self.batch_dims + self.data_dim] = t.shape
        return t.reshape(shape)


def point_log_weights(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: int,
    stop_guide_params: bool = False,
    *,
    unscaled: bool = False,
    data_plate: str | None = None,
) -> PointLogWeights:
    """Per-point log p and log q of the particle traces (see :class:`PointLogWeights`).

    ``unscaled`` leaves out every scale (β and N/B): log p̂(x) is then the log-mean-exp of log_w.
    ``stop_guide_params`` evaluates log q_φ(z) with φ detached inside the density and the path
    z(φ) kept: the same value, only the path gradient. It needs a mean-field guide (sites that
    do not depend on one another's values, as the stopped density also cuts such dependences),
    with one exception, the layout of Pyro's autoguides (``AutoNormal``): an auxiliary draw
    u ~ q_φ(u) and a :func:`deterministic` site z = T(u) whose ``log_density`` is
    log |det ∂T⁻¹/∂z|, a function of u alone. Its density is kept whole, so that

        log q(z) = log q_{sg(φ)}(u) + log |det ∂T⁻¹/∂z|(u)

    keeps its path derivative through u. A factor in the guide (an observed guide site, as
    ``pyro.factor``) is part of log q, as in Pyro's ``Trace_ELBO`` and ``RenyiELBO``
    (``guide_trace.log_prob_sum()``), and is kept whole too: it is no density of a draw.
    ``data_plate`` names the data plate (see :func:`find_data_plate`).
    """
    data = find_data_plate(model_trace, guide_trace, data_plate)
    assert data.dim is not None  # a vectorized plate (_plates keeps only those) has its dim
    data_dim, scale = data.dim, (data.full_size or data.size) / data.size
    batch_dims = max_plate_nesting + 1
    # an observed guide site is a factor of q, unless the model observes it too: then the
    # "guide" is the model run as its own proposal (AIS's init="prior"), its data no part of q
    guide_sites = [
        s
        for s in sample_sites(guide_trace)
        if not (s["is_observed"] and s["name"] in model_trace.nodes)
    ]
    model_sites = [
        s
        for s in sample_sites(model_trace)
        if s["is_observed"] or s["name"] in guide_trace.nodes or summed(s)
    ]
    particles = next(f for f in model_sites[0]["cond_indep_stack"] if f.name == PARTICLE_PLATE)
    shape = torch.Size((particles.size, data.size))

    def factor(site: Site, stop_params: bool = False) -> Tensor:
        """c_s log p_s(value), every batch dim kept."""
        if stop_params and not (deterministic(site) or site["is_observed"]):
            log_prob = detach(site["fn"]).log_prob(site["value"])
        else:
            log_prob = site["unscaled_log_prob"]
        c = 1.0 if unscaled else site["scale"] / scale
        return torch.as_tensor(scale_and_mask(log_prob, c, site["mask"]))

    def per_point(trace: Trace, sites: list[Site], stop_params: bool = False) -> Tensor:
        """Σ_s c_s log p_s over the sites, reduced to (k, B): enumerated sites summed out."""
        terms = [(site, factor(site, stop_params)) for site in sites]
        if any(summed(site) for site in sites):
            if not unscaled:
                raise ValueError("sites summed by enumeration need unscaled densities")
            targets = (particles.name, data.name)
            return sum_to_points(_contract(trace, terms, targets), batch_dims, data_dim, shape)
        for site, lp in terms:
            if lp.dim() > batch_dims:
                raise ValueError(
                    f"site '{site['name']}' has more plate dims than max_plate_nesting allows"
                )
        points = (sum_to_points(lp, batch_dims, data_dim, shape) for _, lp in terms)
        return sum(points, torch.zeros(()))

    deltas = [s for s in guide_sites if not s["is_observed"] and deterministic(s)]
    return PointLogWeights(
        log_p=per_point(model_trace, model_sites),
        log_q=per_point(guide_trace, guide_sites, stop_guide_params),
        log_q_delta=per_point(guide_trace, deltas),
        scale=scale,
        guide_trace=guide_trace,
        data_dim=data_dim,
        batch_dims=batch_dims,
    )


def summed(site: Site) -> bool:
    """Whether the site takes all its values at once under :func:`enumerated`."""
    return site["infer"].get("_enumerate_dim") is not None


def _contract(trace: Trace, terms: list[tuple[Site, Tensor]], targets: tuple[str, ...]) -> Tensor:
    """log Σ_{enumerated values} exp(Σ_s t_s) over the (site, log factor t_s) ``terms`` of
    ``trace``, each enumerated dim summed inside the plates of its site and every plate but
    ``targets`` product-reduced: Pyro's tensor-tree contraction in the log semiring, the result
    unpacked to the trace's plate dims."""
    trace.symbolize_dims()
    plates = trace.plate_to_symbol
    tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
    sizes: dict[str, int] = {}
    for site, t in terms:
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        sizes.update((plates[f.name], f.size) for f in frames)
        ordinal = frozenset(plates[f.name] for f in frames)
        tree.setdefault(ordinal, []).append(pack(t, site["infer"]["_dim_to_symbol"]))
    sum_dims = set(trace.symbol_to_dim) - set(plates.values())
    target = frozenset(plates[name] for name in targets)
    term = contract_to_tensor(tree, sum_dims, target, ring=LogRing(dim_to_size=sizes))
    return unpack(term, trace.symbol_to_dim)


def warn_unsummed_discrete(
    model_trace: Trace, guide_trace: Trace, noticed: set[str], source: str = "the guide"
) -> None:
    """Warn once per site (``noticed`` keeps the names already named) about each discrete model
    latent that is drawn, not summed by enumeration: it comes from ``source`` where the guide
    samples it, else from its prior, and costs importance-sampling variance that a sum would
    not."""
    for site in sample_sites(model_trace):
        if site["is_observed"] or summed(site) or not site["fn"].support.is_discrete:
            continue
        if site["name"] in noticed:
            continue
        noticed.add(site["name"])
        origin = source if site["name"] in guide_trace.nodes else "its prior"
        warnings.warn(
            f"the discrete site '{site['name']}' is drawn from {origin}, not summed: mark it "
            "infer={'enumerate': 'parallel'} in the model (and leave it out of the guide) to "
            "sum it exactly",
            stacklevel=3,
        )


def sum_to_points(t: Tensor, batch_dims: int, data_dim: int, shape: torch.Size) -> Tensor:
    """Sum a tensor of (at most) ``batch_dims`` batch dims over every dim but the particle dim
    (leftmost) and the data plate's dim ``data_dim`` (counted from the right), expanded to the
    (k, B) ``shape``."""
    t = t.reshape((1,) * (batch_dims - t.dim()) + t.shape)
    others = [d for d in range(1, batch_dims) if d != batch_dims + data_dim]
    return (t.sum(others) if others else t).expand(shape)


def deterministic(site: Site) -> bool:
    """Whether the site is a ``Delta`` (under any masking, expanding or ``to_event`` wrappers):
    its value is a function of other sites, as an autoguide's z = T(u), not a draw of its own."""
    fn = site["fn"]
    while not isinstance(fn, Delta) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, Delta)


class FixedPoints(Messenger):
    """Refuses a plate that draws a random subsample of its own (``subsample_size`` without
    ``subsample=``): a score per data point needs the same points in every run of the model and
    guide, and the evaluators run them many times (chunks of particles, chains, steps). Inside
    this handler, a subsample that an inner handler supplies (``poutine.replay``) is fine."""

    def _pyro_sample(self, msg: Message) -> None:
        fn: Any = msg["fn"]  # a plate's subsample distribution, where site_is_subsample
        if (
            site_is_subsample(msg)
            and msg["value"] is None
            and fn.subsample_size is not None
            and fn.subsample_size < fn.size
        ):
            raise ValueError(
                f"the plate '{msg['name']}' draws a random subsample of {fn.subsample_size} of its "
                f"{fn.size} points at each run, so there are no fixed points to score: pass the "
                f"indices, pyro.plate('{msg['name']}', {fn.size}, subsample=idx), or no "
                "subsample_size"
            )


def sample_sites(trace: Trace) -> list[Site]:
    """The trace's sample sites, without the index draws of subsampling plates."""
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def _plates(site: Site) -> dict[str, CondIndepStackFrame]:
    return {
        f.name: f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE
    }
