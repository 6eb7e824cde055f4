"""The model registry: model kinds by name (``model: {name: vae}`` by default), each entry's
``build`` making a :class:`pyro_vae.models.Kind` (imported on the call); the kinds and their
contract are in :mod:`pyro_vae.models`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from pyro_vae.entries import ModelEntry
from pyro_vae.registry import Registry, SpecError, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.models import Kind
    from pyro_vae.spec import Spec

MODELS: Registry[ModelEntry] = Registry("model", ModelEntry)
#: Encoders that read images (C, H, W), to which a one-hot y cannot be appended.
IMAGE_ENCODERS = ("conv",)


@MODELS.register("vae")
@frozen_params
class Vae(ModelEntry):
    """p(z) p(x | z), q(z | x): labels, where the data have them, are ignored."""

    def build(self, num_classes: int | None, latent_dim: int) -> Kind:
        from pyro_vae.models import Kind

        return Kind()


@MODELS.register("cvae")
@frozen_params
class Cvae(ModelEntry):
    """Conditional VAE: q(z | x, y), p(x | z, y), encoder and decoder inputs widened by a
    one-hot y; p(z) the spec's prior, or with ``learned_prior`` a learned N(μ_y, diag σ_y²) per
    class. Scored as log p(x | y)."""

    needs_labels: ClassVar[bool] = True
    learned_prior: bool = False

    def build(self, num_classes: int | None, latent_dim: int) -> Kind:
        from pyro_vae.models import Conditional

        if num_classes is None:
            raise ValueError("cvae needs labels")
        return Conditional(num_classes, latent_dim, self.learned_prior)

    def check(self, spec: Spec) -> None:
        """The encoder reads [x, onehot(y)] as one flat vector; the VampPrior mixes q(z | u_k)
        of pseudo-inputs u_k that have no label; a learned p(z | y) replaces the spec's prior;
        a hidden label (``data.labeled``) has no class to condition on."""
        _check_reads_y(spec, "cvae")
        if self.learned_prior:
            _check_own_prior(spec, "model.learned_prior gives p(z|y) its own learned N(μ_y, σ_y²)")
        if spec.data.params.get("labeled") is not None:
            raise SpecError(
                "data.labeled",
                "cvae conditions every point on its label, and data.labeled hides some; "
                "use model m2 for partly labelled data",
            )


@MODELS.register("m2")
@frozen_params
class M2(ModelEntry):
    """Semi-supervised M2 (Kingma et al. 2014): p(y) p(z) p(x | y, z), q(y | x) q(z | x, y),
    y observed where labelled and summed by enumeration elsewhere (``data.labeled: N`` keeps N
    training labels); α = ``alpha``·N weighs the classification term α·E_l[log q(y | x)]
    (:class:`pyro_vae.models.SemiSupervised`). Trained with the ``enum`` estimator (the default
    for m2), scored as log p(x) with y summed; ``evaluate`` reports q(y | x)'s accuracy."""

    needs_labels: ClassVar[bool] = True
    default_estimator: ClassVar[str] = "enum"
    alpha: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < math.inf:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")

    def build(self, num_classes: int | None, latent_dim: int) -> Kind:
        from pyro_vae.models import SemiSupervised

        if num_classes is None:
            raise ValueError("m2 needs labels")
        return SemiSupervised(num_classes, self.alpha)

    def check(self, spec: Spec) -> None:
        """q(z | x, y) reads a one-hot y (no conv encoder, no vamp prior); y is summed by
        enumeration (``enum``) or, where latent, drawn from q(y | x) with the score-function
        gradient (``reinforce``: the same objective, E[loss] the enumerated one)."""
        _check_reads_y(spec, "m2")
        _check_enumerates(spec, "m2", also=("reinforce",))


@MODELS.register("gmvae")
@frozen_params
class Gmvae(ModelEntry):
    """Gaussian-mixture VAE: y ~ Cat(1/K) over ``components`` K, z | y ~ N(μ_y, diag σ_y²)
    learned per component, p(x | z); q(y | x) q(z | x, y), y summed by enumeration
    (:class:`pyro_vae.models.Mixture`). Reads no labels; ``evaluate`` reports, where the data
    have labels, the clusters' accuracy (best one-to-one matching) and NMI."""

    default_estimator: ClassVar[str] = "enum"
    components: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.components, bool) or self.components < 1:
            raise ValueError(f"components must be >= 1, got {self.components!r}")

    def build(self, num_classes: int | None, latent_dim: int) -> Kind:
        from pyro_vae.models import Mixture

        return Mixture(self.components, latent_dim)

    def check(self, spec: Spec) -> None:
        """q(z | x, y) reads a one-hot y; p(z | y) is the kind's own; y is summed by
        enumeration (``enum``) or drawn from q(y | x) with the score-function gradient
        (``reinforce``: the same objective, E[loss] the enumerated one)."""
        _check_reads_y(spec, "gmvae")
        _check_own_prior(spec, "gmvae's p(z|y) is its own learned N(μ_y, σ_y²) per component")
        _check_enumerates(spec, "gmvae", also=("reinforce",))


def _check_reads_y(spec: Spec, name: str) -> None:
    """SpecError unless the encoder takes [x, onehot(y)] as one flat vector and the prior is
    not the VampPrior (whose pseudo-inputs u_k have no label for q(z | u_k, y))."""
    if spec.encoder.name in IMAGE_ENCODERS:
        raise SpecError(
            "encoder.name",
            f"{name} appends a one-hot y to the encoder's flat input, which "
            f"{spec.encoder.name} does not take; use mlp or gated_mlp",
        )
    if spec.prior.name == "vamp":
        raise SpecError(
            "prior.name",
            f"vamp mixes q(z|u_k) of pseudo-inputs without labels, but the {name} encoder "
            "reads y; use standard_normal, normal, mixture or flow",
        )


def _check_own_prior(spec: Spec, why: str) -> None:
    """SpecError unless ``prior`` is left at standard_normal: the kind has its own p(z | y)."""
    if spec.prior.name != "standard_normal":
        raise SpecError("prior.name", f"{spec.prior.name}: {why}; leave prior at standard_normal")


def _check_enumerates(spec: Spec, name: str, also: tuple[str, ...] = ()) -> None:
    """SpecError unless the estimator sums the latent y by enumeration (``enum``) or is one of
    ``also``."""
    if spec.estimator.name != "enum" and spec.estimator.name not in also:
        why = (
            "sums its latent y by parallel enumeration, which only enum (TraceEnum_ELBO) does"
            if not also
            else "sums its latent y by parallel enumeration (enum) or draws it from q(y|x) with "
            f"a score-function gradient ({', '.join(also)})"
        )
        raise SpecError(
            "estimator.name",
            f"{spec.estimator.name}: {name} {why}; use estimator enum (m2's and gmvae's default)",
        )
