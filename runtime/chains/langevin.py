"""Real Langevin dynamics (stochastic quantization), batched over independent chains.

    dphi = K(phi) dtau + sqrt(2 dtau) eta,   K = theory.drift = -dS/dphi,

whose stationary distribution is exp(-S) up to the integrator's step-size bias. Kernels for the chain
driver (chains/driver.py), one per scheme, with params {"step": eps}:

- "em"   Euler-Maruyama: one drift per step, bias O(eps) on every average.
- "rk2"  stochastic Heun (the Fukugita-Ukawa-type Runge-Kutta for additive noise): predictor
         phi' = phi + eps K + sqrt(2 eps) eta, corrector phi + eps/2 (K + K') + sqrt(2 eps) eta with
         the same eta. Weak order 2 for additive noise, so bias O(eps^2); two drifts per step.
- "bm"   the BAOAB limit method of Leimkuhler & Matthews (AMRX 2013 34): phi + eps K +
         sqrt(eps/2) (eta_n + eta_{n+1}), one drift per step, bias O(eps^2) on configurational
         averages and *exact* for a Gaussian target. The previous noise is part of the state.
- "mala" Metropolis-adjusted Langevin: an EM proposal accepted with the Metropolis-Hastings
         ratio (action and proposal densities in float64): exact at any step size.

The default is "bm" at eps = 0.01: its bias is far below the statistical error of any run this
package makes (second order, and zero for free fields). Units: `warmup` and `every` count
integrator steps, so the Langevin time between kept configurations is `every * step`.
After each kept configuration (and each warm-up block of `every` steps) each declared symmetry is
applied to each chain with probability 1/2: an exact move for a real target (the symmetries are
orthogonal maps that leave S invariant, so they commute with the dynamics; "bm" also maps its
stored noise so the joint stationary law of (phi, eta) is preserved).
Chains that produce NaN/inf or |phi| > max_abs are reset and dropped (chains/health.py).
Complex theories are dispatched to `complex_langevin.run_complex_langevin`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..errors import SamplerError
from .adaptation import Fixed, RobbinsMonro
from .angles import angle_wrapper, discrete_fields
from .compiling import Compiled, fused_step, new_step, scalar
from .complex_langevin import run_complex_langevin
from .driver import Output, Plan, run_chains
from .health import ChainHealth
from .moves import per_chain
from .noise import DEFAULT_EVERY, DEFAULT_STEP, DEFAULT_WARMUP, gaussian_noise
from ..parallel.streams import rand, randn

Tensor = torch.Tensor

SCHEMES = ("em", "rk2", "bm", "mala")
DEFAULT_SCHEME = "bm"
MALA_TARGET_ACCEPT = 0.6


# ---------------------------------------------------------------------------------- kernels

@dataclass
class LangevinState:
    """All chains' fields with what the next step reuses (the drift; "bm" noise; "mala" action)."""
    phi: Tensor                   # (chains, *shape)
    drift: Tensor                 # K(phi)
    noise: Tensor | None = None   # "bm": eta_n, to be averaged with eta_{n+1}
    action: Tensor | None = None  # "mala": S(phi) in float64


def _randn(like: Tensor, generator: torch.Generator) -> Tensor:
    return gaussian_noise(like.shape, like.dtype, like.device, generator)


