"""Score your own Pyro model: importance-sampled log p(x) per data point, with standard errors.

The model is factor analysis, not a VAE from the registry:

    z ~ N(0, I_d),    x | z ~ N(W z + b, diag(ψ)),    so    p(x) = N(x; b, W Wᵀ + diag(ψ)).

Its exact posterior is a Gaussian with full covariance; the guide is an amortized diagonal
Gaussian q(z | x) = N(A x + c, diag(s²)), so the importance weights vary, and the estimate can be
checked against the closed form. Both are plain ``nn.Module``s, fitted briefly with Trace_ELBO.

    python examples/score_own_model.py
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from inference import MarginalResult, log_marginal_likelihood

P, D, N = 8, 2, 1000  # observed dims, latent dims, data points


class FactorAnalysis(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(0.1 * torch.randn(P, D))
        self.b = nn.Parameter(torch.zeros(P))
        self.log_psi = nn.Parameter(torch.zeros(P))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
            noise = (0.5 * self.log_psi).exp()
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, noise).to_event(1), obs=x)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + torch.diag(self.log_psi.exp())
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)


class DiagonalGuide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(P, D)
        self.log_s = nn.Parameter(torch.zeros(D))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(self.encoder(x), self.log_s.exp()).to_event(1))


def make_data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(P, D, generator=g)
    noise = torch.linspace(0.2, 1.0, P)
    return torch.randn(N, D, generator=g) @ W.T + 1.0 + noise * torch.randn(N, P, generator=g)


def fit(
    model: nn.Module, guide: nn.Module, x: torch.Tensor, steps: int = 400, batch: int = 100
) -> None:
    loss = pyro.infer.Trace_ELBO()(model, guide)
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(steps):
        idx = torch.randint(N, (batch,))
        opt.zero_grad()
        loss(x[idx], idx).backward()
        opt.step()


@pyro.settings.context(module_local_params=True)  # parameters in the modules, for this run only
def main() -> None:
    pyro.set_rng_seed(0)
    x = make_data()
    model, guide = FactorAnalysis(), DiagonalGuide()
    fit(model, guide, x)

    # Score the whole data set in batches of 250 points, K = 1000 particles each.
    batches = torch.arange(N).split(250)
    result = MarginalResult.cat(
        [log_marginal_likelihood(model, guide, x[idx], idx, num_samples=1000) for idx in batches]
    )
    with torch.no_grad():
        exact = model.exact_log_px(x)

    print("point   log p(x) estimate      ESS/K   ELBO      exact")
    for i in range(5):
        print(
            f"{i:5d}   {result.log_px[i]:8.3f} ± {result.stderr[i]:.3f}   "
            f"{result.ess[i] / result.num_samples:5.2f}   {result.elbo[i]:8.3f}  {exact[i]:8.3f}"
        )
    print(result)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in result.summary().items()})
    print(f"exact mean log p(x) = {exact.mean():.3f}")


if __name__ == "__main__":
    main()
