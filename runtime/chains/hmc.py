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
from .compiling import Compiled, fused_step, new_step, scalar
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
    """Positions of all chains with their action (float64) and force, cached between trajectories,
    and the number of trajectories run (it draws each trajectory's length, see trajectory_steps)."""
    phi: Tensor       # (chains, *shape)
    action: Tensor    # (chains,) float64
    force: Tensor     # (chains, *shape)
    count: int = 0


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


def metropolis(action, kinetic, phi0, s0, f0, k0, phi1, p1, f1, u):
    """The test at a trajectory's end, per chain: dH (float64; not finite: rejected), whether
    log u < -dH, the kept (phi, S, force), and min(1, exp(-dH)) (the acceptance probability,
    a lower-variance statistic than the 0/1 outcome)."""
    s1 = action(phi1).to(torch.float64)
    dH = torch.nan_to_num((s1 - s0) + (kinetic(p1) - k0), nan=math.inf)
    accepted = torch.log(u) < -dH
    mask = per_chain(accepted, phi1)
    return (torch.where(mask, phi1, phi0), torch.where(accepted, s1, s0), torch.where(mask, f1, f0),
            accepted, dH, torch.exp(-dH.clamp(min=0.0)))


def flipped(sym, flip, phi, force, action):
    """A symmetry that maps the force along, applied to the chains in `flip`."""
    mask = per_chain(flip, phi)
    return torch.where(mask, sym(phi), phi), action, torch.where(mask, sym(force), force)


def begin(p, force, kick):
    """A trajectory's first half kick, and the kinetic energy of the momenta drawn."""
    return p - kick * force, kinetic_energy(p)


# drift-kicks per compiled call: torch.compile's overhead per call (guards, context, ~50 us) is
# a third of a step of phi4 32x32 x 64 chains on one cpu thread; longer chunks compile longer
CHUNK = 5


def drift_kicks(drift_kick, phi, p, coef):
    """len(coef) / 2 drift-kicks, the i-th with drift coef[2i] and kick coef[2i + 1] (a length
    fixed per compiled variant: CHUNK and 1)."""
    for i in range(coef.shape[0] // 2):
        phi, p, force = drift_kick(phi, p, coef[2 * i], coef[2 * i + 1])
    return phi, p, force


class FusedTrajectory:
    """--compile: a trajectory as compiled calls of the theory's `drift_kick` (drift of phi,
    force and kick in one function; CHUNK of them per call), its first kick with the kinetic
    energy, the Metropolis test and the symmetry move compiled too: 5 calls per trajectory of 10
    leapfrog steps. The arithmetic is the eager path's in the same order, so results agree to
    rounding (inductor may contract a*b + c into one rounding)."""

    def __init__(self, theory, integrator: str):
        self.theory, self.integrator = theory, integrator
        self.drift_kick = fused_step(theory, "drift_kick")

    def warm(self, phi: Tensor, symmetries=()) -> None:
        """Compile on the chains' own tensors (step 0: nothing moves); distinct tensors, since
        torch.compile would specialise on arguments that alias."""
        zero, zeros, device = scalar(0.0, phi), torch.zeros_like, phi.device
        self.steps = Compiled(drift_kicks, device)
        self.start, self.test = Compiled(begin, device), Compiled(metropolis, device, kept=True)
        self.flipped = Compiled(flipped, device, kept=True)
        chains = phi.shape[:1]
        s, k, u = (torch.zeros(chains, dtype=torch.float64, device=device) for _ in range(3))
        for n in (CHUNK, 1):
            self.steps.warm(self.drift_kick, phi, zeros(phi), torch.zeros(2 * n, dtype=phi.dtype, device=device))
        self.start.warm(zeros(phi), zeros(phi), zero)
        self.test.warm(self.theory.action, kinetic_energy, phi, s, zeros(phi), k, phi.clone(),
                       zeros(phi), zeros(phi), u)
        for sym in symmetries:
            self.flipped.warm(sym, torch.zeros(chains, dtype=torch.bool, device=device), phi,
                              zeros(phi), s)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in (self.steps, self.start, self.test, self.flipped))

    def kicks(self, eps: float, n_steps: int) -> tuple[float, list[tuple[float, float]]]:
        """The first kick and the (drift, kick) of each drift-kick: the eager integrators'."""
        if self.integrator == "leapfrog":
            return 0.5 * eps, [(eps, eps)] * (n_steps - 1) + [(eps, 0.5 * eps)]
        lam = OMELYAN_LAMBDA
        kicks = [(0.5 * eps, (1 - 2 * lam) * eps), (0.5 * eps, 2 * lam * eps)] * n_steps
        kicks[-1] = (0.5 * eps, lam * eps)
        return lam * eps, kicks

    def __call__(self, phi, p, force, eps: float, n_steps: int):
        """(phi, p, force) at the trajectory's end and the kinetic energy of `p`."""
        first, kicks = self.kicks(eps, n_steps)
        p, k0 = self.start(p, force, scalar(first, phi))
        for coef in self.coefficients(kicks, phi):
            phi, p, force = self.steps(self.drift_kick, phi, p, coef)
        return (phi, p, force), k0

    def coefficients(self, kicks, like: Tensor) -> list[Tensor]:
        """The kicks in chunks of CHUNK, then one by one; made once per step size and number of
        steps (tensors of the fields' dtype: each value rounds as the eager `alpha=value` does).
        A jittered trajectory length makes a few numbers of steps: each is kept."""
        cache = getattr(self, "cached", None)
        if cache is None or cache[0] != kicks[0]:      # a new step size: forget the old ones
            cache = self.cached = [kicks[0], {}]
        if len(kicks) not in cache[1]:
            full = len(kicks) - len(kicks) % CHUNK
            parts = [kicks[i:i + CHUNK] for i in range(0, full, CHUNK)] + [[k] for k in kicks[full:]]
            cache[1][len(kicks)] = [torch.tensor([v for pair in part for v in pair], dtype=like.dtype,
                                                 device=like.device) for part in parts]
        return cache[1][len(kicks)]


