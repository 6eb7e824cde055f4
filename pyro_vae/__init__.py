"""pyro-vae: declarative variational autoencoders in Pyro.

    from pyro_vae import VAE, load_spec, load_run
    vae = VAE.from_spec(load_spec("examples/configs/digits.yaml"), shape=(1, 8, 8))
    vae, spec = load_run("runs/digits")          # a trained run: its VAE and resolved spec
"""

from __future__ import annotations

import os
from pathlib import Path

from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, dump_spec, load_spec
from pyro_vae.vae import VAE


def load_run(path: str | os.PathLike[str]) -> tuple[VAE, Spec]:
    """The VAE of the run directory ``path`` with the weights ``pyro-vae evaluate`` scores (in
    eval mode): ``checkpoints/best.ckpt`` (the best validation ELBO) when the run stops early on
    it, else the last checkpoint; and the run's spec (its ``config.yaml``). Rebuilding it loads
    the run's data set (its shape, and the range a VampPrior clips to); a component named
    ``module:Class`` in the spec must be importable. SpecError when ``path`` is not a run
    directory or has no checkpoint."""
    from pyro_vae.train import load_run as load_prepared  # Lightning: imported on use only

    prepared = load_prepared(Path(path))
    return prepared.vae.eval(), prepared.spec


__all__ = ["VAE", "Spec", "SpecError", "dump_spec", "load_run", "load_spec"]
