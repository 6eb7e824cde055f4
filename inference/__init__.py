"""How any Pyro model and guide is fitted and scored. Never imports pyro_vae."""

from inference.ais import (
    AISOptions,
    AISResult,
    BDMCResult,
    ais_log_marginal_likelihood,
    bdmc,
    beta_schedule,
)
from inference.estimators import (
    ESTIMATORS,
    PointLogWeights,
    make_estimator,
    particle_traces,
    point_log_weights,
)
from inference.gradients import GradientStatistics, GroupStatistics, gradient_statistics
from inference.marginal import (
    MarginalResult,
    chunk_size_for_budget,
    estimate_from_log_weights,
    log_marginal_likelihood,
    measure_bytes_per_particle,
)

__all__ = [
    "ESTIMATORS",
    "AISOptions",
    "AISResult",
    "BDMCResult",
    "GradientStatistics",
    "GroupStatistics",
    "MarginalResult",
    "PointLogWeights",
    "ais_log_marginal_likelihood",
    "bdmc",
    "beta_schedule",
    "chunk_size_for_budget",
    "estimate_from_log_weights",
    "gradient_statistics",
    "log_marginal_likelihood",
    "make_estimator",
    "measure_bytes_per_particle",
    "particle_traces",
    "point_log_weights",
]
