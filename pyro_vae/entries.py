"""The base classes of registry entries: what each kind of component must be.

A spec names a component by a built-in name, an entry point or ``"package.module:Class"``; the
class it resolves to must subclass its kind's base here (an estimator may also be a
``pyro.infer.ELBO`` subclass; checked after the import, before anything is called), so that a spec, and so a run's ``config.yaml``, can only ever construct a
component, never call an arbitrary function such as ``os:system``. Each base is an abstract
class with the method a component provides; an entry is a frozen dataclass of its parameters
(:func:`pyro_vae.registry.frozen_params`), the parameters' annotations and defaults being the
spec keys.

This module imports neither torch nor Pyro: the names below are annotations only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from pyro.infer import ELBO
    from torch import nn

    from pyro_vae.bundle import DataBundle
    from pyro_vae.guides import Posterior
    from pyro_vae.likelihoods import Likelihood
    from pyro_vae.models import Kind
    from pyro_vae.priors import Prior
    from pyro_vae.spec import Spec


class PriorEntry(ABC):
    """A prior p(z): ``build`` returns a :class:`pyro_vae.priors.Prior` whose ``forward()`` is a
    distribution with ``batch_shape == ()`` and ``event_shape == (latent_dim,)``."""

    @abstractmethod
    def build(self, latent_dim: int, encoder: nn.Module, train_data: torch.Tensor) -> Prior:
        """The prior module; ``encoder`` maps x to q(z | x)'s parameters (the VampPrior's)."""


class LikelihoodEntry(ABC):
    """A likelihood p(x | z): ``build`` returns a :class:`pyro_vae.likelihoods.Likelihood`."""

    @abstractmethod
    def build(self, data_dim: int, levels: int | None) -> Likelihood:
        """The likelihood over ``data_dim`` values (``levels`` of integer data, else None)."""


class GuideEntry(ABC):
    """A guide family q(z | x): ``build`` returns a :class:`pyro_vae.guides.Posterior`."""

    @abstractmethod
    def build(self, network: NetworkEntry, shape: tuple[int, ...], latent_dim: int) -> Posterior:
        """The posterior module over items of ``shape``, its head from ``network.encoder``."""


class NetworkEntry(ABC):
    """An encoder/decoder architecture."""

    @abstractmethod
    def encoder(self, shape: tuple[int, ...], latent_dim: int, extra: int = 0) -> nn.Module:
        """x ↦ (μ, σ) (and ``extra`` more features) over a latent of ``latent_dim``."""

    @abstractmethod
    def decoder(self, latent_dim: int, shape: tuple[int, ...], params_per_dim: int) -> nn.Module:
        """z ↦ the likelihood's ``params_per_dim`` parameters per value of ``shape``."""


class EstimatorEntry(ABC):
    """An ELBO estimator: ``build`` returns a ``pyro.infer.ELBO`` whose loss training minimises.
    ``stop_guide_params``: whether it scores each draw with the guide's parameters stopped (stl,
    dreg), which needs log q at a value the guide did not draw."""

    stop_guide_params: ClassVar[bool] = False

    @abstractmethod
    def build(self) -> ELBO:
        """The estimator, from these parameters."""


class ModelEntry(ABC):
    """A model kind: how the labels y ∈ {0, …, C−1} enter ``model(x, y)`` and ``guide(x, y)``.
    ``build`` returns a :class:`pyro_vae.models.Kind`, whose methods the one model/guide pair
    calls (the contract is in :mod:`pyro_vae.models`). ``needs_labels``: whether the kind
    conditions on labels, so that training and scoring feed them and data without labels are a
    :class:`~pyro_vae.registry.SpecError` naming ``model.name``. ``default_estimator``: the
    estimator a spec that names none trains the kind with (``enum`` for a latent class summed by
    enumeration)."""

    needs_labels: ClassVar[bool] = False
    default_estimator: ClassVar[str] = "trace"

    @abstractmethod
    def build(self, num_classes: int | None, latent_dim: int) -> Kind:
        """The kind for data of ``num_classes`` classes (None: unlabelled) and a top latent
        layer of ``latent_dim``."""

    def check(self, spec: Spec) -> None:  # noqa: B027 - a hook: most kinds combine with all
        """A :class:`~pyro_vae.registry.SpecError` naming the key of a component this kind
        cannot combine with; nothing by default."""


class DataSource(ABC):
    """A data set: ``load`` returns a :class:`pyro_vae.bundle.DataBundle`."""

    @abstractmethod
    def load(self) -> DataBundle:
        """The splits, loaded and checked."""


def kind_name(base: Any) -> str:
    """``module.Class`` of a base class, as an error message names it."""
    return f"{base.__module__}.{base.__qualname__}"
