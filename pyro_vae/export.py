"""Arrays out of a trained run: posterior parameters of a split, and samples from the model.

    encode:  mean = μ_φ(x'),  scale = σ_φ(x')   of q(z | x') = N(μ, diag σ²), per item of a split
    sample:  z ~ p(z),  x' ~ p(x' | z)  (or x' = E[x' | z] with ``means``),  x = t⁻¹(x')

x' is the data as the model sees it (:attr:`pyro_vae.bundle.DataBundle.transform`); samples are
returned as the data's own values, ``x`` of shape (n, *item shape): t⁻¹ undoes standardize, and
maps a dequantized x' = (k + u)/d to its level k (:meth:`pyro_vae.bundle.DataBundle.to_values`).
Both run on the CPU.
"""

from __future__ import annotations

import numpy as np
import pyro
import torch

from pyro_vae.bundle import DataBundle
from pyro_vae.vae import VAE

BATCH = 1000  # items per encoder or decoder call


@torch.no_grad()
def encode_split(vae: VAE, bundle: DataBundle, split: str,
                 limit: int | None = None) -> dict[str, np.ndarray]:
    """``mean`` and ``scale`` (N, D) of q(z | x) for the first ``limit`` items of ``split``
    (all by default), and ``labels`` (N,) where the data set has them."""
    x = bundle.split(split)[:limit]
    vae.eval()
    parts = [vae.encode(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    out = {"mean": torch.cat([p[0] for p in parts]).numpy(),
           "scale": torch.cat([p[1] for p in parts]).numpy()}
    labels = bundle.labels.get(split)
    if labels is not None:
        out["labels"] = labels[:limit].numpy()
    return out


@torch.no_grad()
def sample(vae: VAE, bundle: DataBundle, n: int, means: bool = False,
           seed: int = 0) -> dict[str, np.ndarray]:
    """``z`` (n, D) drawn from the prior (z_1, drawn top-down, with stochastic layers) and ``x``
    (n, *shape) drawn from p(x | z), or its mean with ``means``, on the data's own scale;
    seeded, the caller's RNG state untouched."""
    vae.eval()
    zs, xs = [], []
    with torch.random.fork_rng(), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        for start in range(0, n, BATCH):
            z = vae.sample_codes(min(BATCH, n - start))
            out = vae.decoder(z)
            x = vae.likelihood.mean(out) if means else vae.likelihood.forward(out).sample()
            zs.append(z)
            xs.append(bundle.to_values(x.float()))
    x = torch.cat(xs).reshape(n, *bundle.shape)
    return {"x": x.numpy(), "z": torch.cat(zs).numpy()}
