"""The estimator registry: ELBO estimators by name, for continuous latents (trace ... dreg) and
discrete ones (enum, reinforce, gumbel), each entry's ``build`` making the class of
:mod:`inference.estimators` of that name (imported on the call), and :func:`make_elbo`, the ELBO
that a spec's estimator names. An estimator of one's own is an :class:`EstimatorEntry` or,
directly, a ``pyro.infer.ELBO`` subclass whose ``__init__`` keywords are its spec keys."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, ClassVar, Literal

from pyro_vae.entries import EstimatorEntry
from pyro_vae.registry import Component, Registry, built, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    from pyro.infer import ELBO

ESTIMATORS: Registry[EstimatorEntry] = Registry(
    "estimator", EstimatorEntry, foreign="pyro.infer:ELBO"
)


def make_elbo(component: Component, key: str = "estimator") -> ELBO:
    """The ``pyro.infer.ELBO`` that ``component`` names: its entry's ``build()`` (a built-in or
    an own :class:`EstimatorEntry`; what an own one returns is checked), or an own ELBO subclass
    made from the parameters."""
    from pyro.infer import ELBO

    made = ESTIMATORS.instantiate(component, key)
    if isinstance(made, EstimatorEntry):
        return built(made.build(), ELBO, f"{key}.name", component.name)
    return made


@frozen_params
class _Inference(EstimatorEntry):
    """A built-in: the class of :mod:`inference.estimators` called :attr:`inference_name`, whose
    ``__init__`` has these fields as keywords, in this order and with these defaults
    (``tests/pyro_vae/test_components.py`` checks that they agree), and refuses the values
    that ``__post_init__`` refuses."""

    inference_name: ClassVar[str]

    def __post_init__(self) -> None:
        for name in ("particles", "max_plate_nesting"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    def build(self) -> ELBO:
        from inference.estimators import make_estimator

        return make_estimator(self.inference_name, **dataclasses.asdict(self))


@ESTIMATORS.register("trace")
@frozen_params
class Trace(_Inference):
    """E_q[log w], Pyro's Trace_ELBO (``inference.estimators.TraceELBO``)."""

    inference_name = "trace"
    particles: int = 1
    max_plate_nesting: int = 1


@ESTIMATORS.register("mean_field")
@frozen_params
class MeanField(_Inference):
    """E_q[log p(x | z)] − KL(q ‖ p), the KL in closed form where one is known
    (``inference.estimators.MeanFieldELBO``)."""

    inference_name = "mean_field"
    particles: int = 1
    max_plate_nesting: int = 1


@ESTIMATORS.register("iwae")
@frozen_params
class IWAE(_Inference):
    """The importance-weighted bound L_k, k = ``particles`` (``inference.estimators.IWAE``)."""

    inference_name = "iwae"
    particles: int = 5
    max_plate_nesting: int = 1
    data_plate: str | None = None


@ESTIMATORS.register("renyi")
@frozen_params
class Renyi(_Inference):
    """The variational Rényi bound L_α (``inference.estimators.Renyi``)."""

    inference_name = "renyi"
    alpha: float = 0.5
    particles: int = 5
    max_plate_nesting: int = 1
    data_plate: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.alpha) or self.alpha == 1:
            raise ValueError(
                f"alpha must be a finite number other than 1 (alpha = 1 is the "
                f"ELBO: use 'trace'), got {self.alpha!r}"
            )


@ESTIMATORS.register("stl")
@frozen_params
class STL(_Inference):
    """Sticking the landing: the ELBO with the score term dropped from the guide's gradient
    (``inference.estimators.STL``)."""

    inference_name = "stl"
    stop_guide_params = True
    particles: int = 1
    max_plate_nesting: int = 1
    data_plate: str | None = None


@ESTIMATORS.register("dreg")
@frozen_params
class DReG(_Inference):
    """The doubly reparameterized gradient of L_k (``inference.estimators.DReG``)."""

    inference_name = "dreg"
    stop_guide_params = True
    particles: int = 5
    max_plate_nesting: int = 1
    data_plate: str | None = None


@ESTIMATORS.register("enum")
@frozen_params
class Enum(_Inference):
    """The ELBO with every discrete latent summed exactly by parallel enumeration
    (``inference.estimators.EnumELBO``)."""

    inference_name = "enum"
    particles: int = 1
    max_plate_nesting: int = 1


@ESTIMATORS.register("reinforce")
@frozen_params
class Reinforce(_Inference):
    """The ELBO with the score-function gradient, and a baseline, for the guide's discrete
    sites (``inference.estimators.Reinforce``)."""

    inference_name = "reinforce"
    baseline: Literal["average", "leave_one_out", "none"] = "average"
    decay: float = 0.9
    particles: int = 1
    max_plate_nesting: int = 1
    data_plate: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay!r}")
        if self.baseline == "leave_one_out" and self.particles < 2:
            raise ValueError(f"baseline leave_one_out needs particles >= 2, got {self.particles}")


@ESTIMATORS.register("gumbel")
@frozen_params
class Gumbel(_Inference):
    """The ELBO with each one-hot discrete latent relaxed to the Concrete distribution at an
    annealed temperature (``inference.estimators.Gumbel``)."""

    inference_name = "gumbel"
    temperature: float = 1.0
    final_temperature: float = 0.5
    rate: float = 1.0e-4
    straight_through: bool = False
    particles: int = 1
    max_plate_nesting: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("temperature", "final_temperature"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.final_temperature > self.temperature:
            raise ValueError(
                f"final_temperature ({self.final_temperature}) must not exceed temperature "
                f"({self.temperature})"
            )
        if not 0 <= self.rate < math.inf:
            raise ValueError(f"rate must be a number >= 0, got {self.rate!r}")
