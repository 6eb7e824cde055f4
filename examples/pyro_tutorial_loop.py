"""The loop of Pyro's VAE tutorial, on a VAE built from a spec, then scored.

    python examples/pyro_tutorial_loop.py

Pyro's default mode (global param store): ``vae.model`` and ``vae.guide`` register the VAE with
``pyro.module``, so ``SVI`` with a ``pyro.optim`` optimizer trains every parameter, and
``pyro.get_param_store()`` holds them. The minibatch's row indices go to the data plate, which
scales each batch to the full data set (N/B) and pairs each latent with its row.
"""

import pyro
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO

from inference import log_marginal_likelihood
from pyro_vae import VAE
from pyro_vae.data import DATASETS

pyro.clear_param_store()
pyro.set_rng_seed(0)
bundle = DATASETS.instantiate(DATASETS.parse("digits")).load()  # 8×8 digits, dynamic binarization
vae = VAE.build(bundle.shape, latent_dim=4, encoder={"hidden": [128]}, decoder={"hidden": [128]})
vae.num_data = len(bundle.train)

svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
for epoch in range(30):
    order = torch.randperm(vae.num_data)
    total = 0.0
    for idx in order.split(64):
        total += svi.step(torch.bernoulli(bundle.train[idx]), idx)  # −ELBO × N/B
    if epoch % 10 == 9:
        elbo = -total / len(order.split(64)) / vae.num_data
        print(f"epoch {epoch + 1:2d}: ELBO per image {elbo:.3f}")
print(f"{len(pyro.get_param_store())} parameters in the param store")

with torch.no_grad():
    result = log_marginal_likelihood(vae.model, vae.guide, bundle.test, num_samples=500)
    draws = Predictive(vae.model, num_samples=1)(num=8)["x"]  # Bernoulli draws of x, (1, 8, 64)
print("test", result)
print("prior predictive draws:", tuple(draws.shape))
