"""Model kinds: how the labels y ∈ {0, …, C−1} of a data set enter the one VAE
(:class:`pyro_vae.vae.VAE`), the modules that the entries of the model registry
(:mod:`pyro_vae.components.models`) build.

    vae:   p(z) p(x | z),             q(z | x)             y is accepted and ignored
    cvae:  p(z) p(x | z, y),          q(z | x, y)          y observed, one per point
           (``learned_prior: true``: p(z | y) = N(μ_y, diag σ_y²), a learned row per class)
    m2:    p(y) p(z) p(x | y, z),     q(y | x) q(z | x, y) y observed where labelled, else summed
    gmvae: p(y) p(z | y) p(x | z),    q(y | x) q(z | x, y) y a latent cluster, always summed

m2 and gmvae (:class:`LatentClass`) have a latent class y with p(y) = Cat(1/C) and a classifier
q(y | x) on the guide side; where y is latent it is summed exactly by parallel enumeration
(``TraceEnum_ELBO``, the ``enum`` estimator), so that per point

    U(x) = Σ_y q(y | x) [log p(x | y, z) + log p(y) + log p(z | y) − log q(z | x, y)]
           + H(q(y | x)) ≤ log p(x),         z ~ q(z | x, y) for each y,

and they are scored as log p(x) = log Σ_y p(x, y), the sum taken inside every importance
sample (:meth:`pyro_vae.vae.VAE.log_weights`). A hidden label is −1 (``data.labeled``).

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

One-hot codes broadcast over leading dimensions, so an enumerated y of shape (C, 1, 1) (the
enumeration dim left of the particle and data plates) meets a (B, P) minibatch as
(C, 1, B, P + C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyro_vae.distributions import DiagonalNormal
from pyro_vae.priors import Prior

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.entries import NetworkEntry

#: The label of a training point whose label ``data.labeled`` hides.
HIDDEN = -1


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
    def reads_labels(self) -> bool:
        """Whether training and scoring feed the data's labels y to model and guide."""
        return False

    @property
    def scored_given_labels(self) -> bool:
        """Whether the score is log p(x | y), y the data's label (cvae), so that AIS and BDMC
        are given the labels too; a latent class (m2, gmvae) is summed instead, log p(x)."""
        return False

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

    def attach(self, network: NetworkEntry, data_dim: int) -> None:
        """Build what reads x besides q(z_1 | x), with the spec's encoder architecture
        ``network`` over ``data_dim`` values (:class:`LatentClass`: the classifier q(y | x));
        nothing by default."""

    def count_labels(self, labels: torch.Tensor | None) -> None:
        """Learn what a kind needs of the training labels (``HIDDEN`` where hidden) before
        training and scoring; nothing by default."""

    def model_label(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The label the model conditions on, drawn or observed here; None: none."""
        return None

    def guide_label(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """The label the guide conditions on, drawn here where it is latent; None: none."""
        return None

    def prior(self, prior: Prior, y: torch.Tensor | None) -> dist.TorchDistribution:
        """p(z_L | y); here p(z_L), the spec's prior."""
        return prior.forward()


class ClassPrior(nn.Module):
    """p(z | y) = N(μ_y, diag softplus(s_y)²), a learned row (μ_y, s_y) per class, each
    starting at N(0, I)."""

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_classes, latent_dim))
        self.scale = nn.Parameter(torch.full((num_classes, latent_dim), 0.5413))  # softplus: 1

    def forward(self, y: torch.Tensor) -> DiagonalNormal:
        return DiagonalNormal(self.loc[y], F.softplus(self.scale[y]))


class Conditional(Kind):
    """cvae (Sohn et al. 2015, "Learning structured output representation using deep
    conditional generative models"): q(z | x, y), p(x | z, y), p(z) or a learned p(z | y).

    ELBO(x | y) = E_q(z|x,y)[log p(x | z, y)] − KL(q(z | x, y) ‖ p(z | y)) ≤ log p(x | y)."""

    def __init__(self, num_classes: int, latent_dim: int, learned_prior: bool) -> None:
        super().__init__(num_classes)
        self.class_prior = ClassPrior(num_classes, latent_dim) if learned_prior else None

    @property
    def reads_labels(self) -> bool:
        return True

    @property
    def scored_given_labels(self) -> bool:
        return True

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
        if self.class_prior is None:
            return prior.forward()
        return self.class_prior(given(y))


