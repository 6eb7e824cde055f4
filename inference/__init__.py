"""How any Pyro model and guide is fitted and scored. Never imports pyro_vae."""

from inference.marginal import (
    MarginalResult,
    chunk_size_for_budget,
    estimate_from_log_weights,
    log_marginal_likelihood,
    measure_bytes_per_particle,
)
