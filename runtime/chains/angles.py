"""Angle fields (and the components of U(1) link fields) in Markov-chain samplers.

HMC and Langevin move angles on the real line: the action is 2 pi-periodic in them (the compiler
proves it), so the dynamics needs no boundary. What leaves a kernel (stored configurations,
measured observables) is the representative in [-pi, pi).
"""
from __future__ import annotations

import math

import torch

CONTINUOUS = ("real", "angle")


def angle_wrapper(theory):
    """phi -> phi with every angle component mapped into [-pi, pi) (a copy), or the identity."""
    angles = [c for c, kind in enumerate(getattr(theory, "field_kinds", ())) if kind == "angle"]
    if not angles:
        return lambda phi: phi

    def wrap(phi: torch.Tensor) -> torch.Tensor:
        out = phi.clone()
        out[:, angles] = torch.remainder(phi[:, angles] + math.pi, 2 * math.pi) - math.pi
        return out
    return wrap


def discrete_fields(theory) -> list[str]:
    """The components a continuous sampler cannot move (spins)."""
    return [f for f, k in zip(theory.field_names, theory.field_kinds) if k not in CONTINUOUS]
