"""The model registry: model kinds by name (``model: {name: vae}`` by default), each entry's
``build`` making a :class:`pyro_vae.models.Kind` (imported on the call); the kinds and their
contract are in :mod:`pyro_vae.models`."""

from __future__ import annotations

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
        of pseudo-inputs u_k that have no label; a learned p(z | y) replaces the spec's prior."""
        if spec.encoder.name in IMAGE_ENCODERS:
            raise SpecError(
                "encoder.name",
                f"cvae appends a one-hot y to the encoder's flat input, which "
                f"{spec.encoder.name} does not take; use mlp or gated_mlp",
            )
        if spec.prior.name == "vamp":
            raise SpecError(
                "prior.name",
                "vamp mixes q(z|u_k) of pseudo-inputs without labels, but the cvae encoder "
                "reads y; use standard_normal, normal, mixture or flow",
            )
        if self.learned_prior and spec.prior.name != "standard_normal":
            raise SpecError(
                "prior.name",
                f"{spec.prior.name}: model.learned_prior gives p(z|y) its own learned "
                "N(μ_y, σ_y²); leave prior at standard_normal",
            )