def n_steps_for(trajectory_length: float, eps: float) -> int:
    return max(1, round(trajectory_length / eps))


# A trajectory of fixed length tau rotates a mode of frequency w by w tau each time: where
# cos(w tau) is near +-1 (w tau near a multiple of pi, for some of a lattice's many modes) that
# mode's square barely decorrelates and the Gamma method misses it: the errors of C(t) on the
# harmonic oscillator came out 1.3-2.7x (mean 1.8x) too small at tau = 3. Drawing tau uniformly in
# [(1 - j) tau, (1 + j) tau] each trajectory (Mackenzie, Phys. Lett. B 226 (1989) 369; Neal 2011)
# averages cos(w tau) away from +-1 at the same mean cost; detailed balance holds for any length
# drawn independently of the state. The draw depends on (seed, trajectory index) only, so every
# rank and every resume draws the same lengths, and all chains share a trajectory's length (one
# batched integration).
JITTER_TAG = 0x6A177E5
JITTER = 0.5          # the default j: lengths in [tau / 2, 3 tau / 2]


def trajectory_steps(trajectory_length: float, jitter: float, eps: float, seed: int,
                     count: int) -> int:
    """The leapfrog steps of trajectory `count` of a run seeded `seed`."""
    if not jitter:
        return n_steps_for(trajectory_length, eps)
    u = np.random.default_rng([int(seed) % (1 << 64), int(count), JITTER_TAG]).uniform(-1.0, 1.0)
    return n_steps_for(trajectory_length * (1.0 + jitter * u), eps)


