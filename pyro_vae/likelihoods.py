"""Likelihoods p(x | z) over flat data x ∈ 𝒳ᴾ: the modules that the entries of the likelihood
registry (:mod:`pyro_vae.components.likelihoods`) build.

The decoder outputs the likelihood's natural parameters, ``m`` per data dimension, laid out
parameter-major: ``out[..., j*P + i]`` is parameter j of dimension i (``m = 1`` except for the
categorical, where the L logits of a pixel are its parameters). A built likelihood maps ``out`` to
a distribution with ``event_shape == (P,)`` (``.to_event(1)``).
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from pyro_vae.components.likelihoods import LIKELIHOODS  # noqa: F401 - its former home


class Likelihood(PyroModule):
    """forward(out) → p(x | z); ``mean(out)`` → E[x | z]; ``support_error(x)`` → message or None."""

    params_per_dim: int = 1
    discrete: bool = False  # log p(x) is a log-probability mass: bits/dim are meaningful

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.forward(out).base_dist.mean  # not __call__: see VAE

    def support_error(self, x: torch.Tensor) -> str | None:
        return None


def _first_bad(x: torch.Tensor, ok: torch.Tensor) -> str:
    bad = x[~ok]
    return f"{int(bad.numel())} values, e.g. {float(bad[0]):g}"


class BernoulliPixels(dist.Independent):
    """Bernoulli(σ(l_i)) over the last dim as one event: log p(x) = Σ_i x_i l_i − softplus(l_i).

    The density of ``Bernoulli(logits=l).to_event(1)`` in two full-size ops and two sums instead
    of torch's five full-size ops (log-sigmoid, 1 − x, ×, −, negation): fewer passes over the
    K × P values, which importance sampling spends most time on after the decoder's matmuls
    (``python -m benchmarks --only is`` measures it).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        return (logits * value).sum(-1) - F.softplus(logits).sum(-1)


class BernoulliLikelihood(Likelihood):
    """x_i ~ Bernoulli(σ(l_i)): log p = Σ_i x_i l_i − softplus(l_i)."""

    discrete = True

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return BernoulliPixels(dist.Bernoulli(logits=out, validate_args=False), 1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def support_error(self, x: torch.Tensor) -> str | None:
        ok = (x == 0) | (x == 1)
        if bool(ok.all()):
            return None
        fix = (
            "set data.binarize to dynamic or static, or use likelihood continuous_bernoulli"
            if bool(((x >= 0) & (x <= 1)).all())
            else "the data leave [0, 1], so binarizing cannot help: use likelihood normal or laplace"
        )
        return f"bernoulli needs data in {{0, 1}}, found {_first_bad(x, ok)}; {fix}"


class ContinuousBernoulliLikelihood(Likelihood):
    """x_i ∈ [0, 1] ~ CB(λ_i) (Loaiza-Ganem & Cunningham 2019): C(λ) λˣ (1 − λ)¹⁻ˣ, λ = σ(l)."""

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out, validate_args=False).to_event(1)

    def support_error(self, x: torch.Tensor) -> str | None:
        ok = (x >= 0) & (x <= 1)
        if bool(ok.all()):
            return None
        return f"continuous_bernoulli needs data in [0, 1], found {_first_bad(x, ok)}"


class LocScaleLikelihood(Likelihood):
    """x_i ~ D(μ_i, s) with μ from the decoder and s fixed, one learned scalar, or learned per i."""

    family: ClassVar[type[dist.TorchDistribution]]

    def __init__(self, data_dim: int, scale: float, learn: str) -> None:
        super().__init__()
        init = torch.full((data_dim,) if learn == "per_dim" else (), float(scale))
        if learn == "fixed":
            self.register_buffer("scale", init)
        else:
            self.scale = PyroParam(init, constraint=constraints.positive)

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return self.family(out, self.scale, validate_args=False).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


class NormalLikelihood(LocScaleLikelihood):
    """x_i ~ N(μ_i, s²)."""

    family = dist.Normal


class LaplaceLikelihood(LocScaleLikelihood):
    """x_i ~ Laplace(μ_i, s): log p = −|x_i − μ_i|/s − log 2s."""

    family = dist.Laplace


class CategoricalLikelihood(Likelihood):
    """x_i ∈ {0, …, L−1} ~ Categorical(softmax(l_i)), l_i ∈ ℝᴸ: for integer-valued pixels."""

    discrete = True

    def __init__(self, data_dim: int, levels: int) -> None:
        super().__init__()
        self.data_dim, self.levels = data_dim, levels
        self.params_per_dim = levels

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        return out.unflatten(-1, (self.levels, self.data_dim)).transpose(-1, -2)

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Categorical(logits=self._logits(out), validate_args=False).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self._logits(out), dim=-1)
        return probs @ torch.arange(self.levels, dtype=probs.dtype, device=probs.device)

    def support_error(self, x: torch.Tensor) -> str | None:
        ok = (x >= 0) & (x <= self.levels - 1) & (x == x.round())
        if bool(ok.all()):
            return None
        return (
            f"categorical with {self.levels} levels needs integers in 0..{self.levels - 1}, "
            f"found {_first_bad(x, ok)}; set data.values: integer"
        )


