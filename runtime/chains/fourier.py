"""Fourier-accelerated HMC: HMC with a momentum-space mass taken from the action's quadratic part.

For an action S = 1/2 sum_xy phi(x) H(y - x) phi(y) + interactions, the compiler gives the stencil
H (compiled theory's `quadratic_stencil`, per field); its Fourier transform K(p) = sum_d H(d)
cos(p . d) is the curvature of S along each momentum mode. With the kinetic energy
T = 1/2 pi . M^-1 pi and M(p) = K(p) + m^2, every mode moves on the same time scale (a free
field's modes all have period 2 pi), so near a critical point, where K(0) -> 0 and plain HMC's
long-wavelength modes crawl, a trajectory decorrelates all of them at once (Duane, Kennedy,
Pendleton, Roweth 1987; Davies et al. 1988). Any positive M keeps HMC exact: only the speed
depends on it.

Momenta are drawn as pi = F^-1 [sqrt(M) F xi] (xi white noise, F the unitary FFT over the sites),
and M^-1 pi is applied by FFT. Everything else is the HMC kernel of chains/hmc.py.
"""
from __future__ import annotations

import math

import torch

from ..errors import SamplerError
from .hmc import HMCKernel
from ..parallel.streams import randn

Tensor = torch.Tensor


def momentum_kernel(stencil, lattice: tuple[int, ...], dtype=torch.float64) -> Tensor:
    """K(p) = sum_d H(d) cos(2 pi p . d / L) on the momentum grid of the lattice."""
    axes = [2 * math.pi * torch.arange(n, dtype=torch.float64) / n for n in lattice]
    grid = torch.meshgrid(*axes, indexing="ij")
    K = torch.zeros(lattice, dtype=torch.float64)
    for offset, h in stencil:
        K += float(h) * torch.cos(sum(p * d for p, d in zip(grid, offset)))
    return K.to(dtype)


def fourier_mass(theory, mass2: float | None = None) -> Tensor:
    """M_f(p) = K_f(p) + m^2 per field, shape (n_fields, *lattice). By default m^2 lifts the
    lowest mode of K to the scale of the smallest non-zero lattice momentum, 4 sin^2(pi / L) (so
    that M stays positive in a broken phase, where K(0) < 0, and finite near criticality)."""
    stencil = getattr(theory, "quadratic_stencil", None)
    if stencil is None or not theory.lattice:
        raise SamplerError(
            f"theory '{theory.name}' has no quadratic, translation-invariant part that Fourier "
            "acceleration could use (it needs real site fields and a local action); run plain HMC")
    masses = []
    floor = 4 * math.sin(math.pi / max(theory.lattice)) ** 2
    for f in range(theory.n_fields):
        K = momentum_kernel(stencil[f], theory.lattice)
        shift = mass2 if mass2 is not None else max(0.0, floor - float(K.min()))
        M = K + shift
        if not bool((M > 0).all()):
            raise SamplerError(f"the Fourier mass K(p) + m^2 of field {theory.field_names[f]} is not "
                               f"positive (min K(p) = {float(K.min()):.4g}); give a larger mass^2")
        masses.append(M)
    return torch.stack(masses)


class FourierHMCKernel(HMCKernel):
    """HMC whose kinetic term is 1/2 pi M^-1 pi with M diagonal in momentum space (leapfrog)."""

    def __init__(self, theory, mass: Tensor, trajectory_length: float = 1.0, symmetries=(),
                 jitter: float = 0.0, seed: int = 0):
        super().__init__(theory, "leapfrog", trajectory_length, symmetries, jitter=jitter, seed=seed)
        self.mass = mass                       # (n_fields, *lattice), float64 on the cpu
        self.sites = tuple(range(2, 2 + len(theory.lattice)))

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mass.to(device=like.device, dtype=like.dtype)
        return m.sqrt(), 1.0 / m

    def momenta(self, like: Tensor, generator) -> Tensor:
        root, _ = self._on(like)
        xi = randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return torch.fft.ifftn(root * torch.fft.fftn(xi, dim=self.sites), dim=self.sites).real

    def velocity(self, p: Tensor) -> Tensor:
        """M^-1 pi."""
        _, inverse = self._on(p)
        return torch.fft.ifftn(inverse * torch.fft.fftn(p, dim=self.sites), dim=self.sites).real

    def kinetic(self, p: Tensor) -> Tensor:
        return 0.5 * (p * self.velocity(p)).flatten(1).sum(1).to(torch.float64)

    def trajectory(self, phi, p, force, eps: float, n_steps: int):
        """Leapfrog with the mass: the drift of phi is M^-1 pi."""
        p = torch.add(p, force, alpha=-0.5 * eps)
        phi = phi.clone()
        for i in range(n_steps):
            phi.add_(self.velocity(p), alpha=eps)
            force = self.theory.force(phi)
            p.sub_(force, alpha=eps if i < n_steps - 1 else 0.5 * eps)
        return phi, p, force
