"""Fake theories for the flow tests (autograd forces, no compiler), beyond tests/fakes.py."""
from __future__ import annotations

import math

import torch

from fakes import FakeTheory


def phi4_mass_form(L=8, m2=-4.0, lam=8.0, dim=2):
    """phi^4 in the lattice-mass form of Albergo, Kanwar, Shanahan (2101.08176, their tutorial):

    S = sum_x [ sum_mu phi(x) (2 phi(x) - phi(x+mu) - phi(x-mu)) + m2 phi(x)^2 + lam phi(x)^4 ].
    L = 8, m2 = -4, lam = 8 is the tutorial's point (chi2 = 0.75(1) there).
    """
    lattice = (L,) * dim

    def action(phi):
        f = phi[:, 0]
        kinetic = sum(f * (2 * f - torch.roll(f, 1, d) - torch.roll(f, -1, d))
                      for d in range(1, dim + 1))
        return (kinetic + m2 * f**2 + lam * f**4).flatten(1).sum(1)

    volume = math.prod(lattice)
    return FakeTheory(
        name="phi4_mass_form", action_fn=action, lattice=lattice,
        observable_fns={"M": lambda p: p[:, 0].flatten(1).mean(1)},
        params={"L": L, "m2": m2, "lam": lam}, symmetries=[lambda p: -p],
        estimate_input_fns={"<M^2>": lambda o: o["M"] ** 2, "<M>": lambda o: o["M"]},
        estimates={})


def chi2_two_point(magnetisation, volume):
    """chi2 = V (<M^2> - <M>^2) with a jackknife error over blocks (magnetisation: 1-d array)."""
    import numpy as np
    m = np.asarray(magnetisation, dtype=np.float64)
    n_blocks = 50
    blocks = np.array_split(m, n_blocks)
    values = []
    for i in range(n_blocks):
        rest = np.concatenate(blocks[:i] + blocks[i + 1:])
        values.append(volume * ((rest**2).mean() - rest.mean() ** 2))
    values = np.array(values)
    mean = volume * ((m**2).mean() - m.mean() ** 2)
    error = math.sqrt((n_blocks - 1) * ((values - values.mean()) ** 2).mean())
    return mean, error