class DiscretizedLogisticMixture(dist.TorchDistribution):
    """Per pixel, a mixture of C logistics discretized to the L levels k = 0..L−1 (Salimans et
    al. 2017, PixelCNN++, eq. 2, without its coupling of colour channels). With the level at
    y = 2k/(L−1) − 1 ∈ [−1, 1], bins of half-width δ = 1/(L−1) and a_c, b_c = (y ± δ − μ_c)/s_c,

        P(k) = Σ_c π_c [σ(a_c) − σ(b_c)],   σ(a) → 1 at k = L−1 and σ(b) → 0 at k = 0,

    so the L probabilities telescope to 1. In logs, stably: σ(a) − σ(b) = σ(a) σ(−b) (1 − e^(b−a)),
    log P_c(k) = −softplus(−a) − softplus(b) + log(−expm1(b − a)), each factor dropped at the end
    where it is 1. ``logits``, ``loc``, ``log_scale`` are (..., C); values are the levels k, or
    k/(L−1) with ``unit`` (a relabelling of the same masses: no Jacobian).
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        log_scale: torch.Tensor,
        levels: int,
        unit: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        self.logits = logits.log_softmax(-1)
        self.loc, self.log_scale = loc, log_scale.clamp(min=-7.0)
        self.levels, self.step = levels, 1.0 / (levels - 1) if unit else 1.0
        super().__init__(logits.shape[:-1], validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = (value / self.step).round().unsqueeze(-1)
        y = 2 * k / (self.levels - 1) - 1
        inv_scale, half = (-self.log_scale).exp(), 1.0 / (self.levels - 1)
        a, b = (y + half - self.loc) * inv_scale, (y - half - self.loc) * inv_scale
        top, bottom = k == self.levels - 1, k == 0
        log_p = (
            torch.where(top, 0.0, -F.softplus(-a))
            + torch.where(bottom, 0.0, -F.softplus(b))
            + torch.where(top | bottom, 0.0, torch.log(-torch.expm1(b - a)))
        )
        return torch.logsumexp(self.logits + log_p, -1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            c = dist.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            loc = self.loc.expand(shape + self.loc.shape[-1:]).gather(-1, c).squeeze(-1)
            log_s = self.log_scale.expand(shape + self.loc.shape[-1:]).gather(-1, c).squeeze(-1)
            u = torch.rand(shape, dtype=loc.dtype, device=loc.device).clamp(1e-6, 1 - 1e-6)
            y = loc + log_s.exp() * (u.log() - (-u).log1p())
            return ((y + 1) * (self.levels - 1) / 2).round().clamp(0, self.levels - 1) * self.step

    @property
    def mean(self) -> torch.Tensor:
        """Σ_c π_c μ_c in data units, clipped to the range (ignoring the mass the ends collect)."""
        y = (self.logits.exp() * self.loc).sum(-1).clamp(-1, 1)
        return (y + 1) * (self.levels - 1) / 2 * self.step


class DiscretizedLogisticLikelihood(Likelihood):
    """x_i on L levels ~ a mixture of C discretized logistics (:class:`DiscretizedLogisticMixture`),
    the decoder giving 3C parameters per dimension (mixture logits, locations, log-scales); x in
    levels 0..L−1 (``integer``) or in [0, 1] as k/(L−1) (``unit``)."""

    discrete = True

    def __init__(self, data_dim: int, levels: int, components: int, unit: bool) -> None:
        super().__init__()
        self.data_dim, self.levels, self.components, self.unit = data_dim, levels, components, unit
        self.params_per_dim = 3 * components

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        params = out.unflatten(-1, (self.params_per_dim, self.data_dim)).transpose(-1, -2)
        return DiscretizedLogisticMixture(
            *params.split(self.components, -1), self.levels, self.unit, validate_args=False
        ).to_event(1)

    def support_error(self, x: torch.Tensor) -> str | None:
        k = x * (self.levels - 1) if self.unit else x
        ok = (k >= 0) & (k <= self.levels - 1) & ((k - k.round()).abs() < 1e-3)
        if bool(ok.all()):
            return None
        grid = (
            f"{{0, 1/{self.levels - 1}, …, 1}}"
            if self.unit
            else f"the integers 0..{self.levels - 1}"
        )
        form = "unit" if self.unit else "integer"
        return (
            f"discretized_logistic with values: {form} needs data on {grid}, found "
            f"{_first_bad(x, ok)}; set likelihood.values as data.values"
        )
