"""The registries of components and their built-in entries, without torch: what a spec may name
(:mod:`.priors`, :mod:`.likelihoods`, :mod:`.guides`, :mod:`.networks`, :mod:`.estimators`; data
sets are in :mod:`pyro_vae.data`), each entry a frozen dataclass of its spec parameters whose
``__post_init__`` checks their ranges. Validating a spec imports only these; an entry's ``build``
(``encoder``, ``decoder``) imports the torch modules that implement it
(:mod:`pyro_vae.priors`, ...) when it is called."""