class LatentClass(Kind):
    """A class y ∈ {0, …, C−1} with p(y) = Cat(1/C) in the model and a classifier
    q(y | x) = Cat(softmax(f_φ(x))) in the guide (``f_φ`` the spec's encoder architecture,
    x ↦ C logits), which q(z | x, y) conditions on as a one-hot input. A point's y is observed
    where its label is given (≥ 0), latent where it is None or ``HIDDEN``: the model site ``y``
    and the guide site ``y`` (masked to those points) are marked
    ``infer={"enumerate": "parallel"}``, so that ``TraceEnum_ELBO`` sums them exactly (module
    docstring). The model observes the given labels at the site ``y_observed``.

    ``classification_weight`` w adds w·log q(y | x) per labelled point to the ELBO, as a
    ``pyro.factor`` ``classification`` of −w·log q(y | x) in the guide (a guide factor enters
    as part of log q, so the ELBO gains +w·log q(y | x); it is inside the data plate, so its
    subsample scale N/B reaches it, and outside the β scale of the latents)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.classifier: nn.Module | None = None  # x ↦ C logits, built by attach
        self.classification_weight = 0.0
        self.register_buffer("uniform", torch.zeros(num_classes), persistent=False)

    @property
    def input_width(self) -> int:
        return self.num_classes

    def attach(self, network: NetworkEntry, data_dim: int) -> None:
        """q(y | x)'s network: the architecture's vector network P → hidden → C logits."""
        self.classifier = network.decoder(data_dim, (self.num_classes,), 1)

    def model_modules(self) -> list[nn.Module]:
        return [module for module in self.children() if module is not self.classifier]

    def guide_modules(self) -> list[nn.Module]:
        return [self.classify_net]

    @property
    def classify_net(self) -> nn.Module:
        if self.classifier is None:
            raise RuntimeError("the kind's classifier is built by attach(network, data_dim)")
        return self.classifier

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(y | x), (..., C)."""
        return self.classify_net(x)

    def label_prior(self) -> dist.Categorical:
        """p(y) = Cat(1/C)."""
        return dist.Categorical(logits=self.uniform)

    def model_label(self, y: torch.Tensor | None) -> torch.Tensor:
        """y ~ p(y): observed at ``y_observed`` where given, enumerated at ``y`` elsewhere."""
        p = self.label_prior()
        known = _known(y)
        if known is not None and known.any():
            with poutine.mask(mask=known):
                pyro.sample("y_observed", p, obs=given(y).clamp(min=0))
        return _latent("y", p, y, known)

    def guide_label(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """q(y | x): enumerated at ``y`` where y is not given, and the classification factor
        where it is."""
        q = dist.Categorical(logits=self.classify(x))
        known = _known(y)
        if known is not None and known.any() and self.classification_weight:
            log_q = q.log_prob(given(y).clamp(min=0))
            with poutine.mask(mask=known):
                pyro.factor("classification", -self.classification_weight * log_q, has_rsample=True)
        return _latent("y", q, y, known)


def _known(y: torch.Tensor | None) -> torch.Tensor | None:
    """Which labels are given (≥ 0); None without labels."""
    return None if y is None else y >= 0


def _latent(
    name: str, fn: dist.Categorical, y: torch.Tensor | None, known: torch.Tensor | None
) -> torch.Tensor:
    """y where ``known``, elsewhere the enumerated site ``name`` of ``fn`` (masked to the
    points without a label; absent when every label is given)."""
    if known is None:
        return pyro.sample(name, fn, infer={"enumerate": "parallel"})
    if known.all():
        return given(y)
    with poutine.mask(mask=~known):
        drawn = pyro.sample(name, fn, infer={"enumerate": "parallel"})
    return torch.where(known, given(y), drawn)


class SemiSupervised(LatentClass):
    """m2 (Kingma et al. 2014, "Semi-supervised learning with deep generative models"):
    p(y) = Cat(1/C), p(z) the spec's prior, p(x | y, z) with a one-hot y in the decoder;
    q(y | x), q(z | x, y). Over labelled points l and unlabelled points u the objective is

        J^α = Σ_l [L(x_l, y_l) + (α / N_l) log q(y_l | x_l)] + Σ_u U(x_u),
        L(x, y) = E_q(z|x,y)[log p(x | y, z) + log p(y) + log p(z) − log q(z | x, y)],

    U the module docstring's, with α = ``alpha``·N (0.1·N in the paper) for N training points
    of which N_l are labelled: ``classification_weight`` = α / N_l, from the training labels
    (:meth:`count_labels`; 0.1 until then, all labelled)."""

    def __init__(self, num_classes: int, alpha: float) -> None:
        super().__init__(num_classes)
        self.alpha = alpha
        self.classification_weight = alpha

    @property
    def reads_labels(self) -> bool:
        return True

    @property
    def code_width(self) -> int:
        return self.num_classes

    def count_labels(self, labels: torch.Tensor | None) -> None:
        """α / N_l = ``alpha``·N / N_l."""
        if labels is not None and len(labels):
            known = int((labels >= 0).sum())
            self.classification_weight = self.alpha * len(labels) / max(known, 1)


class Mixture(LatentClass):
    """gmvae (Dilokthanakul et al. 2016, "Deep unsupervised clustering with Gaussian mixture
    variational autoencoders", in the simpler form of Jiang et al.'s VaDE posterior):
    y ~ Cat(1/K), z | y ~ N(μ_y, diag σ_y²) learned per component, x | z from the decoder;
    q(y | x) q(z | x, y). Labels are never read: y is always summed, per point

        U(x) = Σ_y q(y | x)[log p(x | z_y) + log p(z_y | y) − log q(z_y | x, y)]
               − KL(q(y | x) ‖ Cat(1/K)) ≤ log p(x)."""

    def __init__(self, components: int, latent_dim: int) -> None:
        super().__init__(components)
        self.class_prior = ClassPrior(components, latent_dim)

    def prior(self, prior: Prior, y: torch.Tensor | None) -> dist.TorchDistribution:
        """p(z | y) = N(μ_y, diag σ_y²)."""
        return self.class_prior(given(y))


def given(y: torch.Tensor | None) -> torch.Tensor:
    """``y``; a ValueError when it is None (a kind that conditions on labels needs them)."""
    if y is None:
        raise ValueError("this model kind conditions on labels: pass y, a LongTensor of classes")
    return y
