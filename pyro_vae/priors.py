"""Priors p(z) over the latent code z ∈ ℝᴰ: the modules that the entries of the prior registry
(:mod:`pyro_vae.components.priors`) build. Calling one returns a distribution with
``batch_shape == ()`` and ``event_shape == (D,)``, which the data plate broadcasts over the
minibatch.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints, transforms
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_vae import distributions as gaussians
from pyro_vae.components.priors import PRIORS  # noqa: F401 - its former home


class Prior(PyroModule):
    """A module whose forward() returns p(z)."""

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError


class DiagonalNormalMixture(dist.MixtureSameFamily):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), π = softmax(logits) (K,), locs and scales (K, D),
    scored without a (…, K, D) tensor. batch_shape is () until expanded; sampling is
    MixtureSameFamily's (no rsample).

    With z̃ = z − m and μ̃_k = μ_k − m for a fixed centre m (the mean of the μ_k), the square
    expands into one (…, 2D) × (2D, K) matmul, so the largest intermediate is (…, K):

        a_k(z) = log π_k + log N(z; μ_k, diag σ_k²) = [z̃², z̃] · [−1/(2σ_k²), μ̃_k/σ_k²] + c_k,
        c_k = log π_k − ½ Σ_d μ̃_kd²/σ_kd² − Σ_d log σ_kd − (D/2) log 2π,
        log p(z) = logsumexp_k a_k(z).

    Cancellation: the expanded terms are of size (z̃² + μ̃_k²)/σ_k² while (z − μ_k)²/σ_k² is O(1)
    for the components that carry the mass, so a_k has an absolute rounding error ~ε·Σ_d (z̃² +
    μ̃_kd²)/σ_kd² (float32 ε = 6·10⁻⁸; D = 50, |μ̃| ≈ 3, σ ≈ 0.05: 0.02-0.07 nats). Two cheap steps
    bring it back to the explicit float32 mixture's (≤ 10⁻⁴ nats there): the centring, which
    removes what the μ_k share (components that sit together, as at the VampPrior's start), and
    rescoring the leading component k* = argmax_k a_k directly (one component carrying the mass),

        log p(z) = logsumexp_k a_k(z) + (log π_k* + log N(z; μ_k*, diag σ_k*²) − a_k*(z)),

    exact in exact arithmetic. Left: several tight components sharing the mass far from m (float32,
    10 groups of 50 near-copies at |μ̃| ≈ 3: 0.03 nats at σ = 0.05, 0.2 at σ = 0.02); a VampPrior
    trained on digits (K = 100, D = 8) is off by 7·10⁻⁶. All in the input dtype: nothing is upcast.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        scales: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if logits.dim() != 1 or locs.dim() != 2:
            raise ValueError(
                f"logits must be (K,) and locs, scales (K, D), got "
                f"{tuple(logits.shape)} and {tuple(locs.shape)}"
            )
        super().__init__(
            dist.Categorical(logits=logits),
            dist.Normal(locs, scales).to_event(1),
            validate_args=validate_args,
        )
        self._log_pi = self.mixture_distribution.logits  # normalised
        self._locs, self._scales = locs, scales
        self._centre = locs.detach().mean(0)  # m: log p(z) does not depend on it
        shifted, precision = locs - self._centre, scales.pow(-2)
        self._weights = torch.cat([-0.5 * precision, shifted * precision], -1)  # (K, 2D)
        self._bias = (
            self._log_pi
            - 0.5 * (shifted.square() * precision).sum(-1)
            - scales.log().sum(-1)
            - locs.shape[-1] * gaussians.HALF_LOG_2PI
        )

    def expand(
        self, batch_shape: torch.Size, _instance: DiagonalNormalMixture | None = None
    ) -> DiagonalNormalMixture:
        new = self._get_checked_instance(DiagonalNormalMixture, _instance)
        new = super().expand(batch_shape, _instance=new)
        for name in ("_log_pi", "_locs", "_scales", "_centre", "_weights", "_bias"):
            setattr(new, name, getattr(self, name))  # (K, …): log_prob broadcasts them
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        centred = value - self._centre
        features = torch.cat([centred.square(), centred], -1)
        scores = torch.addmm(
            self._bias, features.reshape(-1, features.shape[-1]), self._weights.mT
        ).reshape(*features.shape[:-1], -1)
        top, k = scores.max(-1)
        exact = self._log_pi[k] + gaussians.DiagonalNormal(self._locs[k], self._scales[k]).log_prob(
            value
        )
        # logsumexp_k a_k − a_k* + exact, with a_k* as the shift
        log_p = exact + (scores - top.unsqueeze(-1)).exp().sum(-1).log()
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return gaussians.StandardNormal(self.loc)


class LearnedNormalPrior(Prior):
    """p(z) = N(μ, diag σ²), μ and σ learned."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return gaussians.DiagonalNormal(self.loc, self.scale)


class MixturePrior(Prior):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), all of π, μ, σ learned (K components)."""

    def __init__(self, latent_dim: int, components: int, spread: float, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logits = PyroParam(torch.zeros(components))
        self.locs = PyroParam(spread * torch.randn(components, latent_dim, generator=g))
        self.scales = PyroParam(torch.ones(components, latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return DiagonalNormalMixture(self.logits, self.locs, self.scales)


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

    def __init__(
        self, encoder: nn.Module, pseudo_inputs: torch.Tensor, low: float, high: float
    ) -> None:
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
        return DiagonalNormalMixture(torch.zeros(loc.shape[0], device=loc.device), loc, scale)


class FlowPrior(Prior):
    """A masked autoregressive flow on N(0, I) (Papamakarios et al. 2017), f = f_K ∘ … ∘ f_1:

        p(z) = N(f(z); 0, I) · |det ∂f/∂z|,   f_k(v)_i = μ_ki(v_<i) + σ_ki(v_<i) · v_i,

    Pyro's ``affine_autoregressive`` maps (a MADE network each, its own random variable order),
    applied in the density's direction: log p(z) costs one pass per map and log |det ∂f_k/∂v| =
    Σ_i log σ_ki comes from Pyro. Drawing z inverts each map sequentially (D passes).
    """

    def __init__(self, latent_dim: int, flows: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.flows = nn.ModuleList(
            [transforms.affine_autoregressive(latent_dim, list(hidden)) for _ in range(flows)]
        )

    def forward(self) -> dist.TorchDistribution:
        return dist.TransformedDistribution(
            gaussians.StandardNormal(self.loc), [f.inv for f in reversed(self.flows)]
        )
