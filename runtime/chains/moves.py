"""Symmetry moves: each declared global symmetry applied to each chain with probability 1/2.

The symmetries are exact maps of the fields with unit Jacobian that leave the action invariant
(the compiler proves it), so the move is a Metropolis step with acceptance 1; it lets a chain jump
between the modes of a bimodal target (double Gaussian, broken phase) that the dynamics alone
almost never crosses. A kernel recomputes what it caches (`kernel.transform`), or, when it has a
`move(state, index, flip)` of its own, maps its caches along more cheaply.
"""
from __future__ import annotations

import torch

from ..parallel.streams import rand


def per_chain(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def where_flipped(flip: torch.Tensor, sym):
    def transform(t):
        return torch.where(per_chain(flip, t), sym(t), t)
    return transform


def apply_symmetries(kernel, state, symmetries, generator: torch.Generator):
    for index, sym in enumerate(symmetries):
        phi = kernel.fields(state)
        flip = rand((phi.shape[0],), generator=generator, device=phi.device) < 0.5
        if hasattr(kernel, "move"):
            state = kernel.move(state, index, flip)
        else:
            state = kernel.transform(state, where_flipped(flip, sym))
    return state


def maps_gradient(theory, sym, shape, dtype=torch.float64) -> bool:
    """Whether `sym` is linear (sym(0) = 0) and the action's gradient follows it, force(sym(phi))
    = sym(force(phi)) (sign flips and permutations of fields, the usual case; orthogonal linear
    maps in general), checked once on random configurations. Then a move needs no new force."""
    g = torch.Generator().manual_seed(0)
    phi = torch.randn((3, *shape), generator=g, dtype=dtype)
    if bool(sym(torch.zeros_like(phi)).abs().amax() > 0):
        return False
    return bool(torch.allclose(theory.force(sym(phi)), sym(theory.force(phi)), rtol=1e-9,
                               atol=1e-12))
