"""Probabilistic PCA with a mixture-of-Gaussians latent: a discrete latent whose sum is known.

    y ~ Cat(π),    z | y ~ N(μ_y, I_d),    x | z ~ N(W z + b, σ² I_P)
    p(x)        = Σ_y π_y N(x; W μ_y + b, C),       C = W Wᵀ + σ² I_P
    p(y | x)    ∝ π_y N(x; W μ_y + b, C)
    p(z | x, y) = N(m_y, S),    S = σ² M⁻¹,  M = Wᵀ W + σ² I_d,  m_y = M⁻¹ (σ² μ_y + Wᵀ (x − b))

so p(z | x) is a mixture of Gaussians with one covariance S; its moments are
E[z | x] = Σ_y p(y | x) m_y and Cov[z | x] = S + Σ_y p(y | x) (m_y − E[z | x])(m_y − E[z | x])ᵀ.
The model comes three ways: y marked for enumeration, y left to be sampled, and y summed by
hand in a mixture prior for z (no discrete site at all); a Gaussian guide matches p(z | x)'s
moments. Plain Pyro functions, as in :mod:`ppca`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from ppca import PPCA


@dataclass
class MixturePPCA:
    ppca: PPCA  # W, b, σ
    mu: torch.Tensor  # (Y, d) component means
    logits: torch.Tensor  # (Y,) log π up to a constant

    @classmethod
    def make(cls, components: int = 3, spread: float = 2.5, seed: int = 0) -> MixturePPCA:
        ppca = PPCA.make(P=6, d=2, sigma=0.5, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        mu = spread * torch.randn(components, ppca.d, generator=g)
        logits = torch.randn(components, generator=g)
        return cls(ppca=ppca, mu=mu, logits=logits)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        y = torch.multinomial(self.logits.softmax(0), n, replacement=True, generator=g)
        z = self.mu[y] + torch.randn(n, self.ppca.d, generator=g)
        noise = self.ppca.sigma * torch.randn(n, self.ppca.P, generator=g)
        return z @ self.ppca.W.T + self.ppca.b + noise

    def _marginals(self, x: torch.Tensor) -> torch.Tensor:
        """log π_y + log N(x; W μ_y + b, C), (n, Y), in float64."""
        W, b, sigma = self.ppca.W.double(), self.ppca.b.double(), self.ppca.sigma
        cov = W @ W.T + sigma**2 * torch.eye(self.ppca.P, dtype=torch.float64)
        loc = self.mu.double() @ W.T + b  # (Y, P)
        log_lik = dist.MultivariateNormal(loc, covariance_matrix=cov).log_prob(x.double()[:, None])
        return self.logits.double().log_softmax(0) + log_lik

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log Σ_y π_y N(x; W μ_y + b, C) per row, float64."""
        return self._marginals(x).logsumexp(-1)

    def posterior_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (n, d) and covariance (n, d, d) of p(z | x), float64."""
        W, b, sigma = self.ppca.W.double(), self.ppca.b.double(), self.ppca.sigma
        M = W.T @ W + sigma**2 * torch.eye(self.ppca.d, dtype=torch.float64)
        Minv = torch.linalg.inv(M)
        m = (sigma**2 * self.mu.double() + ((x.double() - b) @ W)[:, None]) @ Minv.T  # (n, Y, d)
        r = self._marginals(x).softmax(-1)  # p(y | x), (n, Y)
        mean = (r[..., None] * m).sum(1)
        dev = m - mean[:, None]
        spread = (r[..., None, None] * dev[..., :, None] * dev[..., None, :]).sum(1)
        return mean, sigma**2 * Minv + spread

    # --- Pyro model and guide as plain functions -------------------------------------------

    def model(self, x: torch.Tensor, enumerate: bool = True) -> None:
        """y marked for enumeration (``enumerate``) or left to be sampled."""
        infer = {"enumerate": "parallel"} if enumerate else {}
        W, b, sigma = self.ppca.W, self.ppca.b, self.ppca.sigma
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=self.logits), infer=infer)
            z = pyro.sample("z", dist.Normal(self.mu[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, sigma).to_event(1), obs=x)

    def mixture_prior_model(self, x: torch.Tensor) -> None:
        """The same p(x, z) with y summed inside the prior of z: no discrete site."""
        W, b, sigma = self.ppca.W, self.ppca.b, self.ppca.sigma
        prior = dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits), dist.Normal(self.mu, 1.0).to_event(1)
        )
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ W.T + b, sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, scale_mult: float = 1.0) -> None:
        """q(z | x) = N(E[z | x], s² Cov[z | x]): p(z | x)'s moments matched (s = 1), or a
        scale ``s`` off."""
        mean, cov = self.posterior_moments(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean.float(), scale_mult**2 * cov.float()))
