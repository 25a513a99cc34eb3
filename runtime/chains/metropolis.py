"""Local Metropolis for spin fields (values -1, +1), checkerboard-parallel: a kernel for the driver.

The theory supplies (the compiler derives both from the local density, for any local spin action):
- `flip_delta(cfg)`: a tensor shaped like cfg, the change of the action when the one spin at
  (field, site) is flipped alone, for every (field, site) at once;
- `flip_offsets`: the site offsets at which two flipped spins interact (differences of the shifts
  within one density term, both signs, no zero).
The sites are split into colors so that no two sites of one color are at an interaction offset
(mod the lattice); the spins of one field and one color then change the action independently,
so all of them are updated at once with the single-spin Metropolis test. One kernel step is a
sweep: every field, every color in turn. Each sub-update satisfies detailed balance with respect
to exp(-S), so the sweep leaves it invariant.
Coloring: a checkerboard (2 colors, by the parity of the coordinate sum) when every offset has an
odd L1 norm and every extent is even; otherwise a greedy coloring of the periodic lattice by the
offsets (a few colors for a short-range action).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SamplerError
from .adaptation import Fixed
from .driver import Output, Plan, run_chains
from ..parallel.streams import rand

Tensor = torch.Tensor


def coloring(lattice: tuple[int, ...], offsets) -> np.ndarray:
    """An integer color per site (shape `lattice`) such that sites at an interaction offset
    (periodically) differ in color."""
    offsets = [tuple(int(o) for o in off) for off in offsets]
    if not lattice:
        return np.zeros((), dtype=np.int64)
    if all(sum(map(abs, off)) % 2 == 1 for off in offsets) and all(L % 2 == 0 for L in lattice):
        return np.indices(lattice).sum(0) % 2
    colors = np.full(lattice, -1, dtype=np.int64)
    for site in itertools.product(*(range(L) for L in lattice)):
        taken = {colors[tuple((s + o) % L for s, o, L in zip(site, off, lattice))]
                 for off in offsets}
        colors[site] = next(c for c in itertools.count() if c not in taken)
    return colors


@dataclass
class SpinState:
    s: Tensor     # (chains, n_fields, *lattice), values -1 / +1


class MetropolisKernel:
    """One checkerboard sweep; no parameters. info: `accept`, the fraction of accepted flips."""

    averaged = ("accept",)
    # draws through parallel/streams.py: chain i's numbers depend on (seed, i) only, so the
    # chains can be split over ranks (chains/driver.py)
    chain_streams = True

    def __init__(self, theory, device="cpu"):
        self.theory = theory
        colors = coloring(tuple(theory.lattice), theory.flip_offsets)
        self.n_colors = int(colors.max()) + 1
        self.masks = [torch.from_numpy(colors == c).to(device) for c in range(self.n_colors)]

    def init(self, s: Tensor, generator=None) -> SpinState:
        return SpinState(s)

    def step(self, state: SpinState, generator: torch.Generator, params: dict):
        s = state.s
        accepted = torch.zeros(s.shape[0], dtype=torch.float64, device=s.device)
        for f in range(s.shape[1]):
            for mask in self.masks:
                delta = self.theory.flip_delta(s)[:, f]
                u = rand(delta.shape, generator=generator, device=s.device,
                         dtype=torch.float64)
                flip = (torch.log(u) < -delta.to(torch.float64)) & mask
                s = s.clone()
                s[:, f] = torch.where(flip, -s[:, f], s[:, f])
                accepted += flip.flatten(1).sum(1)
        spins = s[0].numel()
        return SpinState(s), {"accept": accepted / spins}

    # -- what the driver needs besides init/step
    def fields(self, state: SpinState) -> Tensor:
        return state.s

    def transform(self, state: SpinState, fn) -> SpinState:
        return SpinState(fn(state.s))

    def record(self, state: SpinState, info: dict, params: dict) -> dict:
        return {"accept": info["accept"]}

    def summary(self, stats: dict, params: dict, settings: dict) -> dict:
        return {"acceptance": float(stats["accept"].mean()), "colors": self.n_colors}

    def final_settings(self, params: dict) -> dict:
        return {"colors": self.n_colors}

    def timing(self, seconds: float, stats: dict, plan: Plan) -> dict:
        return {"seconds": seconds, "seconds_per_sweep": seconds / max(1, plan.n * plan.every)}

    def state_dict(self, state: SpinState) -> dict:
        return {"s": state.s}

    def load_state(self, d: dict, device) -> SpinState:
        return SpinState(d["s"].to(device))


def check_theory(theory) -> None:
    kinds = set(theory.field_kinds)
    if kinds != {"spin"}:
        raise SamplerError(f"theory '{theory.name}' has continuous fields; Metropolis here updates "
                           "spin fields: use --sampler hmc or langevin")
    if getattr(theory, "is_complex", False):
        raise SamplerError(f"theory '{theory.name}' has a complex action: exp(-S) is no "
                           "probability for Metropolis")
    if getattr(theory, "flip_delta", None) is None or not getattr(theory, "flip_offsets", ()):
        raise SamplerError(f"theory '{theory.name}' was compiled without flip_delta (the change of "
                           "the action under one spin flip): recompile it with this theoryc")


def run_metropolis(theory, *, n: int, chains: int = 4, warmup: int = 200, seed: int = 0,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                   every: int = 1, symmetrize: bool = True, progress: bool = True,
                   checkpoint=None, checkpoint_every: int = 100, resume: bool | dict = False,
                   output: Output | None = None, save_every: int = 1, store_configs: bool = True):
    """Sample a spin theory with checkerboard Metropolis: `warmup` sweeps, then `n` kept per chain
    (one every `every` sweeps), from random spins. symmetrize: the declared global symmetries
    (s -> -s) as moves after every kept configuration."""
    check_theory(theory)
    plan = Plan(n=n, chains=chains, warmup=warmup, every=every, save_every=save_every,
                store_configs=store_configs, block=checkpoint_every, seed=seed, device=device)
    kernel = MetropolisKernel(theory, plan.device)
    settings = {"sampler": "metropolis", "dtype": str(dtype).replace("torch.", ""),
                "theory": theory.name, "shape": list(theory.shape), "symmetrize": bool(symmetrize),
                "flip_offsets": [list(o) for o in theory.flip_offsets]}

    def start(generator):
        u = rand((generator.chains, *theory.shape), generator=generator, device=plan.device)
        return torch.where(u < 0.5, -1.0, 1.0).to(dtype)
    return run_chains(kernel, start, plan, Fixed(), settings, output=output,
                      symmetries=list(theory.symmetries or ()) if symmetrize else [],
                      checkpoint=checkpoint, resume=resume, progress=progress,
                      label="metropolis")