class HMCKernel:
    """One trajectory with a Metropolis test per chain; params: {"step": eps}."""

    # draws through parallel/streams.py: chain i's numbers depend on (seed, i) only, so the
    # chains can be split over ranks (chains/driver.py)
    chain_streams = True

    def __init__(self, theory, integrator: str = "leapfrog", trajectory_length: float = 1.0,
                 symmetries=(), compile: bool = False, jitter: float = 0.0, seed: int = 0):
        if integrator not in INTEGRATORS:
            raise SamplerError(f"unknown integrator '{integrator}'; choose one of "
                               f"{sorted(INTEGRATORS)}")
        self.theory, self.integrate = theory, INTEGRATORS[integrator]
        self.fused = FusedTrajectory(theory, integrator) if compile else None
        self.trajectory_length = float(trajectory_length)
        if not 0.0 <= jitter < 1.0:
            raise SamplerError(f"trajectory-length jitter {jitter:g}: expected a fraction in [0, 1)")
        self.jitter, self.seed = float(jitter), int(seed)
        self.symmetries = list(symmetries)
        self.cheap_moves = [maps_gradient(theory, sym, theory.shape) for sym in self.symmetries]
        self.wrap = angle_wrapper(theory)       # angles leave the kernel in [-pi, pi)

    def init(self, phi: Tensor, generator=None) -> HMCState:
        if self.fused is not None:
            self.fused.warm(phi, [s for s, cheap in zip(self.symmetries, self.cheap_moves) if cheap])
        return HMCState(phi, self.theory.action(phi).to(torch.float64), self.theory.force(phi))

    def step(self, state: HMCState, generator: torch.Generator, params: dict):
        """Returns the new state and per-chain figures: `accept` = min(1, exp(-dH)) (the
        acceptance probability, a lower-variance statistic than the 0/1 outcome), `accepted`
        (0/1) and `dH`. A trajectory whose energy is not finite is rejected."""
        eps = params["step"]
        n_steps = trajectory_steps(self.trajectory_length, self.jitter, eps, self.seed, state.count)
        phi0 = state.phi
        p0 = self.momenta(phi0, generator)
        # drawn before the trajectory, which draws nothing: the same numbers as after it
        u = rand(phi0.shape[:1], generator=generator, device=phi0.device, dtype=torch.float64)
        if self.fused is not None:
            new_step()
            end, k0 = self.fused(phi0, p0, state.force, eps, n_steps)
            phi, action, force, accepted, dH, accept = self.fused.test(
                self.theory.action, kinetic_energy, state.phi, state.action, state.force, k0, *end, u)
        else:
            end = self.trajectory(phi0, p0, state.force, eps, n_steps)
            phi, action, force, accepted, dH, accept = metropolis(
                self.theory.action, self.kinetic, state.phi, state.action, state.force,
                self.kinetic(p0), *end, u)
        return HMCState(phi, action, force, state.count + 1), {
            "accept": accept, "accepted": accepted, "dH": dH, "step_size": eps, "n_steps": n_steps}

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
        return HMCState(phi, self.theory.action(phi).to(torch.float64), self.theory.force(phi),
                        state.count)

    def move(self, state: HMCState, index: int, flip: Tensor) -> HMCState:
        """Symmetry `index` on the chains in `flip`. The action is invariant; when the map is
        linear and the force follows it (moves.maps_gradient: sign flips, permutations) the force
        is mapped too, saving a force and an action per move (a difference in the last bit, if
        any, is far below every error)."""
        sym = self.symmetries[index]
        if not self.cheap_moves[index]:
            return self.transform(state, where_flipped(flip, sym))
        flip_chains = flipped if self.fused is None else self.fused.flipped
        return HMCState(*flip_chains(sym, flip, state.phi, state.force, state.action), state.count)

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
            **({"mean_n_steps": float(np.mean(stats["n_steps"]))}
               if self.jitter and "n_steps" in stats else {}),
        }

    def final_settings(self, params: dict) -> dict:
        """The step size and the steps of a trajectory of the mean length."""
        return {"step_size": params["step"],
                "n_steps": n_steps_for(self.trajectory_length, params["step"])}

    def timing(self, seconds: float, stats: dict, plan: Plan) -> dict:
        n_traj = max(1, plan.n * plan.every)
        compiled = {} if self.fused is None else {"compile_seconds": self.fused.seconds}
        return {"seconds": seconds, "seconds_per_trajectory": seconds / n_traj, **compiled}

    def state_dict(self, state: HMCState) -> dict:
        return {"phi": state.phi, "action": state.action, "force": state.force,
                "count": torch.tensor(state.count)}

    def load_state(self, d: dict, device) -> HMCState:
        return HMCState(*(d[k].to(device) for k in ("phi", "action", "force")), int(d["count"]))


