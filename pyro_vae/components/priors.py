"""The prior registry: p(z) by name, each entry's ``build`` making a module of
:mod:`pyro_vae.priors` (imported on the call)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pyro_vae.entries import PriorEntry
from pyro_vae.registry import Registry, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from pyro_vae.priors import Prior

PRIORS: Registry[PriorEntry] = Registry("prior", PriorEntry)


@PRIORS.register("standard_normal")
@frozen_params
class StandardNormal(PriorEntry):
    """z ~ N(0, I)."""

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        from pyro_vae.priors import StandardNormalPrior

        return StandardNormalPrior(latent_dim)


@PRIORS.register("normal")
@frozen_params
class Normal(PriorEntry):
    """z ~ N(μ, diag σ²) with learned μ, σ."""

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        from pyro_vae.priors import LearnedNormalPrior

        return LearnedNormalPrior(latent_dim)


@PRIORS.register("mixture")
@frozen_params
class Mixture(PriorEntry):
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
        from pyro_vae.priors import MixturePrior

        return MixturePrior(latent_dim, self.components, self.spread, self.seed)


@PRIORS.register("vamp")
@frozen_params
class Vamp(PriorEntry):
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
            raise ValueError(
                f"init_level must be in [0, 1] (a fraction of the data range), "
                f"got {self.init_level}"
            )
        if not 0 <= self.init_std < math.inf:
            raise ValueError(f"init_std must be a finite number >= 0, got {self.init_std}")

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        import torch

        from pyro_vae.priors import VampPrior

        low, high = float(train_data.min()), float(train_data.max())
        g = torch.Generator().manual_seed(self.seed)
        eps = torch.randn(self.pseudo_inputs, train_data.shape[1], generator=g)
        level = self.init_level + self.init_std * eps
        return VampPrior(encoder, low + (high - low) * level, low, high)


@PRIORS.register("flow")
@frozen_params
class Flow(PriorEntry):
    """A learned MAF on N(0, I): ``flows`` affine autoregressive maps, MADE ``hidden`` sizes."""

    flows: int = 2
    hidden: tuple[int, ...] = (100,)

    def __post_init__(self) -> None:
        if self.flows < 1:
            raise ValueError(f"flows must be >= 1, got {self.flows}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {list(self.hidden)}")

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        from pyro_vae.priors import FlowPrior

        return FlowPrior(latent_dim, self.flows, self.hidden)
