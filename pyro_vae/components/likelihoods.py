"""The likelihood registry: p(x | z) by name, each entry's ``build`` making a module of
:mod:`pyro_vae.likelihoods` (imported on the call)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pyro_vae.entries import LikelihoodEntry
from pyro_vae.registry import Registry, SpecError, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.likelihoods import Likelihood

LIKELIHOODS: Registry[LikelihoodEntry] = Registry("likelihood", LikelihoodEntry)


@LIKELIHOODS.register("bernoulli")
@frozen_params
class Bernoulli(LikelihoodEntry):
    """Binary data; the decoder outputs logits."""

    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        from pyro_vae.likelihoods import BernoulliLikelihood

        return BernoulliLikelihood()


@LIKELIHOODS.register("continuous_bernoulli")
@frozen_params
class ContinuousBernoulli(LikelihoodEntry):
    """Data in [0, 1], properly normalised; the decoder outputs logits."""

    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        from pyro_vae.likelihoods import ContinuousBernoulliLikelihood

        return ContinuousBernoulliLikelihood()


@frozen_params
class _LocScale(LikelihoodEntry):
    scale: float = 1.0
    learn: Literal["fixed", "global", "per_dim"] = "per_dim"

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a positive number, got {self.scale}")


@LIKELIHOODS.register("normal")
@frozen_params
class Normal(_LocScale):
    """Real data; ``scale`` is the fixed value or the initial one of the learned scale."""

    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        from pyro_vae.likelihoods import NormalLikelihood

        return NormalLikelihood(data_dim, self.scale, self.learn)


@LIKELIHOODS.register("laplace")
@frozen_params
class Laplace(_LocScale):
    """Real data with heavier tails; ``scale`` as for normal."""

    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        from pyro_vae.likelihoods import LaplaceLikelihood

        return LaplaceLikelihood(data_dim, self.scale, self.learn)


@frozen_params
class _Levelled(LikelihoodEntry):
    levels: int | None = None

    def __post_init__(self) -> None:
        if self.levels is not None and self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")

    def _levels(self, data_levels: int | None) -> int:
        """``levels``, else the data set's; a SpecError when neither is known."""
        n = self.levels or data_levels
        if n is None:
            raise SpecError(
                "likelihood.levels",
                "this data set has no known number of levels; set likelihood.levels",
            )
        return n


@LIKELIHOODS.register("categorical")
@frozen_params
class Categorical(_Levelled):
    """Integer pixels in 0..levels−1; ``levels`` defaults to the data set's (17 for digits)."""

    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        from pyro_vae.likelihoods import CategoricalLikelihood

        return CategoricalLikelihood(data_dim, self._levels(levels))


@LIKELIHOODS.register("discretized_logistic")
@frozen_params
class DiscretizedLogistic(_Levelled):
    """Pixels on ``levels`` grey levels (default: the data set's) as a mixture of ``components``
    discretized logistics; ``values`` says how the data hold them, as ``data.values`` does."""

    components: int = 5
    values: Literal["unit", "integer"] = "unit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.components < 1:
            raise ValueError(f"components must be >= 1, got {self.components}")

    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        from pyro_vae.likelihoods import DiscretizedLogisticLikelihood

        return DiscretizedLogisticLikelihood(
            data_dim, self._levels(levels), self.components, self.values == "unit"
        )
