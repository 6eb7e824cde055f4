"""The guide registry: families q(z | x) by name, each entry's ``build`` making a
:class:`pyro_vae.guides.Posterior` (imported on the call); the table of families is in
:mod:`pyro_vae.guides`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyro_vae.entries import GuideEntry, NetworkEntry
from pyro_vae.registry import Registry, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from pyro_vae.guides import Posterior

GUIDES: Registry[GuideEntry] = Registry("guide", GuideEntry)
#: Families without log q at a value they did not draw (a planar flow has no inverse), which the
#: estimators that score a draw with the guide's parameters stopped (stl, dreg) need.
NO_STOPPED_DENSITY = {"planar"}


def _check(value: int, name: str, low: int = 1) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


@GUIDES.register("diagonal")
@frozen_params
class Diagonal(GuideEntry):
    """q(z|x) = N(μ(x), diag σ(x)²): mean field."""

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        from pyro_vae.guides import DiagonalPosterior

        return DiagonalPosterior(network.encoder(shape, latent_dim))


@GUIDES.register("low_rank")
@frozen_params
class LowRank(GuideEntry):
    """q(z|x) = N(μ(x), F(x) F(x)ᵀ + diag σ(x)²) with a D × ``rank`` factor F."""

    rank: int = 2

    def __post_init__(self) -> None:
        _check(self.rank, "rank")

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        from pyro_vae.guides import LowRankPosterior

        encoder = network.encoder(shape, latent_dim, extra=latent_dim * self.rank)
        return LowRankPosterior(encoder, self.rank)


@GUIDES.register("full_rank")
@frozen_params
class FullRank(GuideEntry):
    """q(z|x) = N(μ(x), L(x) L(x)ᵀ), L lower triangular with diagonal σ(x)."""

    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        from pyro_vae.guides import FullRankPosterior

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
        from pyro_vae.guides import FlowPosterior

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
        from pyro.distributions import transforms

        return transforms.conditional_affine_autoregressive(
            latent_dim, self.context, hidden_dims=list(self.hidden), stable=True
        )


@GUIDES.register("planar")
@frozen_params
class Planar(_Flow):
    """Rezende & Mohamed's planar flow, amortized: each of ``flows`` maps takes (u, w, b) from a
    network (``hidden`` sizes) of a ``context``-wide encoder output."""

    def flow(self, latent_dim: int) -> nn.Module:
        from pyro.distributions import transforms

        return transforms.conditional_planar(latent_dim, self.context, list(self.hidden))
