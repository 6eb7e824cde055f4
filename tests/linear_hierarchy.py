"""A two-layer linear-Gaussian model: the hierarchical VAE whose log p(x) and posterior are
closed forms.

    z₂ ~ N(0, I),    z₁ | z₂ ~ N(A z₂, s₁² I),    x | z₁ ~ N(B z₁, s₀² I)
    p(z₁)          = N(0, C₁),            C₁ = A Aᵀ + s₁² I
    p(x)           = N(0, B C₁ Bᵀ + s₀² I)
    p(z₁, z₂ | x)  = p(z₁ | x) p(z₂ | z₁)     (x ⊥ z₂ | z₁: the posterior factorizes bottom-up)
    p(z₁ | x)      = N(Σ₁ Bᵀ x / s₀², Σ₁),    Σ₁ = (C₁⁻¹ + Bᵀ B / s₀²)⁻¹
    p(z₂ | z₁)     = N(Σ₂ Aᵀ z₁ / s₁², Σ₂),   Σ₂ = (I + Aᵀ A / s₁²)⁻¹

Both posterior factors have full covariances, so ``full_rank`` guides with linear networks
contain them: :meth:`LinearHierarchy.set_exact` writes them into a ``pyro_vae`` VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_vae.networks import MIN_SCALE


@dataclass
class LinearHierarchy:
    A: torch.Tensor  # (d1, d2), float64
    B: torch.Tensor  # (P, d1)
    s1: float
    s0: float

    @classmethod
    def make(cls, P: int = 5, d1: int = 3, d2: int = 2, seed: int = 0) -> LinearHierarchy:
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(d1, d2, generator=g, dtype=torch.float64)
        B = torch.randn(P, d1, generator=g, dtype=torch.float64)
        return cls(A=A, B=B, s1=0.6, s0=0.4)

    @property
    def dims(self) -> tuple[int, int, int]:
        return self.B.shape[0], self.A.shape[0], self.A.shape[1]

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        P, d1, d2 = self.dims
        z2 = torch.randn(n, d2, generator=g, dtype=torch.float64)
        z1 = z2 @ self.A.T + self.s1 * torch.randn(n, d1, generator=g, dtype=torch.float64)
        noise = self.s0 * torch.randn(n, P, generator=g, dtype=torch.float64)
        return (z1 @ self.B.T + noise).float()

    def c1(self) -> torch.Tensor:
        return self.A @ self.A.T + self.s1**2 * torch.eye(self.dims[1], dtype=torch.float64)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.B @ self.c1() @ self.B.T + self.s0**2 * torch.eye(
            self.dims[0], dtype=torch.float64
        )
        return dist.MultivariateNormal(
            torch.zeros(self.dims[0], dtype=torch.float64), covariance_matrix=cov
        ).log_prob(x.double())

    def posterior_maps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(K₁, Σ₁, K₂, Σ₂): E[z₁ | x] = K₁ x, E[z₂ | z₁] = K₂ z₁."""
        d2 = self.dims[2]
        sigma1 = torch.linalg.inv(torch.linalg.inv(self.c1()) + self.B.T @ self.B / self.s0**2)
        eye = torch.eye(d2, dtype=torch.float64)
        sigma2 = torch.linalg.inv(eye + self.A.T @ self.A / self.s1**2)
        return sigma1 @ self.B.T / self.s0**2, sigma1, sigma2 @ self.A.T / self.s1**2, sigma2

    def joint_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """p(z₁, z₂ | x) over the concatenation (z₁, z₂)."""
        return _joint(*self.posterior_maps(), x.double())

    @torch.no_grad()
    def set_exact(self, vae, loc_shift: float = 0.0, scale_mult: float = 1.0) -> None:
        """Write the model and the exact posterior (or a mismatched one: means shifted by
        ``loc_shift``, Cholesky factors times ``scale_mult``) into a two-layer VAE built with
        linear networks (``hidden: []``), full_rank guides, a fixed-scale normal likelihood."""
        k1, sigma1, k2, sigma2 = self.posterior_maps()
        _set_linear(vae.decoder[0], self.B, None)
        _set_linear(vae.conditionals[0].body[0], self.A, torch.full((self.dims[1],), self.s1))
        for posterior, gain, cov in (
            (vae.posteriors[0], k1, sigma1),
            (vae.posteriors[1], k2, sigma2),
        ):
            tril = torch.linalg.cholesky(cov) * scale_mult
            _set_linear(
                posterior.encoder.body[0],
                gain,
                tril.diagonal(),
                tril[posterior.rows, posterior.cols],
                loc_shift,
            )

    def guide_joint(
        self, x: torch.Tensor, loc_shift: float, scale_mult: float
    ) -> dist.MultivariateNormal:
        """q(z₁, z₂ | x) of :meth:`set_exact` with the same mismatch."""
        k1, sigma1, k2, sigma2 = self.posterior_maps()
        l1, l2 = (torch.linalg.cholesky(c) * scale_mult for c in (sigma1, sigma2))
        return _joint(k1, l1 @ l1.T, k2, l2 @ l2.T, x.double(), loc_shift)


def _joint(k1, sigma1, k2, sigma2, x, shift: float = 0.0) -> dist.MultivariateNormal:
    """z₁ ~ N(K₁x + c, Σ₁), z₂ | z₁ ~ N(K₂z₁ + c, Σ₂) as one Gaussian over (z₁, z₂)."""
    d1 = k1.shape[0]
    m1 = x @ k1.T + shift
    m2 = m1 @ k2.T + shift
    cov = torch.cat(
        [
            torch.cat([sigma1, sigma1 @ k2.T], 1),
            torch.cat([k2 @ sigma1, k2 @ sigma1 @ k2.T + sigma2], 1),
        ],
        0,
    )
    assert cov.shape[0] == d1 + k2.shape[0]
    return dist.MultivariateNormal(torch.cat([m1, m2], -1), covariance_matrix=cov)


def _set_linear(
    layer: torch.nn.Linear,
    gain: torch.Tensor,
    scale: torch.Tensor | None,
    lower: torch.Tensor | None = None,
    loc_shift: float = 0.0,
) -> None:
    """out = (gain·in + loc_shift, raw with softplus(raw) + ε = scale, the strictly lower
    Cholesky entries), all rows after the first constant."""
    d = gain.shape[0]
    layer.weight.zero_()
    layer.bias.zero_()
    layer.weight[:d] = gain.float()
    layer.bias[:d] = loc_shift
    if scale is not None:
        target = (scale - MIN_SCALE).double()
        layer.bias[d : 2 * d] = (target + torch.log(-torch.expm1(-target))).float()  # softplus⁻¹
        assert torch.allclose(
            F.softplus(layer.bias[d : 2 * d]).double() + MIN_SCALE, scale.double(), atol=1e-6
        )
    if lower is not None:
        layer.bias[2 * d :] = lower.float()
