"""The VAE: one PyroModule holding the generative model and the amortized guide, over a stack of
L ≥ 1 stochastic layers z_1 … z_L (``latent_dim: 50`` is one layer, ``[100, 50]`` two):

    model:  z_L ~ p(z_L),  z_l | z_{l+1} ~ N(μ_θ(z_{l+1}), diag σ_θ(z_{l+1})²),
            x | z_1 ~ p(x | f_θ(z_1))
    guide:  q_φ(z_1 | x) q_φ(z_2 | z_1) … q_φ(z_L | z_{L−1}), each a family of
            :mod:`pyro_vae.guides` (default N(μ_φ(·), diag σ_φ(·)²)) with its own networks

for each n in a minibatch of a data set of size N (the IWAE paper's hierarchy, Burda et al. 2015,
§5). p(z_L) is the prior registry's. The one ``model``/``guide`` pair walks the layers top-down and
bottom-up, so every depth shares every line. Sites are ``z`` for one layer, ``z1`` … ``zL`` else.

``model(x=None, idx=None, y=None, num=None)`` and ``guide(x=None, idx=None, y=None, num=None)``:
``x`` is a (B, P) minibatch, ``idx`` the LongTensor of its B rows in the full data set, ``y`` their
labels (B,), which the model kind (``model: {name: ...}``, :mod:`pyro_vae.models`) reads inside
the data plate: the plain VAE ignores them, ``cvae`` conditions encoder, decoder (and a learned
prior) on them. The data plate is

    pyro.plate("data", N, subsample=idx)            idx given (needs ``num_data`` = N)
    pyro.plate("data", N, subsample=arange(B))      no idx: x is rows 0..B−1, N = num_data or B
    pyro.plate("data", num)                         x and idx None: ``model`` generates num points

so every site's log density carries the subsample scale N/B (1 when N = B), and autoguides or
anything else that reads the plate's indices see the real rows. The latent sites are scaled by
``kl_scale`` (β times the warm-up factor) with ``poutine.scale`` in both model and guide, so any
ELBO estimator optimises E_q[log p(x|z_1)] − β KL(q(z_1..L|x) ‖ p(z_1..L)).

Parameters, the Pyro way in both of Pyro's modes. With ``pyro.settings`` ``module_local_params``
off (Pyro's default: ``SVI`` with a ``pyro.optim`` optimizer) model and guide between them register
the whole module, as ``pyro.module("vae", vae, update_module_params=True)`` would: the param store holds every
parameter as ``vae$$$<name in vae.named_parameters()>`` and is their source of truth (clear it
between two models, as in Pyro's tutorials). With it on (an ELBO module stepped by a torch
optimizer, as the training loop does inside ``pyro.settings.context(module_local_params=True)``)
they stay in the modules and nothing is registered. The model registers only the parameters it
reads (:meth:`VAE.model_modules`), the guide only its own (:meth:`VAE.guide_modules`), so a trace of
the model holds no encoder weights. Importing this module changes no setting.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.nn import PyroModule
from torch import nn

from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.models import MODELS
from pyro_vae.components.networks import NETWORKS
from pyro_vae.components.priors import PRIORS
from pyro_vae.distributions import DiagonalNormal
from pyro_vae.guides import Posterior
from pyro_vae.likelihoods import Likelihood
from pyro_vae.models import Kind, LatentClass, given, with_one_hot
from pyro_vae.networks import check_fits
from pyro_vae.priors import Prior
from pyro_vae.registry import INT_LIMIT, SpecError, built, shown
from pyro_vae.spec import Spec, load_spec


@dataclass
class ElboTerms:
    """Per-point single-sample terms: elbo = recon − kl (β = 1)."""

    recon: torch.Tensor  # log p(x | z),                 z ~ q(z | x)
    kl: torch.Tensor  # KL(q‖p): analytic where it exists, else log q(z|x) − log p(z)
    analytic_kl: bool = True  # False: kl is the one-sample Monte Carlo term

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl


class VAE(PyroModule):
    """``model(x, idx)`` is p(z) p(x|z); ``guide(x, idx)`` is q(z|x) (see the module docstring).

    ``posteriors[l]`` is q(z_{l+1} | z_l) (z_0 = x), ``conditionals[l]`` the network of
    p(z_{l+1} | z_{l+2}) (L − 1 of them), ``decoder`` that of p(x | z_1), ``prior`` p(z_L).

    The prior and likelihood modules are run through ``forward``, not ``__call__``: a
    PyroModule's call enters its parameter context, which in Pyro's default mode would register
    their parameters a second time under other names (``pyro.module`` has them all) and costs
    Python on every step.
    """

    def __init__(
        self,
        posteriors: Sequence[Posterior],
        decoder: nn.Module,
        prior: Prior,
        likelihood: Likelihood,
        latent_dims: Sequence[int],
        shape: tuple[int, ...],
        conditionals: Sequence[nn.Module] = (),
        num_data: int | None = None,
        kind: Kind | None = None,
    ) -> None:
        super().__init__()
        if not len(posteriors) == len(latent_dims) == len(conditionals) + 1:
            raise ValueError("one posterior per layer and one conditional between layers")
        self.posteriors, self.decoder = nn.ModuleList(posteriors), decoder
        self.conditionals = nn.ModuleList(conditionals)
        self._register_load_state_dict_pre_hook(_legacy_keys)
        self.prior, self.likelihood = prior, likelihood
        self.kind = kind if kind is not None else Kind()  # how labels enter (pyro_vae.models)
        self.latent_dims, self.shape = tuple(latent_dims), tuple(shape)
        self.latent_dim = self.latent_dims[0]  # the code the decoder reads
        depth = len(latent_dims)
        self.sites = ["z"] if depth == 1 else [f"z{layer + 1}" for layer in range(depth)]
        self.num_data = num_data  # N, the full data size the plate scales to (None: the batch)
        self.kl_scale = 1.0  # β × warm-up factor, set by the trainer

    @classmethod
    def from_spec(
        cls,
        spec: Spec,
        shape: Sequence[int],
        levels: int | None = None,
        train_data: torch.Tensor | None = None,
        num_classes: int | None = None,
    ) -> VAE:
        """Build prior, likelihood, networks and model kind from the spec's registry choices for
        items of ``shape`` (e.g. ``(1, 28, 28)``) whose values are ``levels`` integer levels
        (None: real values) and whose labels take ``num_classes`` values (None: no labels), a
        VampPrior's pseudo-inputs starting from ``train_data``, (N, P) items (None: uniform on
        [0, 1]). A bad argument, a ``likelihood.levels`` below the data's, a kind that needs
        labels on data without them, or a model too large to train in memory
        (:func:`~pyro_vae.networks.check_fits`) is a one-line :class:`SpecError` before anything
        is built."""
        shape = _item_shape(shape)
        _check_levels(spec, levels)
        _check_train_data(train_data, math.prod(shape))
        _check_labels(spec, num_classes)
        check_fits(
            lambda: cls._build(spec, shape, levels, train_data, num_classes),
            _size_keys(spec, levels),
        )
        return cls._build(spec, shape, levels, train_data, num_classes)

    @classmethod
    def _build(
        cls,
        spec: Spec,
        shape: tuple[int, ...],
        levels: int | None,
        train_data: torch.Tensor | None,
        num_classes: int | None,
    ) -> VAE:
        """:meth:`from_spec` of checked arguments."""
        data_dim = int(torch.Size(shape).numel())

        def made(value: Any, kind: type, key: str) -> Any:  # what an own component returned
            return built(value, kind, f"{key}.name", getattr(spec, key).name)

        lik = made(
            LIKELIHOODS.instantiate(spec.likelihood, "likelihood").build(data_dim, levels),
            Likelihood,
            "likelihood",
        )
        kind = made(
            MODELS.instantiate(spec.model, "model").build(num_classes, spec.latent_dims[-1]),
            Kind,
            "model",
        )
        enc_entry = NETWORKS.instantiate(spec.encoder, "encoder")
        kind.attach(enc_entry, data_dim)
        dec_entry = NETWORKS.instantiate(spec.decoder, "decoder")
        family, dims = GUIDES.instantiate(spec.guide, "guide"), spec.latent_dims
        first = (data_dim + kind.input_width,) if kind.input_width else tuple(shape)
        inputs = [first] + [(d,) for d in dims[:-1]]  # what each layer's q conditions on
        posteriors = [
            made(family.build(enc_entry, below, d), Posterior, "guide")
            for below, d in zip(inputs, dims)
        ]
        conditionals = [
            made(dec_entry.encoder((above,), d), nn.Module, "decoder")
            for d, above in itertools.pairwise(dims)
        ]
        decoder = made(
            dec_entry.decoder(dims[0] + kind.code_width, shape, lik.params_per_dim),
            nn.Module,
            "decoder",
        )
        if train_data is None:  # pseudo-inputs of a VampPrior then start uniform on [0, 1]
            train_data = torch.rand(256, data_dim)
        prior = made(
            PRIORS.instantiate(spec.prior, "prior").build(
                dims[-1], posteriors[0].encoder, train_data
            ),
            Prior,
            "prior",
        )
        return cls(posteriors, decoder, prior, lik, dims, shape, conditionals, kind=kind)

    @property
    def reads_labels(self) -> bool:
        """Whether the model kind reads the labels y (training and scoring then feed them)."""
        return self.kind.reads_labels

    @property
    def encoder(self) -> nn.Module:
        """The network of q(z | x): x ↦ (μ, σ[, h])."""
        return self.posteriors[0].encoder

    @classmethod
    def build(
        cls,
        shape: tuple[int, ...],
        levels: int | None = None,
        train_data: torch.Tensor | None = None,
        num_classes: int | None = None,
        **spec: object,
    ) -> VAE:
        """Keyword arguments as in a spec: ``VAE.build((1, 8, 8), latent_dim=4, prior="vamp")``."""
        return cls.from_spec(load_spec(spec), shape, levels, train_data, num_classes)

    # --- the Pyro program -----------------------------------------------------------------------

    def data_plate(
        self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None, num: int | None = None
    ) -> pyro.plate:
        """The data plate of ``model(x, idx, num)`` (module docstring); also the
        ``create_plates`` of an autoguide, ``AutoNormal(vae.model, create_plates=vae.data_plate)``,
        which otherwise draws its own random subsample."""
        if idx is not None:
            if self.num_data is None:
                raise ValueError(
                    "idx holds rows of the full data set: set vae.num_data to its size N first"
                )
            return pyro.plate("data", self.num_data, subsample=idx)
        if x is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            return pyro.plate("data", self.num_data or x.shape[0], subsample=rows)
        if num is None:
            raise ValueError("model(x=None) generates: pass num=<number of points> (or idx=)")
        return pyro.plate("data", num)

    def _scaled(self) -> AbstractContextManager:
        """poutine.scale(β) on the latent site; none at β = 1 (a messenger per site saved)."""
        return poutine.scale(scale=self.kl_scale) if self.kl_scale != 1.0 else nullcontext()

    def model_modules(self) -> list[nn.Module]:
        """The modules whose parameters the model reads: prior (a VampPrior's encoder with it),
        conditionals, decoder, likelihood and the kind's model part."""
        return [
            self.prior,
            self.conditionals,
            self.decoder,
            self.likelihood,
            *self.kind.model_modules(),
        ]

    def guide_modules(self) -> list[nn.Module]:
        """The modules whose parameters the guide reads: the posteriors, the kind's guide part."""
        return [self.posteriors, *self.kind.guide_modules()]

    def _register(self, modules: Sequence[nn.Module]) -> None:
        """``pyro.module("vae", self, update_module_params=True)`` restricted to the parameters
        of ``modules``, in Pyro's global param-store mode (module docstring): each is
        ``pyro.param("vae$$$<name>")`` under its name in ``self.named_parameters()``, the stored
        tensor put back into the module, so a model trace holds the model's parameters only
        (``pyro.render_model`` shows no encoder weights under the model)."""
        if pyro.settings.get("module_local_params"):
            return
        wanted = {id(p) for module in modules for p in module.parameters()}
        for name, value in self.named_parameters():
            if id(value) not in wanted or not value.requires_grad:
                continue
            stored = pyro.param(f"vae$$${name}", value)
            if stored is not value:
                owner, _, leaf = name.rpartition(".")
                self.get_submodule(owner)._parameters[leaf] = stored

    def model(
        self,
        x: torch.Tensor | None = None,
        idx: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num: int | None = None,
    ) -> None:
        """p(y) p(z_L | y) Π p(z_l | z_{l+1}) p(x | z_1, y) over the data plate, top-down, as
        the model kind has y enter (:mod:`pyro_vae.models`; the plain VAE ignores y); with
        ``x=None`` the likelihood is sampled."""
        self._register(self.model_modules())
        with self.data_plate(x, idx, num):
            y = self.kind.model_label(y)
            z = None
            for layer in reversed(range(len(self.sites))):
                with self._scaled():
                    z = pyro.sample(self.sites[layer], self._prior_of(layer, z, y))
            pyro.sample("x", self.likelihood.forward(self.decoder_output(z, y)), obs=x)

    def guide(
        self,
        x: torch.Tensor | None = None,
        idx: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num: int | None = None,
    ) -> None:
        """q(y | x) q(z_1 | x, y) Π q(z_{l+1} | z_l) over the data plate, bottom-up, as the
        model kind has y enter (``num`` is accepted for the model's signature)."""
        if x is None:
            raise ValueError("the guide encodes data: guide(x, idx) needs x")
        self._register(self.guide_modules())
        with self.data_plate(x, idx, num):
            z = self._joined(x, self.kind.guide_label(x, y))
            for site, posterior in zip(self.sites, self.posteriors):
                q = posterior(z)
                with self._scaled():
                    z = pyro.sample(site, q)

    def _prior_of(
        self, layer: int, above: torch.Tensor | None, y: torch.Tensor | None = None
    ) -> dist.TorchDistribution:
        """p(z_L | y) at the top (the model kind's), else p(z_l | z_{l+1} = above)."""
        if layer == len(self.sites) - 1:
            return self.kind.prior(self.prior, y)
        return DiagonalNormal(*self.conditionals[layer](above))

    def _joined(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """What q(z_1 | ·) reads: x, and a one-hot y where the kind widens its input."""
        return self._widened(x, y) if self.kind.input_width else x

    def decoder_output(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The decoder's output (the likelihood's parameters) at z_1, and a one-hot y where the
        kind widens its input."""
        return self.decoder(self._widened(z, y) if self.kind.code_width else z)

    def _widened(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return with_one_hot(t, given(y), self.kind.num_classes)

    # --- direct use of the networks -------------------------------------------------------------

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[z_1 | x, y], marginal σ) of q(z_1 | x, y) (y where the kind reads it); for a
        flow guide (the flow's image of the base mean, the base σ)
        (:meth:`pyro_vae.guides.Posterior.summary`)."""
        return self.posteriors[0].summary(self._joined(x, self.label_of(x, y)))

    def encode_layers(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per layer, the location of q(z_l | ·) at the location of the layer below: E_q[z_1 | x],
        then the guide's means passed up (E_q[z_l | x] for l ≥ 2 has no closed form)."""
        locations, below = [], self._joined(x, self.label_of(x, y))
        for posterior in self.posteriors:
            below = posterior.summary(below)[0]
            locations.append(below)
        return locations

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, y] in data units."""
        return self.likelihood.mean(self.decoder_output(z, y))

    def labels_for(self, n: int, label: int | None = None, start: int = 0) -> torch.Tensor | None:
        """The labels of n draws from a kind that reads labels: ``label`` for all of them, else
        the classes in turn, from draw ``start`` on (draw i has class i mod C); None for a kind
        without labels. A ``label``
        outside 0..C−1 is a :class:`SpecError` naming ``--label``."""
        classes = self.kind.num_classes
        if not classes:
            if label is not None:
                raise SpecError("--label", "this model kind has no labels to condition on")
            return None
        if label is None:
            return (torch.arange(n) + start) % classes
        if not 0 <= label < classes:
            raise SpecError("--label", f"{label} is not a class of the data: 0 to {classes - 1}")
        return torch.full((n,), label)

    @torch.no_grad()
    def sample(self, n: int, label: int | None = None) -> torch.Tensor:
        """Means E[x | z_1, y] (not draws of x) for n draws of :meth:`sample_codes`, (n, P),
        without a graph, y as :meth:`labels_for` gives it. Draws of x:
        ``Predictive(vae.model, num_samples=S)(num=n)["x"]``."""
        y = self.labels_for(n, label)
        return self.decode(self.sample_codes(n, y), y)

    def sample_codes(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """z_1, the decoder's input, for n ancestral draws z_L ~ p(z_L | y), …,
        z_1 ~ p(z_1 | z_2)."""
        z = None
        for layer in reversed(range(len(self.sites))):
            p = self._prior_of(layer, z, y)
            z = p.sample((n,)) if z is None and not p.batch_shape else p.sample()
        return z

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, y] at z = E_q[z_1 | x, y]."""
        y = self.label_of(x, y)
        return self.decode(self.encode(x, y)[0], y)

    def label_of(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """The label that codes and reconstructions of x condition on: y, and for a kind with
        a latent class the most probable class argmax_y q(y | x) where y is None or hidden."""
        if not isinstance(self.kind, LatentClass):
            return y
        guess = self.kind.classify(x).argmax(-1)
        return guess if y is None else torch.where(y >= 0, y, guess)

    def check_data(self, x: torch.Tensor, key: str = "data") -> None:
        """SpecError when x lies outside the likelihood's support or has the wrong width."""
        width = int(torch.Size(self.shape).numel())
        if x.ndim != 2 or x.shape[1] != width:
            raise SpecError(key, f"expected items of {width} values, got shape {tuple(x.shape)}")
        message = self.likelihood.support_error(x)
        if message:
            raise SpecError(key, message)

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ElboTerms:
        """One-sample recon and KL per point: KL analytic where one layer's pair has one, else
        log q(z_1..L | x, y) − log p(z_1..L | y) at the draw. A kind with a latent class sums
        y (its labels, if any, are not read): with π = q(y | x),

            recon = Σ_y π_y recon_y,   KL = Σ_y π_y KL_y + KL(π ‖ p(y)),

        the ELBO of log p(x), one draw of z per class."""
        if not isinstance(self.kind, LatentClass):
            return self._elbo_terms(x, y)
        classes = self._classes(x)
        per_class = self._elbo_terms(x, classes)
        q = dist.Categorical(logits=self.kind.classify(x))
        weights = q.probs.movedim(-1, 0)  # (C, B)
        return ElboTerms(
            recon=(weights * per_class.recon).sum(0),
            kl=(weights * per_class.kl).sum(0) + kl_divergence(q, self.kind.label_prior()),
            analytic_kl=per_class.analytic_kl,
        )

    def _classes(self, x: torch.Tensor) -> torch.Tensor:
        """Every class, (C, 1), to broadcast against a batch of x."""
        return torch.arange(self.kind.num_classes, device=x.device).unsqueeze(-1)

    def _elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None) -> ElboTerms:
        """:meth:`elbo_terms` at the label ``y``."""
        q = self.posteriors[0](self._joined(x, y))
        zs, log_q = self._draw(q, torch.Size())
        recon = self.likelihood.forward(self.decoder_output(zs[0], y)).log_prob(x)
        p = self._prior_of(len(zs) - 1, None, y)
        if len(zs) == 1:
            try:
                return ElboTerms(recon=recon, kl=kl_divergence(q, p.expand(q.batch_shape)))
            except NotImplementedError:
                pass
        return ElboTerms(recon=recon, kl=log_q - self._log_prior(zs, p), analytic_kl=False)

    def log_weights(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> Callable[[int], torch.Tensor]:
        """k ↦ log w (k, B), log w = log p(x|z_1, y) + log p(z_1..L | y) − log q(z_1..L|x, y),
        z ~ q: the fast IS path, of log p(x | y) where the kind conditions on y. A kind with a
        latent class sums y inside each importance sample (its labels, if any, are not read),

            log w = log Σ_y p(y) p(x | z_y, y) p(z_y | y) / q(z_y | x, y),   z_y ~ q(z | x, y),

        one draw per class, so E[w] = Σ_y p(x, y) = p(x).

        q(z_1 | x, y) and p(z_L | y) are built once per call (the layers above depend on the
        draws); each k draws fresh particles. Unscaled: neither N/B nor β enter, as log p(x)
        needs.
        """
        if isinstance(self.kind, LatentClass):
            given_class = self._log_weights(x, self._classes(x))
            log_py = self.kind.label_prior().logits.unsqueeze(-1)  # (C, 1)
            return lambda k: torch.logsumexp(given_class(k) + log_py, dim=-2)
        return self._log_weights(x, y)

    def _log_weights(
        self, x: torch.Tensor, y: torch.Tensor | None
    ) -> Callable[[int], torch.Tensor]:
        """:meth:`log_weights` at the label ``y``."""
        q = self.posteriors[0](self._joined(x, y))
        p = self._prior_of(len(self.sites) - 1, None, y)

        def draw(k: int) -> torch.Tensor:
            zs, log_q = self._draw(q, torch.Size((k,)))
            log_px_z = self.likelihood.forward(self.decoder_output(zs[0], y)).log_prob(x)
            return log_px_z + self._log_prior(zs, p) - log_q

        return draw

    def _draw(
        self, q: dist.TorchDistribution, shape: torch.Size
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """z_1 ~ q (``shape`` draws), then z_{l+1} ~ q(z_{l+1} | z_l) up the stack, and
        log q(z_1..L | x)."""
        zs = [q.rsample(shape)]
        log_q = q.log_prob(zs[0])
        for posterior in self.posteriors[1:]:
            q = posterior(zs[-1])
            zs.append(q.rsample())
            log_q = log_q + q.log_prob(zs[-1])
        return zs, log_q

    def _log_prior(self, zs: list[torch.Tensor], top: dist.TorchDistribution) -> torch.Tensor:
        """log p(z_L | y) (``top``) + Σ_l log p(z_l | z_{l+1})."""
        log_p = top.log_prob(zs[-1])
        for layer in range(len(zs) - 1):
            log_p = log_p + self._prior_of(layer, zs[layer + 1]).log_prob(zs[layer])
        return log_p


def _item_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple: a SpecError unless it is one or more positive integers whose
    product int64 holds."""
    ok = (
        isinstance(shape, (tuple, list))
        and len(shape) > 0
        and all(_whole(d) and d >= 1 for d in shape)
    )
    if not ok:
        raise SpecError(
            "shape",
            f"the item shape is one or more positive integers, e.g. "
            f"(1, 28, 28); got {shown(shape)}",
        )
    if math.prod(shape) >= INT_LIMIT:
        raise SpecError(
            "shape",
            f"{tuple(shape)} holds {math.prod(shape):.3g} values per item, more than int64 counts",
        )
    return tuple(int(d) for d in shape)


def _whole(value: object) -> bool:
    """Whether ``value`` is an integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_levels(spec: Spec, levels: int | None) -> None:
    """SpecError unless the data's ``levels`` are None (real values) or an integer >= 2, and
    ``likelihood.levels``, where set, covers them (binarized data excepted: they hold 0 and 1)."""
    if levels is not None and not (_whole(levels) and levels >= 2):
        raise SpecError(
            "levels",
            f"the data's number of levels is an integer >= 2, or None for "
            f"real values; got {shown(levels)}",
        )
    own = spec.likelihood.params.get("levels")
    binarized = spec.data.params.get("binarize", "none") != "none"
    if isinstance(own, int) and levels is not None and own < levels and not binarized:
        raise SpecError(
            "likelihood.levels",
            f"{own} is fewer than the {levels} levels of the "
            f"data ({spec.data.name}), so values {own} to {levels - 1} would have no "
            f"probability; leave likelihood.levels out to take the data's, or set it "
            f"to {levels} or more",
        )


def _check_labels(spec: Spec, num_classes: int | None) -> None:
    """SpecError naming ``model.name`` when the kind needs labels and the data have none."""
    if num_classes is None and MODELS.entry(spec.model.name, "model.name").needs_labels:
        raise SpecError(
            "model.name",
            f"{spec.model.name} conditions on labels, and data {spec.data.name} have none "
            "(an npz names them in data.labels_key, an image folder by class subfolders)",
        )


def _check_train_data(train_data: torch.Tensor | None, data_dim: int) -> None:
    """SpecError unless ``train_data`` is None or a tensor of one or more items of ``data_dim``
    values, (N, P)."""
    if train_data is None:
        return
    shape = tuple(train_data.shape) if isinstance(train_data, torch.Tensor) else None
    if shape is None or len(shape) != 2 or shape[0] < 1 or shape[1] != data_dim:
        got = f"shape {shape}" if shape is not None else f"a {type(train_data).__name__}"
        raise SpecError(
            "train_data",
            f"expected a tensor of N >= 1 items of {data_dim} values, "
            f"shape (N, {data_dim}); got {got}",
        )


def _size_keys(spec: Spec, levels: int | None) -> str:
    """The keys that set the model's sizes, for :func:`~pyro_vae.networks.check_fits`'s
    message; first a likelihood's levels, with their number: a categorical decoder has an output
    per level and value."""
    keys = "latent_dim or the sizes in encoder, decoder and prior"
    if "levels" not in spec.likelihood.params:
        return keys
    n = spec.likelihood.params["levels"] or levels
    return f"likelihood.levels{f' (now {n:.3g})' if n else ''}, {keys}"


def _legacy_keys(state: dict, prefix: str, *args: object) -> None:
    """Checkpoints from before the guide registry named the diagonal guide's network
    ``encoder``; it is ``posteriors.0.encoder`` now."""
    for key in [k for k in state if k.startswith(prefix + "encoder.")]:
        state[prefix + "posteriors.0." + key[len(prefix) :]] = state.pop(key)
