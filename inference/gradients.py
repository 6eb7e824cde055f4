"""Gradient variance and signal-to-noise ratio of an ELBO estimator, per parameter group.

R independent gradient estimates g_1..g_R of the loss on one batch (parameters not updated) give,
per coordinate,

    mean = (1/R) Σ_r g_r,   variance = 1/(R−1) Σ_r (g_r − mean)²,   SNR = |mean| / √variance

(Rainforth et al. 2018, "Tighter variational bounds are not necessarily better", eq. 3). A
coordinate whose every estimate is zero has SNR 0/0 = nan, and one whose estimates are all the
same non-zero number (an exact gradient, e.g. a learned prior's under an analytic KL) has SNR ∞;
both are left out of the summaries, which describe the coordinates with a noisy gradient.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from pyro.infer import ELBO
from torch import Tensor, nn


@dataclass(frozen=True)
class GroupStatistics:
    """Statistics of one parameter group's flattened gradient, each of shape (D,), on the CPU."""

    mean: Tensor
    variance: Tensor

    @property
    def snr(self) -> Tensor:
        return self.mean.abs() / self.variance.sqrt()

    @property
    def mean_snr(self) -> float:
        return torch.nanmean(self._noisy_snr).item()

    @property
    def median_snr(self) -> float:
        return torch.nanmedian(self._noisy_snr).item()

    @property
    def _noisy_snr(self) -> Tensor:
        """The SNR, nan where it is not finite (module docstring)."""
        snr = self.snr
        return snr.masked_fill(~snr.isfinite(), torch.nan)


@dataclass(frozen=True)
class GradientStatistics:
    """Per-group gradient statistics; the objective (−loss) mean and standard deviation over
    the R draws; mean wall time of one loss + gradient evaluation."""

    groups: dict[str, GroupStatistics]
    objective_mean: float
    objective_std: float
    seconds_per_step: float
    repeats: int


def _default_groups(model, guide) -> dict[str, list[Tensor]]:
    if not (isinstance(model, nn.Module) and isinstance(guide, nn.Module)):
        raise ValueError("model and guide are not nn.Modules: pass params={'group': [tensors]}")
    return {"guide": list(guide.parameters()), "model": list(model.parameters())}


def _gradient_fn(
    estimator: ELBO, model, guide, args: tuple, kwargs: dict, params: list[Tensor]
) -> Callable[[], tuple[float, list[Tensor | None]]]:
    """One draw of (loss, gradients of ``params``), through ``differentiable_loss`` where the
    estimator has one, else through ``loss_and_grads`` with the ``.grad`` fields restored."""
    if hasattr(estimator, "differentiable_loss"):

        def draw() -> tuple[float, list[Tensor | None]]:
            loss = estimator.differentiable_loss(model, guide, *args, **kwargs)
            return loss.item(), list(torch.autograd.grad(loss, params, allow_unused=True))

        return draw

    def draw_via_backward() -> tuple[float, list[Tensor | None]]:
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        loss = estimator.loss_and_grads(model, guide, *args, **kwargs)
        grads = [p.grad for p in params]
        for p, g in zip(params, saved):
            p.grad = g
        return float(loss), grads

    return draw_via_backward


def gradient_statistics(
    model,
    guide,
    estimator: ELBO,
    *args,
    repeats: int = 100,
    params: Mapping[str, Iterable[Tensor]] | None = None,
    **kwargs,
) -> GradientStatistics:
    """Draw ``repeats`` gradient estimates of ``estimator``'s loss on ``model(*args, **kwargs)``
    and ``guide(*args, **kwargs)``; summarize them per group of ``params`` (default: "guide" and
    "model", the parameters of the two nn.Modules). Mean and variance accumulate in float64 by
    Welford's update, so memory stays O(D)."""
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2, got {repeats}")
    groups = {name: list(ps) for name, ps in (params or _default_groups(model, guide)).items()}
    unique = list({id(p): p for ps in groups.values() for p in ps}.values())
    index = {id(p): i for i, p in enumerate(unique)}
    draw = _gradient_fn(estimator, model, guide, args, kwargs, unique)

    mean = [torch.zeros(p.numel(), dtype=torch.float64, device=p.device) for p in unique]
    m2 = [torch.zeros_like(mu) for mu in mean]
    objectives = torch.empty(repeats, dtype=torch.float64)
    seconds = 0.0
    for r in range(repeats):
        start = time.perf_counter()
        loss, grads = draw()
        seconds += time.perf_counter() - start
        objectives[r] = -loss
        for g, mu, s in zip(grads, mean, m2):
            g = torch.zeros_like(mu) if g is None else g.detach().double().flatten()
            delta = g - mu
            mu += delta / (r + 1)
            s += delta * (g - mu)

    def group(ps: list[Tensor]) -> GroupStatistics:
        def cat(ts: list[Tensor]) -> Tensor:
            return torch.cat(
                [ts[index[id(p)]].cpu() for p in ps] + [torch.zeros(0, dtype=torch.float64)]
            )

        return GroupStatistics(mean=cat(mean), variance=cat(m2) / (repeats - 1))

    return GradientStatistics(
        groups={name: group(ps) for name, ps in groups.items()},
        objective_mean=objectives.mean().item(),
        objective_std=objectives.std().item(),
        seconds_per_step=seconds / repeats,
        repeats=repeats,
    )
