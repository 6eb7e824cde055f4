"""The VAE: one PyroModule holding the generative model and the amortized guide.

    model:  z_n ~ p(z),  x_n | z_n ~ p(x | f_θ(z_n)),          n ∈ minibatch of a data set of size N
    guide:  q_φ(z_n | x_n) = N(μ_φ(x_n), diag σ_φ(x_n)²)

``model(x=None, idx=None, num=None)`` and ``guide(x=None, idx=None, num=None)``: ``x`` is a (B, P)
minibatch, ``idx`` the LongTensor of its B rows in the full data set. The data plate is

    pyro.plate("data", N, subsample=idx)            idx given (needs ``num_data`` = N)
    pyro.plate("data", N, subsample=arange(B))      no idx: x is rows 0..B−1, N = num_data or B
    pyro.plate("data", num)                         x and idx None: ``model`` generates num points

so every site's log density carries the subsample scale N/B (1 when N = B), and autoguides or
anything else that reads the plate's indices see the real rows. The latent site is scaled by
``kl_scale`` (β times the warm-up factor) with ``poutine.scale`` in both model and guide, so any
ELBO estimator optimises E_q[log p(x|z)] − β KL(q‖p).

Parameters, the Pyro way in both of Pyro's modes. With ``pyro.settings`` ``module_local_params``
off (Pyro's default: ``SVI`` with a ``pyro.optim`` optimizer) model and guide register the whole
module, ``pyro.module("vae", vae, update_module_params=True)``: the param store holds every
parameter as ``vae$$$<name in vae.named_parameters()>`` and is their source of truth (clear it
between two models, as in Pyro's tutorials). With it on (an ELBO module stepped by a torch
optimizer, as the training loop does inside ``pyro.settings.context(module_local_params=True)``)
they stay in the modules and nothing is registered. Importing this module changes no setting.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.nn import PyroModule
from torch import nn

from pyro_vae.distributions import DiagonalNormal
from pyro_vae.likelihoods import LIKELIHOODS, Likelihood
from pyro_vae.networks import NETWORKS
from pyro_vae.priors import PRIORS, Prior
from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, load_spec


@dataclass
class ElboTerms:
    """Per-point single-sample terms: elbo = recon − kl (β = 1)."""

    recon: torch.Tensor  # log p(x | z),                 z ~ q(z | x)
    kl: torch.Tensor  # KL(q‖p): analytic where it exists, else log q(z|x) − log p(z)

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl


class VAE(PyroModule):
    """``model(x, idx)`` is p(z) p(x|z); ``guide(x, idx)`` is q(z|x) (see the module docstring).

    The prior and likelihood modules are run through ``forward``, not ``__call__``: a
    PyroModule's call enters its parameter context, which in Pyro's default mode would register
    their parameters a second time under other names (``pyro.module`` has them all) and costs
    Python on every step.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: Prior,
                 likelihood: Likelihood, latent_dim: int, shape: tuple[int, ...],
                 num_data: int | None = None) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.prior, self.likelihood = prior, likelihood
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        self.num_data = num_data  # N, the full data size the plate scales to (None: the batch)
        self.kl_scale = 1.0  # β × warm-up factor, set by the trainer

    @classmethod
    def from_spec(cls, spec: Spec, shape: tuple[int, ...], levels: int | None = None,
                  train_data: torch.Tensor | None = None) -> VAE:
        """Build prior, likelihood and networks from the spec's registry choices."""
        data_dim = int(torch.Size(shape).numel())
        lik = LIKELIHOODS.instantiate(spec.likelihood, "likelihood").build(data_dim, levels)
        enc_entry = NETWORKS.instantiate(spec.encoder, "encoder")
        dec_entry = NETWORKS.instantiate(spec.decoder, "decoder")
        encoder = enc_entry.encoder(shape, spec.latent_dim)
        decoder = dec_entry.decoder(spec.latent_dim, shape, lik.params_per_dim)
        if train_data is None:  # pseudo-inputs of a VampPrior then start uniform on [0, 1]
            train_data = torch.rand(256, data_dim)
        prior = PRIORS.instantiate(spec.prior, "prior").build(spec.latent_dim, encoder, train_data)
        return cls(encoder, decoder, prior, lik, spec.latent_dim, shape)

    @classmethod
    def build(cls, shape: tuple[int, ...], levels: int | None = None,
              train_data: torch.Tensor | None = None, **spec: object) -> VAE:
        """Keyword arguments as in a spec: ``VAE.build((1, 8, 8), latent_dim=4, prior="vamp")``."""
        return cls.from_spec(load_spec(spec), shape, levels, train_data)

    # --- the Pyro program -----------------------------------------------------------------------

    def data_plate(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None,
                   num: int | None = None) -> pyro.plate:
        """The data plate of ``model(x, idx, num)`` (module docstring); also the
        ``create_plates`` of an autoguide, ``AutoNormal(vae.model, create_plates=vae.data_plate)``,
        which otherwise draws its own random subsample."""
        if idx is not None:
            if self.num_data is None:
                raise ValueError("idx holds rows of the full data set: set vae.num_data to its "
                                 "size N first")
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

    def _register(self) -> None:
        """``pyro.module("vae", self)`` in Pyro's global param-store mode (module docstring)."""
        if not pyro.settings.get("module_local_params"):
            pyro.module("vae", self, update_module_params=True)

    def model(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None,
              num: int | None = None) -> None:
        """p(z) p(x | z) over the data plate; with ``x=None`` the likelihood is sampled."""
        self._register()
        with self.data_plate(x, idx, num):
            with self._scaled():
                z = pyro.sample("z", self.prior.forward())
            pyro.sample("x", self.likelihood.forward(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None,
              num: int | None = None) -> None:
        """q(z | x) over the data plate (``num`` is accepted for the model's signature)."""
        if x is None:
            raise ValueError("the guide encodes data: guide(x, idx) needs x")
        self._register()
        with self.data_plate(x, idx, num):
            loc, scale = self.encoder(x)
            with self._scaled():
                pyro.sample("z", DiagonalNormal(loc, scale))

    # --- direct use of the networks -------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of q(z | x)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] in data units."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means E[x | z] (not draws of x) for n draws z ~ p(z), (n, P), without a graph. Draws
        of x: ``Predictive(vae.model, num_samples=S)(num=n)["x"]``."""
        return self.decode(self.prior.forward().sample((n,)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def check_data(self, x: torch.Tensor, key: str = "data") -> None:
        """SpecError when x lies outside the likelihood's support or has the wrong width."""
        width = int(torch.Size(self.shape).numel())
        if x.ndim != 2 or x.shape[1] != width:
            raise SpecError(key, f"expected items of {width} values, got shape {tuple(x.shape)}")
        message = self.likelihood.support_error(x)
        if message:
            raise SpecError(key, message)

    def elbo_terms(self, x: torch.Tensor) -> ElboTerms:
        """One-sample recon and KL per point, KL analytic where the pair has one."""
        loc, scale = self.encoder(x)
        q = DiagonalNormal(loc, scale)
        z = q.rsample()
        p = self.prior.forward()
        recon = self.likelihood.forward(self.decoder(z)).log_prob(x)
        try:
            kl = kl_divergence(q, p.expand(q.batch_shape))
        except NotImplementedError:
            kl = q.log_prob(z) - p.log_prob(z)
        return ElboTerms(recon=recon, kl=kl)

    def log_weights(self, x: torch.Tensor) -> Callable[[int], torch.Tensor]:
        """k ↦ log w (k, B), log w = log p(x|z) + log p(z) − log q(z|x), z ~ q: the fast IS path.

        The encoder and the prior run once per call; each k draws fresh particles. Unscaled:
        neither N/B nor β enter, as log p(x) needs.
        """
        loc, scale = self.encoder(x)
        q = DiagonalNormal(loc, scale)
        p = self.prior.forward()

        def draw(k: int) -> torch.Tensor:
            z = q.rsample((k,))
            log_px_z = self.likelihood.forward(self.decoder(z)).log_prob(x)
            return log_px_z + p.log_prob(z) - q.log_prob(z)

        return draw