class EulerMaruyama:
    """phi += eps K(phi) + sqrt(2 eps) eta."""
    name = "em"
    # draws through parallel/streams.py: chain i's numbers depend on (seed, i) only, so the
    # chains can be split over ranks (chains/driver.py)
    chain_streams = True
    drifts_per_step = 1
    averaged: tuple[str, ...] = ()

    def __init__(self, theory, compile: bool = False):
        self.theory = theory
        self.wrap = angle_wrapper(theory)       # angles leave the kernel in [-pi, pi)
        # --compile: the step as the theory's fused langevin_step under torch.compile
        self.fused = fused_step(theory, "langevin_step") if compile else None

    def init(self, phi: Tensor, generator: torch.Generator) -> LangevinState:
        self.warm(phi)
        return LangevinState(phi, self.theory.drift(phi))

    def warm(self, phi: Tensor) -> None:
        """Compile the fused step on the chains' own fields (step 0, zero noise: nothing is
        changed); distinct tensors, since torch.compile would specialise on aliasing ones."""
        if self.fused is None:
            return
        self.compiled = Compiled(self.fused_update, phi.device, kept=True)
        zeros = [torch.zeros_like(phi) for _ in range(self.fused_noises + 1)]
        self.compiled.warm(phi, *zeros, scalar(0.0, phi), scalar(0.0, phi))

    fused_noises = 1

    def fused_update(self, phi, k, eta, eps, scale):
        return self.fused(phi, k, eta, eps, scale)

    def compiled_step(self, *tensors, eps: float, scale: float):
        """The compiled update (its outputs are the new state: kept, compiling.Compiled)."""
        new_step()
        return self.compiled(*tensors, scalar(eps, tensors[0]), scalar(scale, tensors[0]))

    def step(self, s: LangevinState, generator: torch.Generator, params: dict):
        eps = params["step"]
        eta = _randn(s.phi, generator)
        if self.fused is not None:
            phi, k = self.compiled_step(s.phi, s.drift, eta, eps=eps, scale=math.sqrt(2 * eps))
            return replace(s, phi=phi, drift=k), {}
        phi = s.phi.add_(s.drift, alpha=eps).add_(eta, alpha=math.sqrt(2 * eps))
        return replace(s, phi=phi, drift=self.theory.drift(phi)), {}

    # -- what the driver needs besides init/step
    def fields(self, s: LangevinState) -> Tensor:
        return self.wrap(s.phi)

    def transform(self, s: LangevinState, fn) -> LangevinState:
        phi = fn(s.phi)
        return replace(s, phi=phi, drift=self.theory.drift(phi))

    def record(self, s: LangevinState, info: dict, params: dict) -> dict:
        return {"drift_magnitude": s.drift.flatten(1).square().mean(1).sqrt()}

    def summary(self, stats: dict, params: dict, settings: dict) -> dict:
        out = {"scheme": self.name, "step_size": params["step"],
               "langevin_time_per_config": params["step"] * settings["every"],
               "drift_evaluations_per_step": self.drifts_per_step}
        if "accept" in stats:
            out["acceptance"] = float(stats["accept"].mean())
        return out

    def final_settings(self, params: dict) -> dict:
        return {"step_size": params["step"]}

    def timing(self, seconds: float, stats: dict, plan: Plan) -> dict:
        compiled = {} if self.fused is None else {"compile_seconds": self.compiled.seconds}
        return {"seconds": seconds, "seconds_per_step": seconds / max(1, plan.n * plan.every), **compiled}

    def state_dict(self, s: LangevinState) -> dict:
        return {"phi": s.phi, "drift": s.drift, "noise": s.noise, "action": s.action}

    def load_state(self, d: dict, device) -> LangevinState:
        return LangevinState(*(None if d[k] is None else d[k].to(device)
                               for k in ("phi", "drift", "noise", "action")))


class Heun(EulerMaruyama):
    """Stochastic Heun (RK2): EM predictor, trapezoidal corrector with the same noise."""
    name = "rk2"
    drifts_per_step = 2

    def step(self, s: LangevinState, generator: torch.Generator, params: dict):
        eps = params["step"]
        eta = _randn(s.phi, generator).mul_(math.sqrt(2 * eps))
        predicted = s.phi + eps * s.drift + eta
        k_pred = self.theory.drift(predicted)
        phi = s.phi.add_(s.drift.add_(k_pred), alpha=0.5 * eps).add_(eta)
        return replace(s, phi=phi, drift=self.theory.drift(phi)), {}


