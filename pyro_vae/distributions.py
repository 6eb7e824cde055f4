"""Lean Gaussians over the latent code z ∈ ℝᴰ, one event each (``event_shape == (D,)``).

Both are what ``Normal(loc, scale).to_event(1)`` is, with fewer tensor ops per density: in a
training step of a small VAE the fixed per-op cost (Python dispatch, one autograd node each) is a
visible share of the time (``python -m benchmarks --only step``).

* :class:`DiagonalNormal` q(z) = N(μ, diag σ²), the guide. At a draw of its own ``rsample``,
  z = μ + σ ⊙ ε, the standardized residual (z − μ)/σ *is* ε as a function of (μ, σ), so

      log q(z) = −½ ‖ε‖² − Σ_d log σ_d − (D/2) log 2π

  has the value and the total derivative in (μ, σ) of the general formula (path and score parts
  together, as a reparameterized ELBO needs them), in two graph ops (log σ, its sum) instead of
  six. At any other value, a draw of another distribution, a detached copy (``pyro.distributions.
  util.detach``, as sticking-the-landing and DReG use), the general formula is computed.
* :class:`StandardNormal` p(z) = N(0, I): log p(z) = −½ ‖z‖² − (D/2) log 2π.

The closed-form KL divergences between them are registered for ``TraceMeanField_ELBO``:

    KL(N(μ, σ²) ‖ N(0, I))     = ½ Σ_d (μ_d² + σ_d² − 1) − Σ_d log σ_d,
    KL(N(μ, σ²) ‖ N(m, s²))    = Σ_d log(s_d/σ_d) + (σ_d² + (μ_d − m_d)²) / (2 s_d²) − ½,
    KL(N(μ, Σ) ‖ N(0, I))      = ½ (tr Σ + ‖μ‖²) + (D/2) log 2π − H[N(μ, Σ)]   (full and low rank).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal, kl

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagonalNormal(TorchDistribution):
    """N(μ, diag σ²) over the last dimension of ``loc``/``scale`` (module docstring)."""

    arg_constraints: ClassVar[dict] = {
        "loc": constraints.real_vector,
        "scale": constraints.independent(constraints.positive, 1),
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, validate_args: bool | None = None) -> None:
        if loc.shape != scale.shape:
            loc, scale = torch.broadcast_tensors(loc, scale)
        self.loc, self.scale = loc, scale
        self._draw: tuple[Tensor, Tensor] | None = None  # (z, ε) of the last rsample
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size, _instance: DiagonalNormal | None = None
    ) -> DiagonalNormal:
        new = self._get_checked_instance(DiagonalNormal, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc, new.scale, new._draw = self.loc.expand(shape), self.scale.expand(shape), None
        super(DiagonalNormal, new).__init__(
            torch.Size(batch_shape), self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.scale.square()

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        eps = torch.randn(
            self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device
        )
        z = self.loc + self.scale * eps
        self._draw = (z, eps)
        return z

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        draw = self._draw
        if draw is not None and value is draw[0]:
            eps = draw[1]
            return -0.5 * eps.square().sum(-1) - self._log_scale_sum()
        residual = (value - self.loc) / self.scale
        return -0.5 * residual.square().sum(-1) - self._log_scale_sum()

    def _log_scale_sum(self) -> Tensor:
        """Σ_d log σ_d + (D/2) log 2π."""
        return self.scale.log().sum(-1) + self.event_shape[0] * HALF_LOG_2PI

    def entropy(self) -> Tensor:
        return self._log_scale_sum() + 0.5 * self.event_shape[0]


class StandardNormal(TorchDistribution):
    """N(0, I) over ℝᴰ, any batch shape; ``like`` (D,) gives D, dtype and device."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        like: Tensor,
        batch_shape: torch.Size = torch.Size(),
        validate_args: bool | None = None,
    ) -> None:
        self.like = like
        super().__init__(torch.Size(batch_shape), like.shape[-1:], validate_args=validate_args)

    def expand(
        self, batch_shape: torch.Size, _instance: StandardNormal | None = None
    ) -> StandardNormal:
        new = self._get_checked_instance(StandardNormal, _instance)
        StandardNormal.__init__(new, self.like, torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return self.like.new_zeros(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> Tensor:
        return self.like.new_ones(self.batch_shape + self.event_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return torch.randn(
            self._extended_shape(sample_shape), dtype=self.like.dtype, device=self.like.device
        )

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _batched(
            -0.5 * value.square().sum(-1) - self.event_shape[0] * HALF_LOG_2PI, self.batch_shape
        )

    def entropy(self) -> Tensor:
        d = self.event_shape[0]
        return self.like.new_full(self.batch_shape, d * (HALF_LOG_2PI + 0.5))


def _batched(t: Tensor, batch_shape: torch.Size) -> Tensor:
    """t broadcast to the distribution's batch shape (a no-op in the usual case)."""
    if t.shape[t.ndim - len(batch_shape) :] == batch_shape:
        return t
    return t.expand(torch.broadcast_shapes(t.shape, batch_shape))


@kl.register_kl(DiagonalNormal, StandardNormal)
def _kl_diagonal_standard(q: DiagonalNormal, p: StandardNormal) -> Tensor:
    kl_div = 0.5 * (q.loc.square() + q.scale.square() - 1).sum(-1) - q.scale.log().sum(-1)
    return _batched(kl_div, p.batch_shape)


@kl.register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_diagonal(q: DiagonalNormal, p: DiagonalNormal) -> Tensor:
    ratio = (q.scale / p.scale).square()
    gap = ((q.loc - p.loc) / p.scale).square()
    return 0.5 * (ratio + gap - 1 - ratio.log()).sum(-1)


@kl.register_kl(MultivariateNormal, StandardNormal)
@kl.register_kl(LowRankMultivariateNormal, StandardNormal)
def _kl_gaussian_standard(
    q: MultivariateNormal | LowRankMultivariateNormal, p: StandardNormal
) -> Tensor:
    """−H[q] − E_q[log N(z; 0, I)], the cross-entropy in closed form."""
    d = q.event_shape[0]
    cross = 0.5 * (q.variance.sum(-1) + q.loc.square().sum(-1)) + d * HALF_LOG_2PI
    return _batched(cross - q.entropy(), p.batch_shape)
