"""Hybrid Monte Carlo, batched over independent chains: a kernel for the chain driver.

The kernel sees the theory only through `action` and `force` (runtime/theory.py). Momenta have unit
mass; the Hamiltonian, its violation dH and the Metropolis test are computed in float64 whatever the
field dtype (action and kinetic energy are summed in the fields' dtype, then differenced in
float64), so a float32 run still accepts/rejects correctly up to the action's own rounding. Each chain is accepted or
rejected on its own; the action and force at the current point are cached between trajectories, so
a trajectory of n steps costs n forces and one action. The driver applies the theory's symmetries
as global moves after every kept configuration (chains/moves.py): a bimodal target (double
Gaussian, broken phase) is sampled in both modes although a trajectory of length ~1 never crosses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SamplerError
from .adaptation import DualAveraging, Fixed
from .angles import angle_wrapper, discrete_fields
from .driver import Output, Plan, run_chains
from .moves import maps_gradient, per_chain, where_flipped
from ..parallel.streams import rand, randn

Tensor = torch.Tensor

# Omelyan, Mryglod & Folk, Comput.Phys.Commun. 151 (2003) 272: the 2nd-order minimum-norm
# integrator's parameter that minimises the norm of the leading error term.
OMELYAN_LAMBDA = 0.1931833275037836


# ---------------------------------------------------------------------------------- the kernel

@dataclass
class HMCState:
    """Positions of all chains with their action (float64) and force, cached between trajectories."""
    phi: Tensor       # (chains, *shape)
    action: Tensor    # (chains,) float64
    force: Tensor     # (chains, *shape)


def check_theory(theory) -> None:
    """Refuse theories HMC cannot sample, with a message a user can act on."""
    if getattr(theory, "is_complex", False):
        raise SamplerError(
            f"theory '{theory.name}' has a complex action; HMC needs a real one: "
            "use --sampler langevin (complex Langevin)")
    spins = discrete_fields(theory)
    if spins:
        raise SamplerError(
            f"theory '{theory.name}' has discrete (spin) field(s) {', '.join(spins)}; HMC needs "
            "continuous (real or angle) fields: use --sampler metropolis (or an autoregressive "
            "model, --sampler flow)")


def kinetic_energy(p: Tensor) -> Tensor:
    """sum p^2 / 2 per chain, as float64. The sum is taken in the fields' dtype, like the action
    (a float32 run's energies carry float32 rounding either way; a float64 copy of the momenta
    would cost two elementwise passes per trajectory for nothing)."""
    return 0.5 * p.square().flatten(1).sum(1).to(torch.float64)


def leapfrog(theory, phi, p, force, eps: float, n_steps: int):
    """Velocity Verlet; `force` is dS/dphi at `phi`. Returns (phi, p, force) at the end; the
    inputs are not modified (the updates after the first are in place on new tensors: one
    elementwise pass per update instead of two)."""
    p = torch.add(p, force, alpha=-0.5 * eps)
    phi = torch.add(phi, p, alpha=eps)
    for i in range(n_steps):
        if i:
            phi.add_(p, alpha=eps)
        force = theory.force(phi)
        p.sub_(force, alpha=eps if i < n_steps - 1 else 0.5 * eps)
    return phi, p, force


def omelyan(theory, phi, p, force, eps: float, n_steps: int):
    """2nd-order minimum-norm integrator (two forces per step, a much smaller
    energy violation at the same step size).

    Consecutive momentum kicks of weight lambda are merged into one of 2 lambda.
    """
    lam = OMELYAN_LAMBDA
    p = torch.add(p, force, alpha=-lam * eps)
    phi = phi.clone()
    for i in range(n_steps):
        phi.add_(p, alpha=0.5 * eps)
        force = theory.force(phi)
        p.sub_(force, alpha=(1 - 2 * lam) * eps)
        phi.add_(p, alpha=0.5 * eps)
        force = theory.force(phi)
        p.sub_(force, alpha=2 * lam * eps if i < n_steps - 1 else lam * eps)
    return phi, p, force


INTEGRATORS = {"leapfrog": leapfrog, "omelyan": omelyan}


def n_steps_for(trajectory_length: float, eps: float) -> int:
    return max(1, round(trajectory_length / eps))


class HMCKernel:
    """One trajectory with a Metropolis test per chain; params: {"step": eps}."""

    # draws through parallel/streams.py: chain i's numbers depend on (seed, i) only, so the
    # chains can be split over ranks (chains/driver.py)
    chain_streams = True

    def __init__(self, theory, integrator: str = "leapfrog", trajectory_length: float = 1.0,
                 symmetries=()):
        if integrator not in INTEGRATORS:
            raise SamplerError(f"unknown integrator '{integrator}'; choose one of "
                               f"{sorted(INTEGRATORS)}")
        self.theory, self.integrate = theory, INTEGRATORS[integrator]
        self.trajectory_length = float(trajectory_length)
        self.symmetries = list(symmetries)
        self.cheap_moves = [maps_gradient(theory, sym, theory.shape) for sym in self.symmetries]
        self.wrap = angle_wrapper(theory)       # angles leave the kernel in [-pi, pi)

    def init(self, phi: Tensor, generator=None) -> HMCState:
        return HMCState(phi, self.theory.action(phi).to(torch.float64), self.theory.force(phi))

    def step(self, state: HMCState, generator: torch.Generator, params: dict):
        """Returns the new state and per-chain figures: `accept` = min(1, exp(-dH)) (the
        acceptance probability, a lower-variance statistic than the 0/1 outcome), `accepted`
        (0/1) and `dH`. A trajectory whose energy is not finite is rejected."""
        eps = params["step"]
        n_steps = n_steps_for(self.trajectory_length, eps)
        phi0 = state.phi
        p0 = self.momenta(phi0, generator)
        k0 = self.kinetic(p0)
        phi1, p1, f1 = self.trajectory(phi0, p0, state.force, eps, n_steps)
        s1 = self.theory.action(phi1).to(torch.float64)
        dH = (s1 - state.action) + (self.kinetic(p1) - k0)
        dH = torch.nan_to_num(dH, nan=math.inf)
        u = rand(dH.shape, generator=generator, device=dH.device, dtype=torch.float64)
        accepted = torch.log(u) < -dH
        mask = per_chain(accepted, phi1)
        new = HMCState(torch.where(mask, phi1, phi0), torch.where(accepted, s1, state.action),
                       torch.where(mask, f1, state.force))
        return new, {"accept": torch.exp(-dH.clamp(min=0.0)), "accepted": accepted, "dH": dH,
                     "step_size": eps, "n_steps": n_steps}

    # -- the kinetic term (unit mass here; chains/fourier.py puts a mass in momentum space)
    def momenta(self, like: Tensor, generator) -> Tensor:
        return randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def kinetic(self, p: Tensor) -> Tensor:
        return kinetic_energy(p)

    def trajectory(self, phi, p, force, eps: float, n_steps: int):
        return self.integrate(self.theory, phi, p, force, eps, n_steps)

    # -- what the driver needs besides init/step
    def fields(self, state: HMCState) -> Tensor:
        return self.wrap(state.phi)

    def transform(self, state: HMCState, fn) -> HMCState:
        phi = fn(state.phi)
        return HMCState(phi, self.theory.action(phi).to(torch.float64), self.theory.force(phi))

    def move(self, state: HMCState, index: int, flip: Tensor) -> HMCState:
        """Symmetry `index` on the chains in `flip`. The action is invariant; when the map is
        linear and the force follows it (moves.maps_gradient: sign flips, permutations) the force
        is mapped too, saving a force and an action per move (a difference in the last bit, if
        any, is far below every error)."""
        sym = self.symmetries[index]
        if not self.cheap_moves[index]:
            return self.transform(state, where_flipped(flip, sym))
        mask = per_chain(flip, state.phi)
        return HMCState(torch.where(mask, sym(state.phi), state.phi), state.action,
                        torch.where(mask, sym(state.force), state.force))

    def record(self, state: HMCState, info: dict, params: dict) -> dict:
        return {k: info[k] for k in ("accept", "accepted", "dH", "step_size", "n_steps")}

    def summary(self, stats: dict, params: dict, settings: dict) -> dict:
        """The sampler's own figures; <exp(-dH)> must be 1 within its error (Creutz's check)."""
        dH = stats["dH"]
        e = np.exp(-dH[np.isfinite(dH)])
        return {
            "acceptance": float(stats["accept"].mean()),
            "acceptance_rate": float(stats["accepted"].mean()),
            "mean_dH": float(dH.mean()),
            "exp_minus_dH": {"mean": float(e.mean()),
                             "error": float(e.std(ddof=1) / math.sqrt(e.size)) if e.size > 1 else 0.0},
            "step_size": float(params["step"]),
            "n_steps": n_steps_for(self.trajectory_length, params["step"]),
        }

    def final_settings(self, params: dict) -> dict:
        return {"step_size": params["step"],
                "n_steps": n_steps_for(self.trajectory_length, params["step"])}

    def timing(self, seconds: float, stats: dict, plan: Plan) -> dict:
        n_traj = max(1, plan.n * plan.every)
        return {"seconds": seconds, "seconds_per_trajectory": seconds / n_traj}

    def state_dict(self, state: HMCState) -> dict:
        return {"phi": state.phi, "action": state.action, "force": state.force}

    def load_state(self, d: dict, device) -> HMCState:
        return HMCState(*(d[k].to(device) for k in ("phi", "action", "force")))


# ------------------------------------------------------------------------------ the sampler

def run_hmc(theory, *, n: int, chains: int = 4, warmup: int = 500, seed: int = 0,
            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
            integrator: str = "leapfrog", step_size: float | None = None,
            trajectory_length: float = 1.0, target_accept: float = 0.8, every: int = 1,
            symmetrize: bool = True, progress: bool = True, checkpoint=None,
            checkpoint_every: int = 100, resume: bool = False, output: Output | None = None,
            save_every: int = 1, store_configs: bool = True, fourier_acceleration: bool = False,
            mass2: float | None = None):
    """Sample `theory` with HMC: `chains` chains, `warmup` trajectories, then `n` kept per chain.

    The step size is tuned by dual averaging during warm-up towards `target_accept` (the mean of
    min(1, e^-dH) over chains) and then frozen; a given `step_size` is used as is (no tuning).
    Each trajectory has n_steps = round(trajectory_length / step_size) steps. Every `every`-th
    production trajectory is kept. With `checkpoint=path` the run state is saved atomically every
    `checkpoint_every` kept configurations; `resume=True` continues from that file (if it exists)
    and gives bitwise the same ensemble as an uninterrupted run. `output` streams the ensemble to
    a file (chains/driver.py).
    """
    check_theory(theory)
    symmetries = list(theory.symmetries or ()) if symmetrize else []
    if fourier_acceleration:          # momentum-space mass from the action's quadratic part
        from .fourier import FourierHMCKernel, fourier_mass
        if integrator != "leapfrog":
            raise SamplerError("Fourier acceleration integrates with leapfrog; drop --integrator")
        kernel = FourierHMCKernel(theory, fourier_mass(theory, mass2), trajectory_length, symmetries)
    else:
        kernel = HMCKernel(theory, integrator, trajectory_length, symmetries)
    if step_size is None and warmup <= 0:
        raise SamplerError("HMC tunes its step size during warm-up: give --warmup > 0 or a step size")
    tuned = step_size is None
    adaptation = (DualAveraging(trajectory_length / 10, target_accept) if tuned
                  else Fixed(step=float(step_size)))
    plan = Plan(n=n, chains=chains, warmup=warmup, every=every, save_every=save_every,
                store_configs=store_configs, block=checkpoint_every, seed=seed, device=device)
    settings = {
        "sampler": "hmc", "integrator": integrator, "trajectory_length": float(trajectory_length),
        "target_accept": float(target_accept),
        "step_size_given": None if step_size is None else float(step_size),
        "dtype": str(dtype).replace("torch.", ""), "device_type": plan.device.type,
        "theory": theory.name, "shape": list(theory.shape),
        "symmetry_moves": len(list(theory.symmetries or ())) if symmetrize else 0,
        "accept_statistic": "min(1, exp(-dH))", "tuned": tuned,
        **({"fourier_acceleration": True, "mass2": mass2} if fourier_acceleration else {}),
    }

    def start(generator):
        return 0.1 * randn((generator.chains, *theory.shape), generator=generator,
                                 device=plan.device, dtype=dtype)
    return run_chains(kernel, start, plan, adaptation, settings, output=output,
                      symmetries=symmetries, checkpoint=checkpoint, resume=resume,
                      progress=progress, label="hmc")
