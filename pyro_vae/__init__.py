"""pyro-vae: declarative variational autoencoders in Pyro.

    from pyro_vae import VAE, load_spec
    vae = VAE.from_spec(load_spec("examples/configs/digits.yaml"), shape=(1, 8, 8))
"""

from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, dump_spec, load_spec
from pyro_vae.vae import VAE

__all__ = ["VAE", "Spec", "SpecError", "dump_spec", "load_spec"]
