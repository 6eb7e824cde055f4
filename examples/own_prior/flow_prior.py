"""A normalizing-flow prior for pyro-vae, written outside the package (see README, "Write your
own component"):

    p(z) = T#N(0, I),   T = f_K ∘ π_K ∘ … ∘ f_1 ∘ π_1,
    log p(z) = log N(T⁻¹(z); 0, I) − Σ_k log |det ∂f_k/∂u|  (Pyro's TransformedDistribution),

f_k rational-quadratic spline couplings (Durkan et al. 2019, in Pyro as
``pyro.distributions.transforms.spline_coupling``) and π_k fixed random permutations of the D
coordinates, so that each coupling transforms the half the one before it kept.

From a spec, with this folder on PYTHONPATH (or the module in an installed package):

    prior: {name: "flow_prior:FlowPrior", flows: 4}
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import transforms
from torch import nn

from pyro_vae.entries import PriorEntry
from pyro_vae.priors import Prior
from pyro_vae.registry import frozen_params


class SplineFlowPrior(Prior):
    """forward() = T#N(0, I) over ℝᴰ: batch_shape (), event_shape (D,)."""

    def __init__(self, latent_dim: int, flows: int, hidden: int, bins: int, seed: int) -> None:
        super().__init__()
        if latent_dim < 2:
            raise ValueError(f"a coupling flow needs latent_dim >= 2, got {latent_dim}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer(
            "permutations",
            torch.stack([torch.randperm(latent_dim, generator=generator) for _ in range(flows)]),
        )
        self.couplings = nn.ModuleList(
            transforms.spline_coupling(latent_dim, hidden_dims=[hidden], count_bins=bins)
            for _ in range(flows)
        )

    def forward(self) -> dist.TorchDistribution:
        steps: list[dist.transforms.Transform] = []
        for permutation, coupling in zip(self.permutations, self.couplings):
            steps += [transforms.Permute(permutation), coupling]
        return dist.TransformedDistribution(dist.Normal(self.loc, 1.0).to_event(1), steps)


@frozen_params
class FlowPrior(PriorEntry):
    """``flows`` spline couplings, each conditioned through one hidden layer of ``hidden``
    units, with ``bins`` spline bins; ``seed`` fixes the permutations."""

    flows: int = 4
    hidden: int = 32
    bins: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("flows", "hidden", "bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        return SplineFlowPrior(latent_dim, self.flows, self.hidden, self.bins, self.seed)
