"""The quadratic part of the action that the compiler extracts for Fourier acceleration: its
stencil applied to a field equals the Hessian of the action at phi = 0 applied to it (autograd),
and for phi^4 its Fourier transform is 2(1 - 2 lambda) - 4 kappa sum_mu cos p_mu."""
from __future__ import annotations

import math

import pytest
import torch

import theoryc

THEORIES = {
    "phi4_2d": ("phi4_2d", {"L": 6, "kappa": 0.3, "lambda": 0.05}),
    "nnn_3d": ("""theory nnn
lattice 4 x 3 x 5
field phi : real
param m2 = 0.4
action = sum(x)[ sum(mu)[ (phi(x + mu) - phi(x))^2 / 2 + 0.1 * phi(x) * phi(x + 2*mu) ] + m2/2 * phi(x)^2
                 + cos(phi(x)) + 0.3 * phi(x)^2 * phi(x + e0)^2 ]
""", {}),
    "two_fields": ("""theory two
lattice 6 x 4
field a, b : real
action = sum(x)[ a(x)^2 + 2*b(x)^2 - a(x)*a(x + e1) + b(x)*b(x - e0) + a(x)^2*b(x)^2 ]
""", {}),
}


def load(name):
    source, params = THEORIES[name]
    return theoryc.load(source, **params) if source.isidentifier() else theoryc.load_text(source, **params)


def apply_stencil(stencil, phi):
    out = torch.zeros_like(phi)
    for offset, h in stencil:
        out += h * torch.roll(phi, tuple(-d for d in offset), tuple(range(1, phi.dim())))
    return out


@pytest.mark.parametrize("name", sorted(THEORIES))
def test_stencil_is_the_hessian_at_zero(name):
    th = load(name)
    phi = torch.randn((1, *th.shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zero = torch.zeros_like(phi)
    _, hvp = torch.autograd.functional.hvp(lambda c: th.action(c).sum(), zero, phi)
    stencil = th.quadratic_stencil
    assert len(stencil) == th.n_fields
    expected = torch.stack([apply_stencil(stencil[f], phi[:, f]) for f in range(th.n_fields)], 1)
    torch.testing.assert_close(hvp, expected, rtol=1e-12, atol=1e-12)


def test_phi4_kernel_in_momentum_space():
    th = load("phi4_2d")
    L, kappa, lam = 6, 0.3, 0.05
    p = 2 * math.pi * torch.arange(L, dtype=torch.float64) / L
    px, py = torch.meshgrid(p, p, indexing="ij")
    K = sum(h * torch.cos(px * d[0] + py * d[1]) for d, h in th.quadratic_stencil[0])
    torch.testing.assert_close(K, 2 * (1 - 2 * lam) - 4 * kappa * (torch.cos(px) + torch.cos(py)))


def test_no_quadratic_part_where_it_does_not_exist():
    assert theoryc.load("ising_2d", L=4).quadratic_stencil is None        # spins
    assert theoryc.load("phi4_0d").quadratic_stencil is None              # no lattice
    assert theoryc.load("xy_2d", L=4).quadratic_stencil is None           # angles
    nonlocal_ = "theory n\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ] + sum(x)[ phi(x) ]^2\n"
    assert theoryc.load_text(nonlocal_).quadratic_stencil is None
    coupled = "theory c\nlattice 4\nfield a, b : real\naction = sum(x)[ a(x)^2 + b(x)^2 + a(x)*b(x) ]\n"
    assert theoryc.load_text(coupled).quadratic_stencil is None
