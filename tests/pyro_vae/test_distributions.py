"""The lean Gaussians are Normal(·).to_event(1): densities, gradients, KLs, shapes."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.util import detach
from torch.distributions import kl_divergence

from pyro_vae.distributions import DiagonalNormal, StandardNormal


def _params(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    loc = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    return loc, raw


def test_density_at_own_draws_has_the_general_value_and_total_gradient() -> None:
    """At z = μ + σε the short form −½‖ε‖² − Σ log σ is the same function of (μ, σ) as the
    general density: equal values and equal total derivatives (path and score parts)."""
    loc, raw = _params(4, 3)
    q = DiagonalNormal(loc, raw.exp())
    z = q.rsample((5,))
    short = q.log_prob(z)
    general = dist.Normal(loc, raw.exp()).to_event(1).log_prob(z)
    torch.testing.assert_close(short, general, rtol=1e-12, atol=1e-12)
    # d/dμ is 0 in both (path and score parts cancel); the short form does not touch μ at all.
    short_grads = torch.autograd.grad(short.sum(), (loc, raw), allow_unused=True, retain_graph=True)
    general_grads = torch.autograd.grad(general.sum(), (loc, raw))
    assert short_grads[0] is None
    torch.testing.assert_close(general_grads[0], torch.zeros_like(loc), rtol=0, atol=1e-12)
    torch.testing.assert_close(short_grads[1], general_grads[1], rtol=1e-10, atol=1e-10)


def test_density_elsewhere_and_of_a_detached_copy_is_the_general_one() -> None:
    loc, raw = _params(4, 3)
    q = DiagonalNormal(loc, raw.exp())
    z = q.rsample()
    reference = dist.Normal(loc, raw.exp()).to_event(1)
    other = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(other), reference.log_prob(other))
    # Sticking the landing: log q_{sg(φ)}(z) depends on φ only through z.
    frozen = detach(q).log_prob(z).sum()
    want = dist.Normal(loc.detach(), raw.exp().detach()).to_event(1).log_prob(z).sum()
    got = torch.autograd.grad(frozen, (loc, raw), retain_graph=True)
    for a, b in zip(got, torch.autograd.grad(want, (loc, raw))):
        torch.testing.assert_close(a, b)


def test_shapes_expand_and_moments() -> None:
    q = DiagonalNormal(torch.zeros(3), torch.full((3,), 2.0))
    assert (q.batch_shape, q.event_shape) == (torch.Size(), torch.Size([3]))
    wide = q.expand((5,))
    assert wide.batch_shape == (5,) and wide.rsample((2,)).shape == (2, 5, 3)
    assert wide.log_prob(torch.zeros(5, 3)).shape == (5,)
    torch.testing.assert_close(q.entropy(), dist.Normal(torch.zeros(3), 2.0).to_event(1).entropy())
    torch.testing.assert_close(q.variance, torch.full((3,), 4.0))
    p = StandardNormal(torch.zeros(3)).expand((5,))
    assert p.batch_shape == (5,) and p.sample((2,)).shape == (2, 5, 3)
    assert p.log_prob(torch.zeros(3)).shape == (5,)
    torch.testing.assert_close(
        p.entropy(), dist.Normal(torch.zeros(5, 3), 1.0).to_event(1).entropy()
    )


def test_standard_normal_density() -> None:
    z = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(
        StandardNormal(torch.zeros(4, dtype=torch.float64)).log_prob(z),
        dist.Normal(torch.zeros(4, dtype=torch.float64), 1.0).to_event(1).log_prob(z),
    )


@pytest.mark.parametrize("prior", ["standard", "diagonal"])
def test_kl_divergences_match_torch(prior: str) -> None:
    loc, raw = _params(5, 3)
    q = DiagonalNormal(loc, raw.exp())
    q_ref = dist.Normal(loc, raw.exp()).to_event(1)
    if prior == "standard":
        p = StandardNormal(torch.zeros(3, dtype=torch.float64)).expand((5,))
        p_ref = dist.Normal(torch.zeros(5, 3, dtype=torch.float64), 1.0).to_event(1)
    else:
        m, s = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
        p, p_ref = DiagonalNormal(m, s).expand((5,)), dist.Normal(m, s).to_event(1)
    got, want = kl_divergence(q, p), kl_divergence(q_ref, p_ref)
    assert got.shape == (5,)
    torch.testing.assert_close(got, want)
    for a, b in zip(
        torch.autograd.grad(got.sum(), (loc, raw)), torch.autograd.grad(want.sum(), (loc, raw))
    ):
        torch.testing.assert_close(a, b)
