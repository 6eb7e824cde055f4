"""Encoder/decoder networks: the modules that the entries of the network registry
(:mod:`pyro_vae.components.networks`) build, both halves of the VAE:
- ``encoder(shape, latent_dim, extra=0)``: x (..., P) → (μ, σ) of q(z | x) = N(μ, diag σ²),
  σ = softplus(·) + ε (``gated_mlp``: σ = exp(½ clip(s, lo, hi)), the log-variance clipped);
  ``extra`` more outputs, read with ``features(x)``, are a richer guide's
  (:mod:`pyro_vae.guides`: covariance factors, a flow's context);
- ``decoder(latent_dim, shape, m)``: z (..., D) → the likelihood's natural parameters (..., m·P).
Leading dimensions (particles, batch) pass through, so vectorized particles need no reshaping
outside the network.

Sizes are bounded before anything is allocated: :func:`check_fits` builds a model on torch's
``meta`` device (shapes, no memory) to compare its training state with the memory available.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.components.networks import NETWORKS  # noqa: F401 - its former home
from pyro_vae.memory import available_memory
from pyro_vae.registry import SpecError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
MIN_SCALE = 1e-4
#: Training holds per parameter a float32 weight, its gradient and Adam's two moments.
BYTES_PER_PARAMETER = 16


class GaussianHead(nn.Module):
    """Splits features into (μ, σ) with σ = softplus(s) + ε, keeping σ away from 0, and
    ``extra`` more features h for a richer guide (``features``)."""

    def __init__(self, body: nn.Module, latent_dim: int, extra: int = 0) -> None:
        super().__init__()
        self.body, self.latent_dim, self.extra = body, latent_dim, extra

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(μ, σ, h), h of width ``extra``."""
        loc, raw, h = self.body(x).split([self.latent_dim, self.latent_dim, self.extra], dim=-1)
        return loc, F.softplus(raw) + MIN_SCALE, h

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale, _ = self.features(x)
        return loc, scale


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def check_fits(build: Callable[[], nn.Module], hint: str) -> None:
    """SpecError when the module that ``build()`` makes cannot be trained in memory: it is built
    on the ``meta`` device (no storage), its parameters counted (the message splits them by
    top-level part; a part shared with an earlier one counts there) and the training state,
    ``BYTES_PER_PARAMETER`` bytes per parameter, compared with :func:`available_memory`.
    ``hint``: the keys that set the sizes. Sizes whose product overflows int64 are refused too;
    a build that fails on ``meta`` for another reason (data-dependent initialisation) is not
    checked."""
    try:
        with torch.device("meta"):
            module = build()
    except (NotImplementedError, RuntimeError, TypeError) as exc:
        if "overflow" in str(exc).lower():
            raise SpecError(
                "model", f"too large to build ({str(exc).splitlines()[0]}); reduce {hint}"
            ) from None
        return
    seen: set[int] = set()
    parts: dict[str, int] = {}
    for name, child in module.named_children():
        new = [p for p in child.parameters() if id(p) not in seen]
        seen.update(id(p) for p in new)
        parts[name] = sum(p.numel() for p in new)
    total, memory = sum(p.numel() for p in module.parameters()), available_memory()
    need = total * BYTES_PER_PARAMETER
    if memory is not None and need > memory:
        split = ", ".join(f"{name} {n:.3g}" for name, n in parts.items() if n)
        raise SpecError(
            "model",
            f"{total:.3g} parameters ({split or 'one part'}) need "
            f"{need / 2**30:.3g} GiB to train ({BYTES_PER_PARAMETER} bytes each: "
            "weight, gradient, Adam's two moments), more than the "
            f"{memory / 2**30:.3g} GiB of memory available; reduce {hint}",
        )


class LogVarHead(GaussianHead):
    """A GaussianHead whose σ has log σ² = clip(s, lo, hi), σ = exp(½ clip(s, lo, hi)):
    Tomczak & Welling's ``Hardtanh(-6, 2)`` on the log-variance, so σ ∈ [e⁻³, e]."""

    def __init__(
        self, body: nn.Module, latent_dim: int, low: float, high: float, extra: int = 0
    ) -> None:
        super().__init__(body, latent_dim, extra)
        self.low, self.high = low, high

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, raw, h = self.body(x).split([self.latent_dim, self.latent_dim, self.extra], dim=-1)
        return loc, torch.exp(0.5 * F.hardtanh(raw, self.low, self.high)), h


class GatedDense(nn.Module):
    """h = (W₁x + b₁) ⊙ σ(W₂x + b₂) (Dauphin et al. 2017; the ``GatedDense`` layer of Tomczak &
    Welling's VampPrior code), both halves from one ``Linear`` of 2·out units and ``F.glu``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.linear(x), dim=-1)


def he_init(module: nn.Module) -> nn.Module:
    """Every Linear's weights W_ij ~ N(0, 2/n_in) (He et al. 2015), biases left at torch's
    default U(±1/√n_in): the ``he_init`` the VampPrior code applies to all its layers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features))
    return module


def gated(sizes: list[int]) -> nn.Sequential:
    """GatedDense layers through ``sizes[:-1]``, then a plain Linear to ``sizes[-1]``, He-init."""
    layers: list[nn.Module] = [GatedDense(a, b) for a, b in itertools.pairwise(sizes[:-1])]
    return he_init(nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1])))


class ConvEncoderBody(nn.Module):
    """(..., C·H·W) → conv stride 2 (×len(channels)) → linear hidden → out."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        channels: tuple[int, ...],
        hidden: int,
        out: int,
        act: type[nn.Module],
    ) -> None:
        super().__init__()
        self.shape = shape
        convs: list[nn.Module] = []
        c_in, h, w = shape
        for c in channels:
            convs += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), act()]
            c_in, h, w = c, (h + 1) // 2, (w + 1) // 2
        self.convs = nn.Sequential(*convs, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c_in * h * w, hidden), act(), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self.convs(x.reshape(-1, *self.shape))
        return self.head(y).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """z → linear → (c, h, w) → transposed conv stride 2 (×len(channels)) → crop to (m·C, H, W)."""

    def __init__(
        self,
        latent_dim: int,
        shape: tuple[int, int, int],
        m: int,
        channels: tuple[int, ...],
        hidden: int,
        act: type[nn.Module],
    ) -> None:
        super().__init__()
        C, self.H, self.W = shape
        n = len(channels)
        h, w = -(-self.H // 2**n), -(-self.W // 2**n)
        rev = list(reversed(channels))
        self.seed_shape = (rev[0], h, w)
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, rev[0] * h * w), act()
        )
        ups: list[nn.Module] = []
        for i, c in enumerate(rev):
            c_out = rev[i + 1] if i + 1 < n else m * C
            ups.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            if i + 1 < n:
                ups.append(act())
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        y = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.seed_shape)
        y = self.ups(y)[..., : self.H, : self.W]
        return y.reshape(*lead, -1)
