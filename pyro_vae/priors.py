"""Registry of priors p(z) over the latent code z ∈ ℝᴰ.

Each entry is a frozen dataclass of spec parameters whose ``build`` returns a module; calling the
module returns a distribution with ``batch_shape == ()`` and ``event_shape == (D,)``, which the
data plate broadcasts over the minibatch.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_vae.registry import Registry, frozen_params

PRIORS: Registry = Registry("prior")


class Prior(PyroModule):
    """A module whose forward() returns p(z)."""

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError


def diagonal_mixture(logits: torch.Tensor, locs: torch.Tensor,
                     scales: torch.Tensor) -> dist.TorchDistribution:
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²) with π = softmax(logits); locs, scales: (K, D)."""
    components = dist.Normal(locs, scales).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, 1.0).to_event(1)


class LearnedNormalPrior(Prior):
    """p(z) = N(μ, diag σ²), μ and σ learned."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class MixturePrior(Prior):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), all of π, μ, σ learned (K components)."""

    def __init__(self, latent_dim: int, components: int, spread: float, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logits = PyroParam(torch.zeros(components))
        self.locs = PyroParam(spread * torch.randn(components, latent_dim, generator=g))
        self.scales = PyroParam(torch.ones(components, latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return diagonal_mixture(self.logits, self.locs, self.scales)


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/P) Σ_p q(z | u_p).

    The P pseudo-inputs u_p live in data space, are learned, and pass through the same encoder
    as the data, so the prior is the aggregate posterior of a learned "pseudo data set".
    """

    def __init__(self, encoder: nn.Module, pseudo_inputs: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder  # shared with the guide: not a copy
        self.pseudo_inputs = PyroParam(pseudo_inputs)

    def forward(self) -> dist.TorchDistribution:
        loc, scale = self.encoder(self.pseudo_inputs)
        return diagonal_mixture(torch.zeros(loc.shape[0], device=loc.device), loc, scale)


@PRIORS.register("standard_normal")
@frozen_params
class StandardNormal:
    """z ~ N(0, I)."""

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        return StandardNormalPrior(latent_dim)


@PRIORS.register("normal")
@frozen_params
class Normal:
    """z ~ N(μ, diag σ²) with learned μ, σ."""

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        return LearnedNormalPrior(latent_dim)


@PRIORS.register("mixture")
@frozen_params
class Mixture:
    """Learned mixture of ``components`` diagonal Gaussians; means start N(0, spread²)."""

    components: int = 10
    spread: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.components < 1:
            raise ValueError(f"components must be >= 1, got {self.components}")
        if not self.spread > 0 or math.isinf(self.spread):
            raise ValueError(f"spread must be a positive number, got {self.spread}")

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        return MixturePrior(latent_dim, self.components, self.spread, self.seed)


@PRIORS.register("vamp")
@frozen_params
class Vamp:
    """VampPrior with ``pseudo_inputs`` learned pseudo-inputs, initialised from training points."""

    pseudo_inputs: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pseudo_inputs < 1:
            raise ValueError(f"pseudo_inputs must be >= 1, got {self.pseudo_inputs}")

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randint(len(train_data), (self.pseudo_inputs,), generator=g)
        return VampPrior(encoder, train_data[idx].clone().float())
