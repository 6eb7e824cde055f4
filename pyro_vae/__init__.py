"""pyro-vae: declarative variational autoencoders in Pyro.

    from pyro_vae import VAE, load_spec, load_run
    vae = VAE.from_spec(load_spec("examples/configs/digits.yaml"), shape=(1, 8, 8))
    vae, spec = load_run("runs/digits")          # a trained run: its VAE and resolved spec
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, dump_spec, load_spec

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.vae import VAE


def __getattr__(name: str) -> Any:
    """``VAE``, imported on first use: ``import pyro_vae`` (and validating a spec) imports
    neither torch nor Pyro."""
    if name == "VAE":
        from pyro_vae.vae import VAE

        return VAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_run(path: str | os.PathLike[str]) -> tuple[VAE, Spec]:
    """The VAE of the run directory ``path`` with the weights ``pyro-vae evaluate`` scores (in
    eval mode): ``checkpoints/best.ckpt`` (the best validation ELBO) when the run stops early on
    it, else the last checkpoint; and the run's spec (its ``config.yaml``). Rebuilding it loads
    the run's data set (its shape, and the range a VampPrior clips to); a component named
    ``module:Class`` in the spec must be importable. SpecError when ``path`` is not a run
    directory or has no checkpoint. The caller's random states (torch, NumPy, Python) are left
    as they were, though the rebuild seeds them with the run's ``train.seed``."""
    from pyro_vae.engine import RngState  # Lightning: imported on use only
    from pyro_vae.prepared import SEED_VARIABLE
    from pyro_vae.prepared import load_run as load_prepared

    states, seed = RngState(), os.environ.get(SEED_VARIABLE)
    saved = states.state_dict()
    try:
        prepared = load_prepared(Path(path))
    finally:
        states.load_state_dict(saved)
        if seed is None:
            os.environ.pop(SEED_VARIABLE, None)
        else:
            os.environ[SEED_VARIABLE] = seed
    return prepared.vae.eval(), prepared.spec


__all__ = ["VAE", "Spec", "SpecError", "dump_spec", "load_run", "load_spec"]