class LeimkuhlerMatthews(EulerMaruyama):
    """BAOAB limit: phi += eps K + sqrt(eps/2) (eta_n + eta_{n+1}); eta_{n+1} is kept."""
    name = "bm"

    def init(self, phi: Tensor, generator: torch.Generator) -> LangevinState:
        self.warm(phi)
        return LangevinState(phi, self.theory.drift(phi), noise=_randn(phi, generator))

    fused_noises = 2

    def fused_update(self, phi, k, noise, eta, eps, scale):
        return self.fused(phi, k, noise + eta, eps, scale)

    def step(self, s: LangevinState, generator: torch.Generator, params: dict):
        eps = params["step"]
        eta = _randn(s.phi, generator)
        if self.fused is not None:
            phi, k = self.compiled_step(s.phi, s.drift, s.noise, eta, eps=eps, scale=math.sqrt(eps / 2))
            return replace(s, phi=phi, drift=k, noise=eta), {}
        phi = s.phi.add_(s.drift, alpha=eps).add_(s.noise.add_(eta), alpha=math.sqrt(eps / 2))
        return replace(s, phi=phi, drift=self.theory.drift(phi), noise=eta), {}

    def transform(self, s: LangevinState, fn) -> LangevinState:
        """The stored noise is mapped with the fields (for a symmetry: the joint stationary law of
        (phi, eta) is preserved; for a reset of a bad chain it is zeroed with it)."""
        phi = fn(s.phi)
        return replace(s, phi=phi, drift=self.theory.drift(phi), noise=fn(s.noise))


class MALA(EulerMaruyama):
    """EM proposal + Metropolis-Hastings test; log-densities in float64."""
    name = "mala"
    averaged = ("accept",)

    def init(self, phi: Tensor, generator: torch.Generator) -> LangevinState:
        return LangevinState(phi, self.theory.drift(phi), action=self._action(phi))

    def _action(self, phi: Tensor) -> Tensor:
        return self.theory.action(phi.to(torch.float64)).to(torch.float64)

    @staticmethod
    def _log_q(to: Tensor, frm: Tensor, drift_frm: Tensor, eps: float) -> Tensor:
        """log q(to | frm) up to a constant: -|to - frm - eps K(frm)|^2 / (4 eps)."""
        d = (to - frm - eps * drift_frm).to(torch.float64)
        return -d.square().flatten(1).sum(1) / (4 * eps)

    def step(self, s: LangevinState, generator: torch.Generator, params: dict):
        eps = params["step"]
        eta = _randn(s.phi, generator)
        prop = s.phi + eps * s.drift + math.sqrt(2 * eps) * eta
        k_prop, s_prop = self.theory.drift(prop), self._action(prop)
        log_ratio = (s.action - s_prop + self._log_q(s.phi, prop, k_prop, eps)
                     - self._log_q(prop, s.phi, s.drift, eps))
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        u = rand(log_ratio.shape, generator=generator, device=log_ratio.device,
                 dtype=torch.float64)
        ok = torch.log(u) < log_ratio
        okb = per_chain(ok, prop)
        new = LangevinState(torch.where(okb, prop, s.phi), torch.where(okb, k_prop, s.drift),
                            action=torch.where(ok, s_prop, s.action))
        return new, {"accept": ok.to(torch.float64)}

    def transform(self, s: LangevinState, fn) -> LangevinState:
        phi = fn(s.phi)
        return replace(s, phi=phi, drift=self.theory.drift(phi), action=self._action(phi))

    def record(self, s: LangevinState, info: dict, params: dict) -> dict:
        return {**super().record(s, info, params), "accept": info["accept"]}


KERNELS = {k.name: k for k in (EulerMaruyama, Heun, LeimkuhlerMatthews, MALA)}
COMPILED_SCHEMES = ("em", "bm")


# ------------------------------------------------------------------------------ the sampler

def check_real_langevin(theory) -> None:
    spins = discrete_fields(theory)
    if spins:
        raise SamplerError(
            f"theory '{theory.name}' has discrete (spin) field(s) {', '.join(spins)}; Langevin "
            "needs continuous fields: use --sampler metropolis (or an autoregressive model, "
            "--sampler flow)")


