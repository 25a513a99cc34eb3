"""Lattice gauge geometry shared by the angle models: the plaquettes of a U(1) link field.

Links are (batch, dim, *lattice), component mu the angle A_mu(x); the lattice is periodic.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def plaquette_pairs(dim: int) -> list[tuple[int, int]]:
    """The planes (mu, nu), mu < nu, in the order of `plaquettes`' second axis."""
    return [(mu, nu) for mu in range(dim) for nu in range(mu + 1, dim)]


def plaquettes(links: Tensor) -> Tensor:
    """P_{mu nu}(x) = A_mu(x) + A_nu(x + mu) - A_mu(x + nu) - A_nu(x), for mu < nu (unwrapped).
    links (batch, dim, *lattice) -> (batch, dim (dim - 1) / 2, *lattice); in 2-d one plane."""
    out = [links[:, mu] + torch.roll(links[:, nu], -1, mu + 1)
           - torch.roll(links[:, mu], -1, nu + 1) - links[:, nu]
           for mu, nu in plaquette_pairs(links.shape[1])]
    return torch.stack(out, 1)