# ------------------------------------------------------------------------------ the sampler

def run_hmc(theory, *, n: int, chains: int = 4, warmup: int = 500, seed: int = 0,
            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
            integrator: str = "leapfrog", step_size: float | None = None,
            trajectory_length: float = 1.0, trajectory_jitter: float = JITTER,
            target_accept: float = 0.8, every: int = 1,
            symmetrize: bool = True, progress: bool = True, checkpoint=None,
            checkpoint_every: int = 100, resume: bool | dict = False, output: Output | None = None,
            save_every: int = 1, store_configs: bool = True, fourier_acceleration: bool = False,
            mass2: float | None = None, compile: bool = False):
    """Sample `theory` with HMC: `chains` chains, `warmup` trajectories, then `n` kept per chain.

    The step size is tuned by dual averaging during warm-up towards `target_accept` (the mean of
    min(1, e^-dH) over chains) and then frozen; a given `step_size` is used as is (no tuning).
    Each trajectory has n_steps = round(length / step_size) steps, its length drawn uniformly in
    trajectory_length * [1 - trajectory_jitter, 1 + trajectory_jitter] (0: fixed; the draw
    depends on the seed and the trajectory's index only, see trajectory_steps). Every `every`-th
    production trajectory is kept. With `checkpoint=path` the run state is saved atomically every
    `checkpoint_every` kept configurations; `resume=True` continues from that file (if it exists)
    and gives bitwise the same ensemble as an uninterrupted run. `output` streams the ensemble to
    a file (chains/driver.py). `compile=True` runs each trajectory through torch.compile'd fused
    steps (FusedTrajectory; the same chain to rounding), compiled once before warm-up.
    """
    check_theory(theory)
    symmetries = list(theory.symmetries or ()) if symmetrize else []
    if fourier_acceleration:          # momentum-space mass from the action's quadratic part
        from .fourier import FourierHMCKernel, fourier_mass
        if integrator != "leapfrog":
            raise SamplerError("Fourier acceleration integrates with leapfrog; drop --integrator")
        if compile:
            raise SamplerError("--compile does not apply to Fourier-accelerated HMC yet; drop one of them")
        kernel = FourierHMCKernel(theory, fourier_mass(theory, mass2), trajectory_length, symmetries,
                                  jitter=trajectory_jitter, seed=seed)
    else:
        kernel = HMCKernel(theory, integrator, trajectory_length, symmetries, compile=compile,
                           jitter=trajectory_jitter, seed=seed)
    if step_size is None and warmup <= 0:
        raise SamplerError("HMC tunes its step size during warm-up: give --warmup > 0 or a step size")
    tuned = step_size is None
    adaptation = (DualAveraging(trajectory_length / 10, target_accept) if tuned
                  else Fixed(step=float(step_size)))
    plan = Plan(n=n, chains=chains, warmup=warmup, every=every, save_every=save_every,
                store_configs=store_configs, block=checkpoint_every, seed=seed, device=device)
    settings = {
        "sampler": "hmc", "integrator": integrator, "trajectory_length": float(trajectory_length),
        "trajectory_jitter": float(trajectory_jitter),
        "target_accept": float(target_accept),
        "step_size_given": None if step_size is None else float(step_size),
        "dtype": str(dtype).replace("torch.", ""), "device_type": plan.device.type,
        "theory": theory.name, "shape": list(theory.shape),
        "symmetry_moves": len(list(theory.symmetries or ())) if symmetrize else 0,
        "accept_statistic": "min(1, exp(-dH))", "tuned": tuned,
        **({"fourier_acceleration": True, "mass2": mass2} if fourier_acceleration else {}),
        **({"compile": True} if compile else {}),     # a checkpoint resumes on the same path
    }

    def start(generator):
        return 0.1 * randn((generator.chains, *theory.shape), generator=generator,
                                 device=plan.device, dtype=dtype)
    return run_chains(kernel, start, plan, adaptation, settings, output=output,
                      symmetries=symmetries, checkpoint=checkpoint, resume=resume,
                      progress=progress, label="hmc")
