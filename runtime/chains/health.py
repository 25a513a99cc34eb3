"""Chains that go bad: NaN/inf or runaways (|field| beyond a bound), watched for every sampler.

The check runs on the device for every kept configuration without a host sync; the driver looks
at the result once per block. A chain that went bad is reset (its fields set to 0, so it cannot
poison anything), left out of the ensemble at the end and reported; more than `max_bad_fraction`
of the chains stops the run, keeping what the good chains produced until then.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SamplerError

Tensor = torch.Tensor


class ChainHealth:
    def __init__(self, chains: int, device, max_abs: float, max_bad_fraction: float):
        self.bad = torch.zeros(chains, dtype=torch.bool, device=device)
        self.went_bad_at = torch.full((chains,), -1, dtype=torch.int64, device=device)
        self.max_abs, self.max_bad_fraction = float(max_abs), float(max_bad_fraction)
        self.reset = torch.zeros(chains, dtype=torch.bool, device=device)   # bad, fields not reset

    def check(self, phi: Tensor, index: int, failed: Tensor | None = None) -> None:
        """Flag chains whose fields are not finite or too large (or that the kernel says failed)
        at kept configuration `index`. Device-side only."""
        flat = phi.flatten(1)
        fine = torch.isfinite(flat).all(1) & (flat.abs().amax(1) <= self.max_abs)
        if failed is not None:
            fine &= ~failed
        new = ~fine & ~self.bad
        self.went_bad_at = torch.where(new, index, self.went_bad_at)
        self.bad |= new
        self.reset |= new

    def to_reset(self) -> Tensor | None:
        """The chains that went bad since the last call, or None (one host sync)."""
        if not bool(self.reset.any()):
            return None
        mask, self.reset = self.reset, torch.zeros_like(self.reset)
        return mask

    @property
    def n_bad(self) -> int:
        return int(self.bad.sum())

    def too_many(self, n_bad: int, chains: int) -> bool:
        """More than max_bad_fraction of `chains` ran away (n_bad counted over every rank)."""
        return n_bad > self.max_bad_fraction * chains

    def good(self) -> np.ndarray:
        """Mask of the good chains; refuses when none is left."""
        good = (~self.bad).cpu().numpy()
        if not good.any():
            raise SamplerError(
                f"all {good.size} chains ran away (non-finite or |field| > {self.max_abs:g}); "
                "use a smaller step size (complex Langevin: keep adaptive steps on)")
        return good

    def report(self) -> dict:
        at = self.went_bad_at.cpu().numpy()
        idx = np.flatnonzero(at >= 0)
        return {"n_bad_chains": int(idx.size), "bad_chains": idx[:100].tolist(),
                "went_bad_at_config": at[idx[:100]].tolist()}

    def state_dict(self) -> dict:
        return {"bad": self.bad, "went_bad_at": self.went_bad_at, "reset": self.reset}

    def load(self, d: dict) -> None:
        dev = self.bad.device
        self.bad, self.went_bad_at, self.reset = (d[k].to(dev) for k in ("bad", "went_bad_at",
                                                                           "reset"))
