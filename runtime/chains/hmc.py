"""Hybrid Monte Carlo, batched over independent chains (NumPyro style: `init`/`step` + a driver).

The kernel sees the theory only through `action` and `force` (runtime/theory.py). Momenta have unit
mass; the Hamiltonian, its violation dH and the Metropolis test are computed in float64 whatever the
field dtype, so a float32 run still accepts/rejects correctly up to the action's own rounding.
Each chain is accepted or rejected on its own. After each trajectory the theory's `symmetries`
(exact global maps with unit Jacobian that leave the action invariant) are applied to each chain
with probability 1/2 each: a Metropolis move with acceptance 1 that lets HMC jump between the modes
of a bimodal target (double Gaussian, broken phase) that a trajectory of length ~1 never crosses.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_run_checkpoint, save_checkpoint
from .ensemble import SamplerError, SamplerRun

Tensor = torch.Tensor

# Omelyan, Mryglod & Folk, Comput.Phys.Commun. 151 (2003) 272: the 2nd-order minimum-norm
# integrator's parameter that minimises the norm of the leading error term.
OMELYAN_LAMBDA = 0.1931833275037836
STAT_NAMES = ("accept", "accepted", "dH", "step_size", "n_steps")


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
    spins = [f for f, k in zip(theory.field_names, theory.field_kinds) if k != "real"]
    if spins:
        raise SamplerError(
            f"theory '{theory.name}' has discrete (spin) field(s) {', '.join(spins)}; HMC needs "
            "continuous real fields: use an autoregressive model (--sampler flow) instead")


def init(theory, phi: Tensor) -> HMCState:
    """The HMC state at configurations `phi` (chains, *shape)."""
    return HMCState(phi, theory.action(phi).to(torch.float64), theory.force(phi))


def kinetic_energy(p: Tensor) -> Tensor:
    """sum p^2 / 2 per chain, in float64."""
    return 0.5 * p.to(torch.float64).square().flatten(1).sum(1)


def leapfrog(theory, phi, p, force, eps: float, n_steps: int):
    """Velocity Verlet; `force` is dS/dphi at `phi`. Returns (phi, p, force) at the end."""
    p = p - 0.5 * eps * force
    for i in range(n_steps):
        phi = phi + eps * p
        force = theory.force(phi)
        p = p - (eps if i < n_steps - 1 else 0.5 * eps) * force
    return phi, p, force


def omelyan(theory, phi, p, force, eps: float, n_steps: int):
    """2nd-order minimum-norm integrator (two forces per step, a much smaller
    energy violation at the same step size).

    Consecutive momentum kicks of weight lambda are merged into one of 2 lambda.
    """
    lam = OMELYAN_LAMBDA
    p = p - lam * eps * force
    for i in range(n_steps):
        phi = phi + 0.5 * eps * p
        force = theory.force(phi)
        p = p - (1 - 2 * lam) * eps * force
        phi = phi + 0.5 * eps * p
        force = theory.force(phi)
        p = p - (2 * lam * eps if i < n_steps - 1 else lam * eps) * force
    return phi, p, force


INTEGRATORS = {"leapfrog": leapfrog, "omelyan": omelyan}


def _per_chain(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def step(theory, state: HMCState, eps: float, n_steps: int, generator: torch.Generator,
         integrator: str = "leapfrog") -> tuple[HMCState, dict[str, Tensor]]:
    """One trajectory with a Metropolis test per chain.

    Returns the new state and per-chain figures: `accept` = min(1, exp(-dH)) (the acceptance
    probability, a lower-variance statistic than the 0/1 outcome), `accepted` (0/1) and `dH`.
    A trajectory whose energy is not finite is rejected.
    """
    phi0 = state.phi
    p0 = torch.randn(phi0.shape, generator=generator, device=phi0.device, dtype=phi0.dtype)
    phi1, p1, f1 = INTEGRATORS[integrator](theory, phi0, p0, state.force, eps, n_steps)
    s1 = theory.action(phi1).to(torch.float64)
    dH = (s1 + kinetic_energy(p1)) - (state.action + kinetic_energy(p0))
    dH = torch.where(torch.isfinite(dH), dH, torch.full_like(dH, math.inf))
    u = torch.rand(dH.shape, generator=generator, device=dH.device, dtype=torch.float64)
    accepted = torch.log(u) < -dH
    new = HMCState(torch.where(_per_chain(accepted, phi1), phi1, phi0),
                   torch.where(accepted, s1, state.action),
                   torch.where(_per_chain(accepted, f1), f1, state.force))
    info = {"accept": torch.exp(-dH.clamp(min=0.0)), "accepted": accepted.to(torch.float64),
            "dH": dH}
    return new, info


def apply_symmetries(theory, state: HMCState, generator: torch.Generator) -> HMCState:
    """Apply each symmetry to each chain with probability 1/2 (an always-accepted exact move)."""
    symmetries = list(getattr(theory, "symmetries", ()) or ())
    if not symmetries:
        return state
    phi = state.phi
    for sym in symmetries:
        flip = torch.rand(phi.shape[0], generator=generator, device=phi.device) < 0.5
        phi = torch.where(_per_chain(flip, phi), sym(phi), phi)
    # The action is invariant, but the force is not (and rounding may differ): recompute both.
    return init(theory, phi)


# ------------------------------------------------------------------------- step-size tuning

@dataclass
class DualAveraging:
    """Nesterov dual averaging of log(step size) (Hoffman & Gelman, JMLR 15 (2014) 1593, alg. 5).

    Fed the chain-averaged acceptance probability after each warm-up trajectory; `final()` is the
    iterate average, which is what is frozen for the production run.
    """
    target: float
    mu: float
    log_eps: float
    log_eps_bar: float = 0.0
    h_bar: float = 0.0
    t: int = 0
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75

    @classmethod
    def start(cls, eps0: float, target: float) -> "DualAveraging":
        return cls(target=target, mu=math.log(10 * eps0), log_eps=math.log(eps0))

    def update(self, accept_prob: float) -> None:
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        self.log_eps = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** (-self.kappa)
        self.log_eps_bar = eta * self.log_eps + (1 - eta) * self.log_eps_bar

    @property
    def step_size(self) -> float:
        return math.exp(self.log_eps)

    def final(self) -> float:
        return math.exp(self.log_eps_bar) if self.t else self.step_size

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def n_steps_for(trajectory_length: float, eps: float) -> int:
    return max(1, round(trajectory_length / eps))


# ------------------------------------------------------------------------------ the driver

def run_hmc(theory, *, n: int, chains: int = 4, warmup: int = 500, seed: int = 0,
            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
            integrator: str = "leapfrog", step_size: float | None = None,
            trajectory_length: float = 1.0, target_accept: float = 0.8, every: int = 1,
            progress: bool = True, checkpoint=None, checkpoint_every: int = 200,
            resume: bool = False) -> SamplerRun:
    """Sample `theory` with HMC: `chains` chains, `warmup` trajectories, then `n` kept per chain.

    The step size is tuned by dual averaging during warm-up towards `target_accept` (the mean of
    min(1, e^-dH) over chains) and then frozen; a given `step_size` is used as is (no tuning).
    Each trajectory has n_steps = round(trajectory_length / step_size) steps. Every `every`-th
    production trajectory is kept. With `checkpoint=path` the whole run state is saved atomically
    every `checkpoint_every` trajectories and at the end; `resume=True` continues from that file
    (if it exists) and gives bitwise the same ensemble as an uninterrupted run.
    """
    check_theory(theory)
    if integrator not in INTEGRATORS:
        raise SamplerError(f"unknown integrator '{integrator}'; choose one of {sorted(INTEGRATORS)}")
    if step_size is None and warmup <= 0:
        raise SamplerError("HMC tunes its step size during warm-up: give --warmup > 0 or a step size")
    settings = {
        "sampler": "hmc", "n": int(n), "chains": int(chains), "warmup": int(warmup), "seed": int(seed),
        "integrator": integrator, "trajectory_length": float(trajectory_length),
        "target_accept": float(target_accept), "every": int(every),
        "step_size_given": None if step_size is None else float(step_size),
        "dtype": str(dtype).replace("torch.", ""), "device_type": torch.device(device).type,
        "theory": theory.name,
        "shape": list(theory.shape), "symmetry_moves": len(list(theory.symmetries or ())),
        "accept_statistic": "min(1, exp(-dH))",
    }
    run = _HMCLoop(theory, settings, torch.device(device), dtype, step_size)
    if checkpoint is not None and resume:
        run.restore_if_present(checkpoint)
    run.loop(progress, checkpoint, checkpoint_every)
    return run.result()


class _HMCLoop:
    """All the state of a run, in one place so that it can be checkpointed and restored."""

    def __init__(self, theory, settings: dict, device: torch.device, dtype: torch.dtype,
                 step_size: float | None):
        self.theory, self.settings, self.device, self.dtype = theory, settings, device, dtype
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(settings["seed"])
        chains, n = settings["chains"], settings["n"]
        phi0 = 0.1 * torch.randn((chains, *theory.shape), generator=self.generator,
                                 device=device, dtype=dtype)
        self.state = init(theory, phi0)
        self.iteration = 0
        self.tuning = step_size is None
        eps0 = step_size if step_size is not None else settings["trajectory_length"] / 10
        self.dual = DualAveraging.start(eps0, settings["target_accept"])
        self.eps = float(eps0)
        self.configs = torch.zeros((chains, n, *theory.shape), dtype=dtype)
        self.stats = {k: torch.zeros((chains, n), dtype=torch.float64) for k in STAT_NAMES}
        self.production_seconds = 0.0
        self.last_accept = math.nan

    @property
    def total(self) -> int:
        s = self.settings
        return s["warmup"] + s["n"] * s["every"]

    def current_step_size(self) -> float:
        if self.tuning and self.iteration < self.settings["warmup"]:
            return self.dual.step_size
        return self.eps

    def advance(self) -> None:
        s, it = self.settings, self.iteration
        eps = self.current_step_size()
        n_steps = n_steps_for(s["trajectory_length"], eps)
        start = time.perf_counter()
        self.state, info = step(self.theory, self.state, eps, n_steps, self.generator,
                                s["integrator"])
        self.state = apply_symmetries(self.theory, self.state, self.generator)
        self.last_accept = float(info["accept"].mean())
        if it < s["warmup"]:
            if self.tuning:
                self.dual.update(self.last_accept)
                if it == s["warmup"] - 1:
                    self.eps = self.dual.final()
        else:
            self.production_seconds += time.perf_counter() - start
            k, r = divmod(it - s["warmup"], s["every"])
            if r == s["every"] - 1:
                self._record(k, info, eps, n_steps)
        self.iteration += 1

    def _record(self, k: int, info: dict, eps: float, n_steps: int) -> None:
        self.configs[:, k] = self.state.phi.detach().to("cpu")
        for name in ("accept", "accepted", "dH"):
            self.stats[name][:, k] = info[name].to("cpu")
        self.stats["step_size"][:, k] = eps
        self.stats["n_steps"][:, k] = n_steps

    def loop(self, progress: bool, checkpoint, checkpoint_every: int) -> None:
        bar = tqdm(total=self.total, initial=self.iteration, disable=not progress, desc="hmc",
                   unit="traj")
        with bar:
            while self.iteration < self.total:
                self.advance()
                bar.update(1)
                if self.iteration % 50 == 0:
                    bar.set_postfix(eps=f"{self.current_step_size():.4g}",
                                    acc=f"{self.last_accept:.2f}")
                if checkpoint is not None and (self.iteration % checkpoint_every == 0
                                               or self.iteration == self.total):
                    save_checkpoint(checkpoint, self.snapshot())

    # -- checkpointing
    def snapshot(self) -> dict:
        return {"sampler": "hmc", "settings": self.settings, "iteration": self.iteration,
                "phi": self.state.phi, "action": self.state.action, "force": self.state.force,
                "generator": self.generator.get_state(), "dual": self.dual.as_dict(),
                "eps": self.eps, "tuning": self.tuning, "configs": self.configs,
                "stats": self.stats, "production_seconds": self.production_seconds}

    def restore_if_present(self, path) -> None:
        snap = load_run_checkpoint(path, "hmc", self.settings)
        if snap is None:
            return
        dev = self.device
        self.state = HMCState(snap["phi"].to(dev), snap["action"].to(dev), snap["force"].to(dev))
        self.generator.set_state(snap["generator"])
        self.dual = DualAveraging(**snap["dual"])
        self.eps, self.tuning, self.iteration = snap["eps"], snap["tuning"], snap["iteration"]
        self.configs, self.stats = snap["configs"], dict(snap["stats"])
        self.production_seconds = snap["production_seconds"]

    # -- output
    def result(self) -> SamplerRun:
        stats = {k: v.numpy().copy() for k, v in self.stats.items()}
        settings = dict(self.settings, step_size=self.eps, tuned=self.tuning,
                        n_steps=n_steps_for(self.settings["trajectory_length"], self.eps),
                        device=str(self.device))
        return SamplerRun(configs=self.configs, stats=stats, summary=hmc_summary(
            stats, self.eps, self.production_seconds, self.settings), settings=settings)


def hmc_summary(stats: dict[str, np.ndarray], eps: float, seconds: float, settings: dict) -> dict:
    """The sampler's own figures; <exp(-dH)> must be 1 within its error (Creutz's check)."""
    dH = stats["dH"]
    e = np.exp(-dH[np.isfinite(dH)])
    n_traj = max(1, settings["n"] * settings["every"])
    return {
        "acceptance": float(stats["accept"].mean()),
        "acceptance_rate": float(stats["accepted"].mean()),
        "mean_dH": float(dH.mean()),
        "exp_minus_dH": {"mean": float(e.mean()),
                         "error": float(e.std(ddof=1) / math.sqrt(e.size)) if e.size > 1 else 0.0},
        "step_size": float(eps),
        "n_steps": n_steps_for(settings["trajectory_length"], eps),
        "seconds_per_trajectory": seconds / n_traj,
    }
