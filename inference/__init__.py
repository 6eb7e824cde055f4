"""How any Pyro model and guide is fitted and scored. Never imports pyro_vae."""
