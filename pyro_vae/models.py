"""Model kinds: how the labels y ∈ {0, …, C−1} of a data set enter the one VAE
(:class:`pyro_vae.vae.VAE`), the modules that the entries of the model registry
(:mod:`pyro_vae.components.models`) build.

    vae:   p(z) p(x | z),             q(z | x)             y is accepted and ignored
    cvae:  p(z) p(x | z, y),          q(z | x, y)          y observed, one per point
           (``learned_prior: true``: p(z | y) = N(μ_y, diag σ_y²), a learned row per class)

The contract of a kind, which :meth:`VAE.model <pyro_vae.vae.VAE.model>` and
:meth:`VAE.guide <pyro_vae.vae.VAE.guide>` call inside the data plate (so the sites a kind adds
are per point, and the data plate's subsample scale N/B reaches them):

* ``model_label(y)`` runs first in the model and returns the label the rest conditions on, or
  None: ``cvae`` returns y itself; a kind with a class variable draws it here,
  ``pyro.sample("y", Categorical(...), obs=y)``, observed where y is given and latent (for
  ``TraceEnum_ELBO``, ``infer={"enumerate": "parallel"}``) where it is not;
* ``guide_label(x, y)`` runs first in the guide: the label q(z | x, y) conditions on (a kind
  with a latent class samples q(y | x) here where y is None);
* ``prior(prior, y)`` is p(z_L | y) (the spec's ``prior`` module passed in, batch shape () or
  the label's), ``input_width`` and ``code_width`` the number of one-hot inputs
  (:func:`with_one_hot`) that q(z_1 | x, y) and p(x | z_1, y) read besides x and z_1.

One-hot codes broadcast over leading dimensions, so an enumerated y of shape (C, 1) meets a
(B, P) minibatch as (C, B, P + C).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.distributions import DiagonalNormal
from pyro_vae.priors import Prior


def with_one_hot(t: torch.Tensor, y: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """[t, onehot(y)] along the last dimension, the leading dimensions broadcast; ``t`` itself
    when y is None."""
    if y is None:
        return t
    code = F.one_hot(y, num_classes).to(t.dtype)
    shape = torch.broadcast_shapes(t.shape[:-1], code.shape[:-1])
    return torch.cat([t.expand(*shape, t.shape[-1]), code.expand(*shape, num_classes)], -1)


class Kind(nn.Module):
    """A model kind (module docstring): ``num_classes`` C, and how y enters model and guide.
    The base class is the plain VAE's: no label anywhere."""

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes

    @property
    def input_width(self) -> int:
        """One-hot inputs that q(z_1 | ·) reads besides x."""
        return 0

    @property
    def code_width(self) -> int:
        """One-hot inputs that the decoder reads besides z_1."""
        return 0

    def model_modules(self) -> list[nn.Module]:
        """The parts of this kind that the model reads (in Pyro's global param-store mode their
        parameters are registered by the model only); the whole kind by default."""
        return [self]

    def guide_modules(self) -> list[nn.Module]:
        """The parts of this kind that the guide reads (a classifier q(y | x)); none by
        default."""
        return []

    def model_label(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The label the model conditions on, drawn or observed here; None: none."""
        return None

    def guide_label(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """The label the guide conditions on, drawn here where it is latent; None: none."""
        return None

    def prior(self, prior: Prior, y: torch.Tensor | None) -> dist.TorchDistribution:
        """p(z_L | y); here p(z_L), the spec's prior."""
        return prior.forward()


class Conditional(Kind):
    """cvae (Sohn et al. 2015, "Learning structured output representation using deep
    conditional generative models"): q(z | x, y), p(x | z, y), p(z) or a learned p(z | y).

    ELBO(x | y) = E_q(z|x,y)[log p(x | z, y)] − KL(q(z | x, y) ‖ p(z | y)) ≤ log p(x | y)."""

    def __init__(self, num_classes: int, latent_dim: int, learned_prior: bool) -> None:
        super().__init__(num_classes)
        self.class_loc = (
            nn.Parameter(torch.zeros(num_classes, latent_dim)) if learned_prior else None
        )
        # softplus(0.5413) = 1: every class starts at N(0, I)
        self.class_scale = (
            nn.Parameter(torch.full((num_classes, latent_dim), 0.5413)) if learned_prior else None
        )

    @property
    def input_width(self) -> int:
        return self.num_classes

    @property
    def code_width(self) -> int:
        return self.num_classes

    def model_label(self, y: torch.Tensor | None) -> torch.Tensor:
        return given(y)

    def guide_label(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return given(y)

    def prior(self, prior: Prior, y: torch.Tensor | None) -> dist.TorchDistribution:
        """p(z | y) = N(μ_y, diag softplus(s_y)²) with a learned prior, else p(z)."""
        if self.class_loc is None or self.class_scale is None:
            return prior.forward()
        y = given(y)
        return DiagonalNormal(self.class_loc[y], F.softplus(self.class_scale[y]))


def given(y: torch.Tensor | None) -> torch.Tensor:
    """``y``; a ValueError when it is None (a kind that conditions on labels needs them)."""
    if y is None:
        raise ValueError("this model kind conditions on labels: pass y, a LongTensor of classes")
    return y
