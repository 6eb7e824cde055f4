"""Build a VAE from a spec (or keywords) and train it in your own loop.

    python examples/own_svi_loop.py

The registries give the parts; ``vae.model`` / ``vae.guide`` are ordinary Pyro callables and any
ELBO works (ours from ``inference.make_estimator`` or Pyro's). This is Pyro's module route, as the
training loop runs it: inside ``pyro.settings.context(module_local_params=True)`` the parameters
stay in the modules, ``elbo(model, guide)`` is an ``nn.Module`` whose forward is the loss, and a
torch optimiser steps ``vae.parameters()``. (For Pyro's default mode, ``SVI`` with a ``pyro.optim``
optimiser, see ``pyro_tutorial_loop.py``.) Each batch comes with its row indices for the data plate.
"""

import pyro
import torch

from inference import log_marginal_likelihood, make_estimator
from pyro_vae import VAE, load_spec
from pyro_vae.data import DATASETS

pyro.set_rng_seed(0)
spec = load_spec("examples/configs/prior-mixture.yaml", ["latent_dim=4"])
bundle = DATASETS.instantiate(spec.data).load()  # digits, dynamically binarized
vae = VAE.from_spec(spec, bundle.shape, bundle.levels, bundle.train)
# the same model from keywords:
#   VAE.build((1, 8, 8), latent_dim=4, prior={"name": "mixture", "components": 10})
vae.num_data = len(bundle.train)  # the data plate scales each minibatch to the full data

with pyro.settings.context(module_local_params=True):
    loss_fn = make_estimator("dreg", particles=4)(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for epoch in range(15):
        total = 0.0
        for idx in torch.randperm(vae.num_data).split(64):
            x = torch.bernoulli(bundle.train[idx])
            optimizer.zero_grad()
            loss = loss_fn(x, idx)  # −bound, summed over the batch and scaled by N/B
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x) / vae.num_data
        if epoch % 5 == 4:
            print(f"epoch {epoch + 1:2d}: IWAE-4 bound per image {-total / vae.num_data:8.3f}")

    with torch.no_grad():
        result = log_marginal_likelihood(vae.model, vae.guide, bundle.test, num_samples=500)
print("test", result)
