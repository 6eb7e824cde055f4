"""The network registry: encoder/decoder architectures by name, each entry's ``encoder`` and
``decoder`` making modules of :mod:`pyro_vae.networks` (imported on the call). At most
:data:`MAX_LAYERS` layers per network: a deeper stack crashes the trace of the training step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pyro_vae.entries import NetworkEntry
from pyro_vae.registry import Registry, SpecError, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from pyro_vae.networks import GaussianHead

NETWORKS: Registry[NetworkEntry] = Registry("network", NetworkEntry)

#: The keys of :data:`pyro_vae.networks.ACTIVATIONS`.
Activation = Literal["tanh", "relu", "elu", "softplus", "leaky_relu", "gelu"]
MAX_LAYERS = 1000


def _check_layers(hidden: tuple[int, ...], name: str) -> None:
    if len(hidden) > MAX_LAYERS:
        raise ValueError(f"{name} lists {len(hidden)} layers; at most {MAX_LAYERS}")
    if any(h < 1 for h in hidden):
        raise ValueError(f"{name} sizes must be >= 1, got {list(hidden)}")


@NETWORKS.register("mlp")
@frozen_params
class MLP(NetworkEntry):
    """Fully connected: P → hidden… → out."""

    hidden: tuple[int, ...] = (200, 200)
    activation: Activation = "tanh"

    def __post_init__(self) -> None:
        _check_layers(self.hidden, "hidden")

    def encoder(self, shape: tuple[int, ...], latent_dim: int, extra: int = 0) -> GaussianHead:
        from pyro_vae.networks import GaussianHead, mlp

        return GaussianHead(
            mlp([math.prod(shape), *self.hidden, 2 * latent_dim + extra], self.activation),
            latent_dim,
            extra,
        )

    def decoder(self, latent_dim: int, shape: tuple[int, ...], m: int) -> nn.Module:
        from pyro_vae.networks import mlp

        return mlp([latent_dim, *self.hidden, m * math.prod(shape)], self.activation)


@NETWORKS.register("conv")
@frozen_params
class Conv(NetworkEntry):
    """Convolutional, for image-shaped data (C, H, W): stride-2 convolutions and their transposes."""

    channels: tuple[int, ...] = (32, 64)
    hidden: int = 256
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        _check_layers(self.channels, "channels")
        _check_layers((self.hidden,), "hidden")

    @staticmethod
    def _image(shape: tuple[int, ...], key: str) -> tuple[int, int, int]:
        if len(shape) != 3:
            raise SpecError(
                f"{key}.name",
                f"conv needs image data of shape (C, H, W), this data "
                f"set has items of shape {tuple(shape)}; use mlp",
            )
        return shape  # type: ignore[return-value]

    def encoder(self, shape: tuple[int, ...], latent_dim: int, extra: int = 0) -> GaussianHead:
        from pyro_vae.networks import ACTIVATIONS, ConvEncoderBody, GaussianHead

        body = ConvEncoderBody(
            self._image(shape, "encoder"),
            self.channels,
            self.hidden,
            2 * latent_dim + extra,
            ACTIVATIONS[self.activation],
        )
        return GaussianHead(body, latent_dim, extra)

    def decoder(self, latent_dim: int, shape: tuple[int, ...], m: int) -> nn.Module:
        from pyro_vae.networks import ACTIVATIONS, ConvDecoder

        return ConvDecoder(
            latent_dim,
            self._image(shape, "decoder"),
            m,
            self.channels,
            self.hidden,
            ACTIVATIONS[self.activation],
        )


@NETWORKS.register("gated_mlp")
@frozen_params
class GatedMLP(NetworkEntry):
    """Tomczak & Welling's VampPrior networks: P → GatedDense(hidden)… → Linear out, every Linear
    He-initialised. The decoder's last layer outputs the likelihood's parameters (for bernoulli
    the logits l, so σ(l) is their ``Linear`` + ``Sigmoid``). ``logvar_clip: [lo, hi]`` gives
    the encoder log σ² = clip(s, lo, hi) (theirs: [-6, 2]); ``null`` the softplus head of mlp."""

    hidden: tuple[int, ...] = (300, 300)
    logvar_clip: tuple[float, float] | None = (-6.0, 2.0)

    def __post_init__(self) -> None:
        _check_layers(self.hidden, "hidden")
        if not self.hidden:
            raise ValueError("hidden needs at least one layer")
        clip = self.logvar_clip
        if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
            raise ValueError(f"logvar_clip must be [low, high] with low < high, got {list(clip)}")

    def encoder(self, shape: tuple[int, ...], latent_dim: int, extra: int = 0) -> GaussianHead:
        from pyro_vae.networks import GaussianHead, LogVarHead, gated

        body = gated([math.prod(shape), *self.hidden, 2 * latent_dim + extra])
        if self.logvar_clip is None:
            return GaussianHead(body, latent_dim, extra)
        return LogVarHead(body, latent_dim, *self.logvar_clip, extra=extra)

    def decoder(self, latent_dim: int, shape: tuple[int, ...], m: int) -> nn.Module:
        from pyro_vae.networks import gated

        return gated([latent_dim, *self.hidden, m * math.prod(shape)])
