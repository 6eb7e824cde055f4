"""The VAE: one PyroModule holding the generative model and the amortized guide.

    model:  z_n ~ p(z),  x_n | z_n ~ p(x | f_θ(z_n)),          n ∈ minibatch of a data set of size N
    guide:  q_φ(z_n | x_n), a family of :mod:`pyro_vae.guides` (default N(μ_φ(x_n), diag σ_φ(x_n)²))

The data plate carries the subsample scale N/B; the latent site is scaled by ``kl_scale``
(β times the warm-up factor) with ``poutine.scale`` in both model and guide, so any ELBO
estimator optimises E_q[log p(x|z)] − β KL(q‖p).
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

from pyro_vae.guides import GUIDES, Posterior
from pyro_vae.likelihoods import LIKELIHOODS, Likelihood
from pyro_vae.networks import NETWORKS
from pyro_vae.priors import PRIORS, Prior
from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, load_spec

pyro.settings.set(module_local_params=True)


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
    """``model(x)`` is p(z) p(x|z); ``guide(x)`` is q(z|x). ``x`` is a (B, P) minibatch."""

    def __init__(self, posterior: Posterior, decoder: nn.Module, prior: Prior,
                 likelihood: Likelihood, latent_dim: int, shape: tuple[int, ...],
                 num_data: int | None = None) -> None:
        super().__init__()
        self.posteriors, self.decoder = nn.ModuleList([posterior]), decoder
        self._register_load_state_dict_pre_hook(_legacy_keys)
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
        posterior = GUIDES.instantiate(spec.guide, "guide").build(enc_entry, shape, spec.latent_dim)
        decoder = dec_entry.decoder(spec.latent_dim, shape, lik.params_per_dim)
        if train_data is None:  # pseudo-inputs of a VampPrior then start uniform on [0, 1]
            train_data = torch.rand(256, data_dim)
        prior = PRIORS.instantiate(spec.prior, "prior").build(spec.latent_dim, posterior.encoder,
                                                              train_data)
        return cls(posterior, decoder, prior, lik, spec.latent_dim, shape)

    @property
    def encoder(self) -> nn.Module:
        """The network of q(z | x): x ↦ (μ, σ[, h])."""
        return self.posteriors[0].encoder

    @classmethod
    def build(cls, shape: tuple[int, ...], levels: int | None = None,
              train_data: torch.Tensor | None = None, **spec: object) -> VAE:
        """Keyword arguments as in a spec: ``VAE.build((1, 8, 8), latent_dim=4, prior="vamp")``."""
        return cls.from_spec(load_spec(spec), shape, levels, train_data)

    # --- the Pyro program -----------------------------------------------------------------------

    def _plate(self, x: torch.Tensor) -> pyro.plate:
        return pyro.plate("data", self.num_data or x.shape[0], subsample=x)

    def _scaled(self) -> AbstractContextManager:
        """poutine.scale(β) on the latent site; none at β = 1 (a messenger per site saved)."""
        return poutine.scale(scale=self.kl_scale) if self.kl_scale != 1.0 else nullcontext()

    def model(self, x: torch.Tensor) -> None:
        with self._plate(x):
            with self._scaled():
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with self._plate(x):
            q = self.posteriors[0](x)
            with self._scaled():
                pyro.sample("z", q)

    # --- direct use of the networks -------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[z | x], marginal σ) of q(z | x); for a flow guide (the flow's image of the base
        mean, the base σ) (:meth:`pyro_vae.guides.Posterior.summary`)."""
        return self.posteriors[0].summary(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] in data units."""
        return self.likelihood.mean(self.decoder(z))

    def sample(self, n: int) -> torch.Tensor:
        """E[x | z] for n draws z ~ p(z)."""
        return self.decode(self.prior().sample((n,)))

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
        q = self.posteriors[0](x)
        z = q.rsample()
        p = self.prior()
        recon = self.likelihood(self.decoder(z)).log_prob(x)
        try:
            return ElboTerms(recon=recon, kl=kl_divergence(q, p.expand(q.batch_shape)))
        except NotImplementedError:
            return ElboTerms(recon=recon, kl=q.log_prob(z) - p.log_prob(z), analytic_kl=False)

    def log_weights(self, x: torch.Tensor) -> Callable[[int], torch.Tensor]:
        """k ↦ log w (k, B), log w = log p(x|z) + log p(z) − log q(z|x), z ~ q: the fast IS path.

        The encoder and the prior run once per call; each k draws fresh particles. Unscaled:
        neither N/B nor β enter, as log p(x) needs.
        """
        q = self.posteriors[0](x)
        p = self.prior()

        def draw(k: int) -> torch.Tensor:
            z = q.rsample((k,))
            return self.likelihood(self.decoder(z)).log_prob(x) + p.log_prob(z) - q.log_prob(z)

        return draw



def _legacy_keys(state: dict, prefix: str, *args: object) -> None:
    """Checkpoints from before the guide registry named the diagonal guide's network
    ``encoder``; it is ``posteriors.0.encoder`` now."""
    for key in [k for k in state if k.startswith(prefix + "encoder.")]:
        state[prefix + "posteriors.0." + key[len(prefix):]] = state.pop(key)
