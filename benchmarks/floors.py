"""The reference implementations our code is timed against, all on copies of the same networks.

* :class:`PlainVAE`: the plain-PyTorch VAE training loss, hand-written (the floor of a step):

      L = −(N/B) Σ_b [Σ_i x_bi l_bi − softplus(l_bi)] + (N/B) Σ_b KL(N(μ_b, σ_b²) ‖ N(0, I)),
      KL = ½ Σ_d (μ_d² + σ_d² − 1 − 2 log σ_d)       (Kingma & Welling 2014, appendix B)

  with l = decoder(μ + σ ε), ε ~ N(0, I), as ``binary_cross_entropy_with_logits(sum)``.
* :func:`floor_log_px`: importance-sampled log p(x), plain PyTorch, ``points`` points per call and
  their particles in chunks of ``chunk`` (the plan of :func:`pyro_vae.scoring.plan_chunks`):

      log w_k = log p(x | z_k) + log N(z_k; 0, I) − log N(z_k; μ, σ²),   z_k = μ + σ ε_k
              = Σ_i x_i l_ki − softplus(l_ki) − ½‖z_k‖² + ½‖ε_k‖² + Σ_d log σ_d,
      log p̂(x) = logsumexp_k log w_k − log K.
* :func:`copies_log_px`: the pattern of the older VAE libraries: a Python loop over the data
  points, each image repeated K times and pushed through encoder and decoder in one batch,
  probabilities (sigmoid) and ``binary_cross_entropy``, ``torch.distributions`` densities.
* :func:`pyro_importance_log_px`: what a Pyro user has today: ``pyro.infer.Importance`` on the
  model and guide, one data point at a time (it draws its K samples one trace at a time).
"""

from __future__ import annotations

import copy
import math

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_vae.vae import VAE


class PlainVAE(nn.Module):
    """Copies of a VAE's encoder and decoder with the hand-written loss above."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(vae.encoder)
        self.decoder = copy.deepcopy(vae.decoder)
        self.num_data = vae.num_data

    def loss(self, x: Tensor) -> Tensor:
        loc, scale = self.encoder(x)
        logits = self.decoder(loc + scale * torch.randn_like(loc))
        recon = -F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (loc.square() + scale.square() - 1).sum() - scale.log().sum()
        return -((self.num_data or len(x)) / len(x)) * (recon - kl)

    @torch.no_grad()
    def elbo(self, x: Tensor) -> Tensor:
        """Mean one-sample ELBO per point (the validation pass of a plain training loop)."""
        return -self.loss(x) / (self.num_data or len(x))


@torch.no_grad()
def floor_log_px(
    encoder: nn.Module, decoder: nn.Module, x: Tensor, num_samples: int, chunk: int, points: int = 1
) -> Tensor:
    """log p̂(x_b) for each row of x, plain PyTorch (module docstring), ``points`` rows per
    encoder call and their particles in chunks of ``chunk``."""
    out = []
    for i in range(0, len(x), points):
        block = x[i : i + points]
        loc, scale = encoder(block)
        parts = []
        for start in range(0, num_samples, chunk):
            eps = torch.randn(min(chunk, num_samples - start), *loc.shape, device=x.device)
            z = loc + scale * eps
            logits = decoder(z)
            recon = (logits * block).sum(-1) - F.softplus(logits).sum(-1)
            parts.append(
                recon - 0.5 * z.square().sum(-1) + 0.5 * eps.square().sum(-1) + scale.log().sum(-1)
            )
        out.append(torch.logsumexp(torch.cat(parts), 0) - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def copies_log_px(encoder: nn.Module, decoder: nn.Module, x: Tensor, num_samples: int) -> Tensor:
    """log p̂(x_b), the older libraries' way: per point, K copies through both networks."""
    out = []
    for point in x:
        copies = point.expand(num_samples, -1)
        loc, scale = encoder(copies)
        q = torch.distributions.Normal(loc, scale)
        z = q.rsample()
        probs = torch.sigmoid(decoder(z))
        recon = -F.binary_cross_entropy(probs, copies, reduction="none").sum(-1)
        prior = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
        log_w = recon + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        out.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.stack(out)


def pyro_importance_log_px(vae: VAE, x: Tensor, num_samples: int) -> Tensor:
    """log p̂(x_b) from ``pyro.infer.Importance``, one point at a time, Pyro's defaults."""
    num_data, vae.num_data = vae.num_data, None  # a plate over the one point: scale 1
    try:
        out = []
        for point in x:
            posterior = pyro.infer.Importance(vae.model, vae.guide, num_samples=num_samples)
            out.append(posterior.run(point[None]).get_log_normalizer().detach())
        return torch.stack(out)
    finally:
        vae.num_data = num_data
