"""Fake theories with hand-written drifts, for Langevin tests that need many cheap steps.

The drifts of tests/fakes.py come from autograd, which costs ~1 ms per call on tiny batches; the
long physics runs here use the closed forms instead. `test_langevin.py` checks each closed form
against the autograd drift of the same action, so they are not taken on trust.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fakes import FakeTheory, gaussian_0d, phi4_lattice, quartic_0d


@dataclass
class AnalyticDriftTheory(FakeTheory):
    drift_fn: Callable | None = None

    def drift(self, z):
        return self.drift_fn(z)


def _with_drift(base: FakeTheory, drift_fn) -> AnalyticDriftTheory:
    fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
    return AnalyticDriftTheory(**fields, drift_fn=drift_fn)


def quartic_fast(sigma0=1 + 1j, lam=1.0):
    """S = sigma0/2 x^2 + lam/4 x^4 with K = -(sigma0 x + lam x^3)."""
    return _with_drift(quartic_0d(sigma0, lam), lambda z: -(sigma0 * z + lam * z * z * z))


def gaussian_fast(m2=1.0):
    """S = m2/2 x^2 with K = -m2 x."""
    return _with_drift(gaussian_0d(m2), lambda z: -m2 * z)


def phi4_fast(lattice=(8, 8), kappa=0.2, lam=0.0):
    """Hopping-form phi^4: K = 2 kappa sum_mu (phi(x+mu) + phi(x-mu)) - 2(1-2 lam) phi
    - 4 lam phi^3."""
    base = phi4_lattice(lattice, kappa, lam)

    def drift(phi):
        f = phi[:, 0]
        hop = sum(f.roll(-1, d) + f.roll(1, d) for d in range(1, f.dim()))
        k = 2 * kappa * hop - 2 * (1 - 2 * lam) * f - 4 * lam * f**3
        return k.unsqueeze(1)

    return _with_drift(base, drift)


class Interrupting:
    """Delegates to a theory and raises after `limit` drift calls (a crash mid-run)."""

    def __init__(self, theory, limit):
        self._theory, self._left = theory, limit

    def __getattr__(self, name):
        return getattr(self._theory, name)

    def drift(self, z):
        self._left -= 1
        if self._left < 0:
            raise KeyboardInterrupt("simulated crash")
        return self._theory.drift(z)
