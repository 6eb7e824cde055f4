"""Registry of guide families q(z | x): the amortized posterior over one stochastic layer.

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
(:data:`NO_STOPPED_DENSITY`).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import transforms
from torch import nn

from pyro_vae.distributions import DiagonalNormal
from pyro_vae.entries import GuideEntry, NetworkEntry
from pyro_vae.networks import GaussianHead
from pyro_vae.registry import Registry, frozen_params

GUIDES: Registry[GuideEntry] = Registry("guide", GuideEntry)
NO_STOPPED_DENSITY = {"planar"}  # families without log q at a value they did not draw


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
        return dist.TransformedDistribution(DiagonalNormal(loc, scale),
                                            [f.condition(context) for f in self.flows])

    def summary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(μ), σ): the flow's image of the base mean (E_q[z | x] has no closed form) and the
        base scales."""
        loc, scale, context = self.encoder.features(x)
        z = loc
        for f in self.flows:
            z = f.condition(context)(z)
        return z, scale


def _check(value: int, name: str, low: int = 1) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


@GUIDES.register("diagonal")
@frozen_params
class Diagonal(GuideEntry):
    """q(z|x) = N(μ(x), diag σ(x)²): mean field."""

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        return DiagonalPosterior(network.encoder(shape, latent_dim))


@GUIDES.register("low_rank")
@frozen_params
class LowRank(GuideEntry):
    """q(z|x) = N(μ(x), F(x) F(x)ᵀ + diag σ(x)²) with a D × ``rank`` factor F."""

    rank: int = 2

    def __post_init__(self) -> None:
        _check(self.rank, "rank")

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        encoder = network.encoder(shape, latent_dim, extra=latent_dim * self.rank)
        return LowRankPosterior(encoder, self.rank)


@GUIDES.register("full_rank")
@frozen_params
class FullRank(GuideEntry):
    """q(z|x) = N(μ(x), L(x) L(x)ᵀ), L lower triangular with diagonal σ(x)."""

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        encoder = network.encoder(shape, latent_dim, extra=latent_dim * (latent_dim - 1) // 2)
        return FullRankPosterior(encoder, latent_dim)


@frozen_params
class _Flow(GuideEntry):
    flows: int = 2
    hidden: tuple[int, ...] = (100,)
    context: int = 32

    def __post_init__(self) -> None:
        _check(self.flows, "flows")
        _check(self.context, "context")
        for h in self.hidden:
            _check(h, "hidden sizes")

    def flow(self, latent_dim: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        encoder = network.encoder(shape, latent_dim, extra=self.context)
        return FlowPosterior(encoder, [self.flow(latent_dim) for _ in range(self.flows)])


@GUIDES.register("iaf")
@frozen_params
class IAF(_Flow):
    """Inverse autoregressive flow: ``flows`` conditional affine autoregressive maps (MADE
    networks with ``hidden`` sizes, the numerically stable σ-gated update of the IAF paper, each
    with its own random variable order) on the diagonal base, conditioned on a ``context``-wide
    encoder output."""

    def flow(self, latent_dim: int) -> nn.Module:
        return transforms.conditional_affine_autoregressive(
            latent_dim, self.context, hidden_dims=list(self.hidden), stable=True)


@GUIDES.register("planar")
@frozen_params
class Planar(_Flow):
    """Rezende & Mohamed's planar flow, amortized: each of ``flows`` maps takes (u, w, b) from a
    network (``hidden`` sizes) of a ``context``-wide encoder output."""

    def flow(self, latent_dim: int) -> nn.Module:
        return transforms.conditional_planar(latent_dim, self.context, list(self.hidden))
