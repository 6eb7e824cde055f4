"""Probabilistic PCA: the linear-Gaussian VAE whose log p(x) and posterior are closed forms.

    z ~ N(0, I_d),    x | z ~ N(W z + b, σ² I_P)
    p(x)     = N(x; b, W Wᵀ + σ² I_P)
    p(z | x) = N(z; M⁻¹ Wᵀ (x − b), σ² M⁻¹),   M = Wᵀ W + σ² I_d

With orthogonal columns of W (Wᵀ W diagonal) the posterior covariance is diagonal, so the
amortized diagonal-Normal guide family (and a linear encoder) contains the exact posterior;
``orthogonal=False`` mixes the columns, so that only a full-covariance guide does.
Model and guide are written as plain Pyro functions, not as pyro_vae modules: the inference
package must work on any model and guide.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch


@dataclass
class PPCA:
    W: torch.Tensor  # (P, d), orthogonal columns unless made with orthogonal=False
    b: torch.Tensor  # (P,)
    sigma: float

    @classmethod
    def make(
        cls, P: int = 6, d: int = 2, sigma: float = 0.5, seed: int = 0, orthogonal: bool = True
    ) -> PPCA:
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(P, d, generator=g, dtype=torch.float64))
        col_norms = torch.linspace(2.0, 1.0, d, dtype=torch.float64)
        W = Q * col_norms
        if not orthogonal:  # column j + 0.8 × columns < j: correlated posteriors
            W = W @ (torch.eye(d, dtype=torch.float64) + 0.8 * torch.ones(d, d).triu(1).double())
        W = W.float()
        b = torch.randn(P, generator=g).float()
        return cls(W=W, b=b, sigma=sigma)

    @property
    def P(self) -> int:
        return self.W.shape[0]

    @property
    def d(self) -> int:
        return self.W.shape[1]

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.d, generator=g)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.P, generator=g)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log N(x; b, W Wᵀ + σ² I), per row, computed in float64."""
        W, b = self.W.double(), self.b.double()
        cov = W @ W.T + self.sigma**2 * torch.eye(self.P, dtype=torch.float64)
        return dist.MultivariateNormal(b, covariance_matrix=cov).log_prob(x.double())

    def posterior_full(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean (n, d) and covariance σ² M⁻¹ (d, d), in float64, any W."""
        W, b = self.W.double(), self.b.double()
        M = W.T @ W + self.sigma**2 * torch.eye(self.d, dtype=torch.float64)
        Minv = torch.linalg.inv(M)
        return (x.double() - b) @ W @ Minv.T, self.sigma**2 * Minv

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean (n, d) and standard deviation (d,) of p(z | x)."""
        W, b = self.W.double(), self.b.double()
        M = W.T @ W + self.sigma**2 * torch.eye(self.d, dtype=torch.float64)
        off_diag = M - torch.diag(torch.diagonal(M))
        assert off_diag.abs().max() < 1e-8, "posterior is diagonal only for orthogonal W"
        Minv = torch.linalg.inv(M)
        loc = (x.double() - b) @ W @ Minv.T
        scale = (self.sigma**2 * torch.diagonal(Minv)).sqrt()
        return loc.float(), scale.float()

    # --- Pyro model and guides as plain functions -------------------------------------------

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, loc_shift: float = 0.0, scale_mult: float = 1.0) -> None:
        """The exact posterior (defaults), or a mismatched one: mean shifted, scale multiplied."""
        loc, scale = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + loc_shift, scale * scale_mult).to_event(1))

    def linear_encoder(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, c, s) with posterior mean A x + c and std s: the exact amortized encoder."""
        W, b = self.W.double(), self.b.double()
        M = W.T @ W + self.sigma**2 * torch.eye(self.d, dtype=torch.float64)
        A = torch.linalg.inv(M) @ W.T  # (d, P)
        c = -(A @ b)
        _, s = self.posterior(torch.zeros(1, self.P))
        return A.float(), c.float(), s
