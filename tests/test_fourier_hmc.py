"""Fourier-accelerated HMC (chains/fourier.py): the mass from the compiler's quadratic part,
momenta with covariance M, a reversible and exact trajectory, and the free field's exact
<phi^2> and chi2."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import theoryc
from conftest import REFERENCE
from theoryc.runtime.chains.fourier import FourierHMCKernel, fourier_mass, momentum_kernel
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.stats.gamma import gamma_method


def free_field(L=16, kappa=0.2):
    return theoryc.load("phi4_2d", L=L, kappa=kappa, **{"lambda": 0})


def test_mass_is_the_free_kernel_and_momenta_have_covariance_M():
    th = free_field(L=8, kappa=0.1)                  # min K = 1.2: above the default floor
    M = fourier_mass(th)
    p = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    px, py = torch.meshgrid(p, p, indexing="ij")
    torch.testing.assert_close(M[0], 2 - 0.4 * (torch.cos(px) + torch.cos(py)))   # no shift
    kernel = FourierHMCKernel(th, M)
    gen = torch.Generator().manual_seed(0)
    pi = kernel.momenta(torch.zeros((4000, *th.shape), dtype=torch.float64), gen)
    power = (torch.fft.fftn(pi, dim=(2, 3)).abs() ** 2).mean(0) / 64       # E|F pi|^2 = M
    torch.testing.assert_close(power, M, rtol=0.12, atol=0)                  # 4000 samples: ~2% per mode
    # equipartition: <pi M^-1 pi / 2> = (number of modes) / 2 exactly
    kinetic = kernel.kinetic(pi).numpy()
    assert abs(kinetic.mean() - 32) < 4 * kinetic.std() / math.sqrt(kinetic.size)


def test_trajectory_is_reversible():
    th = theoryc.load("phi4_2d", L=8)
    kernel = FourierHMCKernel(th, fourier_mass(th))
    gen = torch.Generator().manual_seed(1)
    phi0 = torch.randn((3, *th.shape), generator=gen, dtype=torch.float64)
    p0 = kernel.momenta(phi0, gen)
    phi1, p1, f1 = kernel.trajectory(phi0, p0.clone(), th.force(phi0), 0.1, 10)
    phi2, p2, _ = kernel.trajectory(phi1, -p1, f1, 0.1, 10)
    torch.testing.assert_close(phi2, phi0, rtol=0, atol=1e-11)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-11)


def test_refused_without_a_quadratic_part():
    with pytest.raises(SamplerError, match="no quadratic"):
        fourier_mass(theoryc.load("ising_2d", L=4))
    with pytest.raises(SamplerError, match="no quadratic"):
        fourier_mass(theoryc.load("phi4_0d"))


def test_broken_phase_mass_is_lifted_to_positive():
    th = theoryc.load("phi4_2d", L=8, kappa=0.5)                # K(0) = 2(1 - 2 lambda) - 4 < 0
    M = fourier_mass(th)
    assert float(M.min()) == pytest.approx(4 * math.sin(math.pi / 8) ** 2)
    assert float(momentum_kernel(th.quadratic_stencil[0], th.lattice).min()) < 0


def test_free_field_exact_values():
    """16x16, kappa = 0.2, lambda = 0 (reference/exact.json: <phi^2> = 0.635125, chi2 = 2.5);
    32 chains x 300 trajectories of length 1 at a tuned step: errors ~ 0.3%."""
    with open(REFERENCE) as fh:
        exact = json.load(fh)["free_scalar_2d"]
    th = free_field()
    run = theoryc.sample(th, sampler="hmc", n=300, chains=32, warmup=100, seed=3, progress=False,
                         fourier_acceleration=True)
    phi2 = gamma_method(run.observables["phi2"])
    M = run.observables["M"]
    chi2 = 256 * gamma_method(M**2).mean
    chi2_err = 256 * gamma_method(M**2).error
    assert abs(phi2.mean - exact["phi2"]) < 3 * phi2.error, (phi2.mean, phi2.error)
    assert abs(chi2 - exact["chi2"]) < 3 * chi2_err + 1e-3, (chi2, chi2_err)
    e = np.exp(-run.stats["dH"])
    assert abs(e.mean() - 1) < 4 * e.std() / math.sqrt(e.size)
