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
    """VampPrior (Tomczak & Welling 2018, eq. 9): a uniform mixture of the guide's posteriors at K
    learned pseudo-inputs u_1..u_K,

        p(z) = (1/K) Σ_k q_φ(z | u_k) = (1/K) Σ_k N(z; μ_φ(u_k), diag σ_φ(u_k)²).

    The encoder φ is the guide's own (shared, not a copy), so both the data and the prior train it.
    As in the published code, the pseudo-inputs are clipped to the box [lo, hi]ᴾ of the training
    data, u = clamp(v, lo, hi) with v learned (hardtanh; a coordinate clipped at a bound has no
    gradient), so the prior's components stay posteriors of possible inputs. lo and hi are
    buffers: a checkpoint restores the same u.
    """

    def __init__(self, encoder: nn.Module, pseudo_inputs: torch.Tensor, low: float,
                 high: float) -> None:
        super().__init__()
        self.encoder = encoder  # shared with the guide: not a copy
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("high", torch.tensor(float(high)))
        self.unclipped = nn.Parameter(pseudo_inputs.clone())

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_1..u_K as rows, (K, P)."""
        return torch.clamp(self.unclipped, self.low, self.high)

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
    """VampPrior with ``pseudo_inputs`` pseudo-inputs, all started near one near-empty image:

        u_k = lo + (hi − lo)·(init_level + init_std·ε_k),   ε_k ~ N(0, I),

    [lo, hi] the range of the training data (Tomczak & Welling's code: pixels N(±0.05, 0.01²),
    clipped to [0, 1]).

    Why not training images: with u_k drawn from the data, p(z) starts as the aggregate posterior of
    the untrained encoder and moves with it (a shift of the encoder's output shifts the codes
    μ_φ(x) and the components μ_φ(u_k) alike), so KL(q(z|x) ‖ p(z)) does not see where the codes
    sit. While z carries no information the reconstruction term then pushes the codes away (on
    digits the mean code goes from norm 0 to 8 within 60 steps, under N(0, I) it stays below 1.5)
    until 40% of the decoder's first tanh units saturate; the decoder stops reading z
    (‖∂logits/∂z‖ ≈ 1, against 10-25 under N(0, I)) and the KL removes what is left: 0/8 active
    units from the first epoch on, also with the encoder's scale frozen at 1, a 10-epoch warm-up
    or lr 5·10⁻⁴. Pseudo-inputs started together at an atypical input make p(z) a single Gaussian
    N(μ_φ(u₀), σ_φ(u₀)²) that does not follow the codes, so the KL holds them as N(0, I) does;
    the pseudo-inputs spread out once the decoder reads z.
    """

    pseudo_inputs: int = 500
    init_level: float = 0.05
    init_std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pseudo_inputs < 1:
            raise ValueError(f"pseudo_inputs must be >= 1, got {self.pseudo_inputs}")
        if not 0 <= self.init_level <= 1:
            raise ValueError(f"init_level must be in [0, 1] (a fraction of the data range), "
                             f"got {self.init_level}")
        if not 0 <= self.init_std < math.inf:
            raise ValueError(f"init_std must be a finite number >= 0, got {self.init_std}")

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        low, high = float(train_data.min()), float(train_data.max())
        g = torch.Generator().manual_seed(self.seed)
        eps = torch.randn(self.pseudo_inputs, train_data.shape[1], generator=g)
        level = self.init_level + self.init_std * eps
        return VampPrior(encoder, low + (high - low) * level, low, high)
