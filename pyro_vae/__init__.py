"""pyro-vae: declarative variational autoencoders in Pyro."""
