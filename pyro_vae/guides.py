"""Guide families q(z | x), the amortized posterior over one stochastic layer: the modules that
the entries of the guide registry (:mod:`pyro_vae.components.guides`) build.

Each entry builds a :class:`Posterior` from a network entry (``mlp``, ``conv``, ...), the shape of
what it conditions on (the data, or the layer below in a hierarchy) and the latent size D. The
encoder emits (μ, σ) and, for the richer families, ``extra`` features h of x:

==========  =====================================================  ============================
name        q(z | x)                                               h
==========  =====================================================  ============================
diagonal    N(μ, diag σ²)                                          none
low_rank    N(μ, F Fᵀ + diag σ²),  F ∈ ℝ^{D×rank}                  F, D·rank values
full_rank   N(μ, L Lᵀ),  L = diag σ + strictly lower part          D(D−1)/2 values
iaf         z = f_K ∘ … ∘ f_1(ε), ε ~ N(μ, diag σ²), f_k an        context c, ``context`` values
            affine autoregressive map conditioned on c
            (Kingma et al. 2016, eq. 10-14)
planar      the same with planar maps f_k(z) = z + u_k tanh(w_kᵀz + b_k),  context c
            (u_k, w_k, b_k) = g_k(c) (Rezende & Mohamed 2015)
==========  =====================================================  ============================

The flows are Pyro's (``conditional_affine_autoregressive``, ``conditional_planar``) on a
``TransformedDistribution``, so log q(z | x) = log N(ε; μ, σ²) − Σ_k log |det ∂f_k/∂z_{k−1}|
comes from Pyro; no Jacobian is written here. A flow's log q at its own draw reads the inverse
from the transform's cache; at any other value, IAF inverts sequentially (D network passes) and a
planar flow cannot (it has no closed-form inverse), so estimators that score a draw with the
guide's parameters stopped (``stl``, ``dreg``) are refused for ``planar``
(:data:`pyro_vae.components.guides.NO_STOPPED_DENSITY`).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.components.guides import GUIDES  # noqa: F401 - its former home
from pyro_vae.distributions import DiagonalNormal
from pyro_vae.networks import GaussianHead


class Posterior(nn.Module):
    """forward(x) → q(z | x) with batch_shape x.shape[:-1] and event_shape (D,)."""

    def __init__(self, encoder: GaussianHead) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[z | x], marginal standard deviations) where these are closed forms."""
        q = self(x)
        return q.mean, q.variance.sqrt()


class DiagonalPosterior(Posterior):
    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        return DiagonalNormal(*self.encoder(x))

    def summary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)


class LowRankPosterior(Posterior):
    def __init__(self, encoder: GaussianHead, rank: int) -> None:
        super().__init__(encoder)
        self.rank = rank

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale, h = self.encoder.features(x)
        factor = h.unflatten(-1, (loc.shape[-1], self.rank))
        return dist.LowRankMultivariateNormal(loc, factor, scale.square())


class FullRankPosterior(Posterior):
    def __init__(self, encoder: GaussianHead, latent_dim: int) -> None:
        super().__init__(encoder)
        rows, cols = torch.tril_indices(latent_dim, latent_dim, -1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale, h = self.encoder.features(x)
        tril = torch.diag_embed(scale)
        tril[..., self.rows, self.cols] = h  # strictly below the diagonal
        return dist.MultivariateNormal(loc, scale_tril=tril)


class FlowPosterior(Posterior):
    """ε ~ N(μ, diag σ²) pushed through conditional flows conditioned on the encoder's context."""

    def __init__(self, encoder: GaussianHead, flows: list[nn.Module]) -> None:
        super().__init__(encoder)
        self.flows = nn.ModuleList(flows)

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, scale, context = self.encoder.features(x)
        return dist.TransformedDistribution(
            DiagonalNormal(loc, scale), [f.condition(context) for f in self.flows]
        )

    def summary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(μ), σ): the flow's image of the base mean (E_q[z | x] has no closed form) and the
        base scales."""
        loc, scale, context = self.encoder.features(x)
        z = loc
        for f in self.flows:
            z = f.condition(context)(z)
        return z, scale