def run_langevin(theory, *, n: int, chains: int = 64, warmup: int = DEFAULT_WARMUP, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 step: float | None = None, every: int = DEFAULT_EVERY,
                 scheme: str | None = None, symmetrize: bool = True, progress: bool = True,
                 checkpoint=None, checkpoint_every: int = 50, resume: bool | dict = False,
                 max_abs: float = 1e6, max_bad_fraction: float = 0.1,
                 output: Output | None = None, save_every: int = 1, store_configs: bool = True,
                 compile: bool = False, **complex_options):
    """Sample `theory` by Langevin dynamics: `chains` chains, `warmup` steps, `n` kept per chain.

    A complex theory (`theory.is_complex`) goes to complex Langevin with the same arguments plus
    `complex_options` (noise_imag, adaptive, ...; see `run_complex_langevin`).
    scheme: "em" | "rk2" | "bm" (default) | "mala". step: the Langevin step eps (default 0.01;
    for "mala" it is only the starting value, tuned during warm-up towards acceptance 0.6, unless
    given). every: steps between kept configurations. symmetrize: random global symmetry moves.
    Chains that produce NaN/inf or |phi| > max_abs are dropped (reported in the summary); more than
    `max_bad_fraction` of them stops the run. With `checkpoint=path` the run state is saved every
    `checkpoint_every` kept configurations; `resume=True` continues from it (bitwise identical).
    compile: schemes "em" and "bm" step through the theory's torch.compile'd fused langevin_step
    (the same chains to rounding; compiled once before warm-up, `timing["compile_seconds"]`).
    """
    common = dict(n=n, chains=chains, warmup=warmup, seed=seed, device=device, dtype=dtype,
                  step=step, every=every, progress=progress, checkpoint=checkpoint,
                  checkpoint_every=checkpoint_every, resume=resume, max_abs=max_abs,
                  max_bad_fraction=max_bad_fraction, output=output, save_every=save_every,
                  store_configs=store_configs)
    if compile and (theory.is_complex or (scheme or DEFAULT_SCHEME) not in COMPILED_SCHEMES):
        raise SamplerError(f"--compile applies to the real Langevin schemes {', '.join(COMPILED_SCHEMES)}; "
                           "drop --compile or choose one of them")
    if theory.is_complex:
        return run_complex_langevin(theory, scheme=scheme or "rk2", **common, **complex_options)
    if complex_options:
        raise SamplerError(f"options {sorted(complex_options)} apply to complex Langevin only; "
                           f"theory '{theory.name}' is real")
    check_real_langevin(theory)
    scheme = scheme or DEFAULT_SCHEME
    if scheme not in KERNELS:
        raise SamplerError(f"unknown Langevin scheme '{scheme}'; choose one of {list(KERNELS)}")
    plan = Plan(n=n, chains=chains, warmup=warmup, every=every, save_every=save_every,
                store_configs=store_configs, block=checkpoint_every, seed=seed, device=device)
    eps0 = DEFAULT_STEP if step is None else float(step)
    tuned = scheme == "mala" and step is None and warmup > 0
    adaptation = RobbinsMonro(eps0, MALA_TARGET_ACCEPT, every) if tuned else Fixed(step=eps0)
    settings = {
        "sampler": "langevin", "scheme": scheme,
        "step_given": None if step is None else float(step),
        "symmetrize": bool(symmetrize), "dtype": str(dtype).replace("torch.", ""),
        "theory": theory.name, "shape": list(theory.shape), "max_abs": float(max_abs),
        "max_bad_fraction": float(max_bad_fraction), "tuned": tuned,
        **({"compile": True} if compile else {}),     # a checkpoint resumes on the same path
    }

    def start(generator):
        return randn((generator.chains, *theory.shape), generator=generator, device=plan.device,
                     dtype=dtype)
    return run_chains(KERNELS[scheme](theory, compile=compile), start, plan, adaptation, settings, output=output,
                      symmetries=list(theory.symmetries or ()) if symmetrize else [],
                      health=ChainHealth(chains, plan.device, max_abs, max_bad_fraction),
                      checkpoint=checkpoint, resume=resume, progress=progress,
                      label=f"langevin-{scheme}")
