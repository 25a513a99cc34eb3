"""Real Langevin dynamics (stochastic quantization), batched over independent chains.

    dphi = K(phi) dtau + sqrt(2 dtau) eta,   K = theory.drift = -dS/dphi,

whose stationary distribution is exp(-S) up to the integrator's step-size bias. Kernels (NumPyro
style: `init(phi) -> state`, `step(state, generator) -> state`), one per scheme:

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
Complex theories are dispatched to `complex_langevin.run_complex_langevin`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_run_checkpoint, save_checkpoint

from .ensemble import SamplerRun
from .errors import SamplerError

Tensor = torch.Tensor

SCHEMES = ("em", "rk2", "bm", "mala")
DEFAULT_SCHEME = "bm"
DEFAULT_STEP = 0.01
DEFAULT_EVERY = 20
DEFAULT_WARMUP = 1000
MALA_TARGET_ACCEPT = 0.6


# ---------------------------------------------------------------------------------- kernels

@dataclass
class LangevinState:
    """All chains' fields with what the next step reuses (the drift; "bm" noise; "mala" action)."""
    phi: Tensor                   # (chains, *shape)
    drift: Tensor                 # K(phi)
    noise: Tensor | None = None   # "bm": eta_n, to be averaged with eta_{n+1}
    action: Tensor | None = None  # "mala": S(phi) in float64
    accepted: Tensor | None = None  # "mala": accepted proposals per chain since the last reset


def gaussian_noise(shape, dtype: torch.dtype, device, generator: torch.Generator) -> Tensor:
    """Standard normal noise. On the cpu float64 noise is drawn in float32 and cast: torch's float64
    normal sampler is ~6x slower there, and the float32 rounding of a Gaussian variate (1e-7
    relative) is far below any statistical error (MALA stays exact: it uses the actual move)."""
    device = torch.device(device)
    if dtype == torch.float64 and device.type == "cpu":
        return torch.randn(shape, generator=generator, device=device,
                           dtype=torch.float32).to(torch.float64)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def _randn(like: Tensor, generator: torch.Generator) -> Tensor:
    return gaussian_noise(like.shape, like.dtype, like.device, generator)


def _per_chain(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class EulerMaruyama:
    """phi += eps K(phi) + sqrt(2 eps) eta."""
    name = "em"
    drifts_per_step = 1

    def __init__(self, theory, step: float):
        self.theory, self.eps = theory, float(step)

    def init(self, phi: Tensor, generator: torch.Generator) -> LangevinState:
        return LangevinState(phi, self.theory.drift(phi))

    def step(self, s: LangevinState, generator: torch.Generator) -> LangevinState:
        eta = _randn(s.phi, generator)
        phi = s.phi.add_(s.drift, alpha=self.eps).add_(eta, alpha=math.sqrt(2 * self.eps))
        return replace(s, phi=phi, drift=self.theory.drift(phi))

    def after_symmetry(self, s: LangevinState, transform) -> LangevinState:
        phi = transform(s.phi)
        return replace(s, phi=phi, drift=self.theory.drift(phi))


class Heun(EulerMaruyama):
    """Stochastic Heun (RK2): EM predictor, trapezoidal corrector with the same noise."""
    name = "rk2"
    drifts_per_step = 2

    def step(self, s: LangevinState, generator: torch.Generator) -> LangevinState:
        eta = _randn(s.phi, generator).mul_(math.sqrt(2 * self.eps))
        predicted = s.phi + self.eps * s.drift + eta
        k_pred = self.theory.drift(predicted)
        phi = s.phi.add_(s.drift.add_(k_pred), alpha=0.5 * self.eps).add_(eta)
        return replace(s, phi=phi, drift=self.theory.drift(phi))


class LeimkuhlerMatthews(EulerMaruyama):
    """BAOAB limit: phi += eps K + sqrt(eps/2) (eta_n + eta_{n+1}); eta_{n+1} is kept."""
    name = "bm"

    def init(self, phi: Tensor, generator: torch.Generator) -> LangevinState:
        return LangevinState(phi, self.theory.drift(phi), noise=_randn(phi, generator))

    def step(self, s: LangevinState, generator: torch.Generator) -> LangevinState:
        eta = _randn(s.phi, generator)
        phi = s.phi.add_(s.drift, alpha=self.eps).add_(s.noise.add_(eta),
                                                        alpha=math.sqrt(self.eps / 2))
        return replace(s, phi=phi, drift=self.theory.drift(phi), noise=eta)

    def after_symmetry(self, s: LangevinState, transform) -> LangevinState:
        phi = transform(s.phi)
        return replace(s, phi=phi, drift=self.theory.drift(phi), noise=transform(s.noise))


class MALA(EulerMaruyama):
    """EM proposal + Metropolis-Hastings test; log-densities in float64."""
    name = "mala"

    def init(self, phi: Tensor, generator: torch.Generator) -> LangevinState:
        return LangevinState(phi, self.theory.drift(phi), action=self._action(phi),
                             accepted=torch.zeros(phi.shape[0], device=phi.device,
                                                  dtype=torch.float64))

    def _action(self, phi: Tensor) -> Tensor:
        return self.theory.action(phi.to(torch.float64)).to(torch.float64)

    def _log_q(self, to: Tensor, frm: Tensor, drift_frm: Tensor) -> Tensor:
        """log q(to | frm) up to a constant: -|to - frm - eps K(frm)|^2 / (4 eps)."""
        d = (to - frm - self.eps * drift_frm).to(torch.float64)
        return -d.square().flatten(1).sum(1) / (4 * self.eps)

    def step(self, s: LangevinState, generator: torch.Generator) -> LangevinState:
        eta = _randn(s.phi, generator)
        prop = s.phi + self.eps * s.drift + math.sqrt(2 * self.eps) * eta
        k_prop, s_prop = self.theory.drift(prop), self._action(prop)
        log_ratio = (s.action - s_prop + self._log_q(s.phi, prop, k_prop)
                     - self._log_q(prop, s.phi, s.drift))
        log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio,
                                torch.full_like(log_ratio, -math.inf))
        u = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device,
                       dtype=torch.float64)
        ok = torch.log(u) < log_ratio
        okb = _per_chain(ok, prop)
        return LangevinState(torch.where(okb, prop, s.phi), torch.where(okb, k_prop, s.drift),
                             action=torch.where(ok, s_prop, s.action),
                             accepted=s.accepted + ok.to(torch.float64))

    def after_symmetry(self, s: LangevinState, transform) -> LangevinState:
        phi = transform(s.phi)
        return replace(s, phi=phi, drift=self.theory.drift(phi), action=self._action(phi))


KERNELS = {k.name: k for k in (EulerMaruyama, Heun, LeimkuhlerMatthews, MALA)}


def apply_symmetries(kernel, state: LangevinState, symmetries, generator) -> LangevinState:
    """Apply each symmetry to each chain with probability 1/2 (exact for a real target)."""
    for sym in symmetries:
        flip = torch.rand(state.phi.shape[0], generator=generator, device=state.phi.device) < 0.5

        def transform(t, sym=sym, flip=flip):
            return torch.where(_per_chain(flip, t), sym(t), t)
        state = kernel.after_symmetry(state, transform)
    return state


# --------------------------------------------------------------------- chains that go bad

class ChainHealth:
    """Per-chain watch for NaN/inf and runaways (|phi| beyond `max_abs`); shared with CL.

    A chain that goes bad is frozen (its fields are set to 0 so it cannot poison anything) and is
    left out of the returned ensemble; the run stops early when more than `max_bad_fraction` of the
    chains went bad, returning what the good chains produced until then.
    """

    def __init__(self, chains: int, device, max_abs: float, max_bad_fraction: float):
        self.bad = torch.zeros(chains, dtype=torch.bool, device=device)
        self.went_bad_at = np.full(chains, -1, dtype=np.int64)   # kept index when flagged
        self.max_abs, self.max_bad_fraction = float(max_abs), float(max_bad_fraction)

    def check(self, z: Tensor, index: int, extra_bad: Tensor | None = None) -> Tensor:
        """Flag chains whose `z` is not finite or too large; return the newly bad mask."""
        flat = z.flatten(1)
        fine = torch.isfinite(flat).all(1) & (flat.abs().amax(1) <= self.max_abs)
        new = ~fine & ~self.bad
        if extra_bad is not None:
            new |= extra_bad & ~self.bad
        if bool(new.any()):
            self.bad |= new
            self.went_bad_at[new.cpu().numpy()] = index
            z[_per_chain(self.bad, z).expand_as(z)] = 0
        return new

    def mark(self, chains: Tensor, at_index: Tensor) -> None:
        """Flag `chains` (indices) as bad, first seen at kept index `at_index`."""
        fresh = ~self.bad[chains]
        chains, at_index = chains[fresh], at_index[fresh]
        self.bad[chains] = True
        self.went_bad_at[chains.cpu().numpy()] = at_index.cpu().numpy()

    @property
    def n_bad(self) -> int:
        return int(self.bad.sum())

    def too_many(self) -> bool:
        return self.n_bad > self.max_bad_fraction * self.bad.numel()

    def report(self) -> dict:
        idx = np.flatnonzero(self.went_bad_at >= 0)
        return {"n_bad_chains": int(idx.size),
                "bad_chains": idx[:100].tolist(),
                "went_bad_at_config": self.went_bad_at[idx[:100]].tolist()}

    def state_dict(self) -> dict:
        return {"bad": self.bad, "went_bad_at": torch.from_numpy(self.went_bad_at)}

    def load(self, d: dict) -> None:
        self.bad = d["bad"].to(self.bad.device)
        self.went_bad_at = d["went_bad_at"].numpy().copy()


def trim_bad(configs: Tensor, stats: dict, health: ChainHealth, n_done: int):
    """Keep the good chains and the `n_done` configurations recorded so far."""
    good = (~health.bad).cpu()
    if not bool(good.any()):
        raise SamplerError(
            f"all {good.numel()} chains ran away (non-finite or |field| > {health.max_abs:g}); "
            "use a smaller step size (complex Langevin: keep adaptive steps on)")
    configs = configs[good, :n_done].contiguous()
    stats = {k: v[good.numpy(), :n_done].copy() for k, v in stats.items()}
    return configs, stats


# -------------------------------------------------------------------------------- driver

def check_real_langevin(theory) -> None:
    spins = [f for f, k in zip(theory.field_names, theory.field_kinds) if k != "real"]
    if spins:
        raise SamplerError(
            f"theory '{theory.name}' has discrete (spin) field(s) {', '.join(spins)}; Langevin "
            "needs continuous fields: use an autoregressive model (--sampler flow) instead")


def run_langevin(theory, *, n: int, chains: int = 64, warmup: int = DEFAULT_WARMUP, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 step: float | None = None, every: int = DEFAULT_EVERY,
                 scheme: str | None = None, symmetrize: bool = True, progress: bool = True,
                 checkpoint=None, checkpoint_every: int = 50, resume: bool = False,
                 max_abs: float = 1e6, max_bad_fraction: float = 0.1,
                 **complex_options) -> SamplerRun:
    """Sample `theory` by Langevin dynamics: `chains` chains, `warmup` steps, `n` kept per chain.

    A complex theory (`theory.is_complex`) goes to complex Langevin with the same arguments plus
    `complex_options` (noise_imag, adaptive, ...; see `run_complex_langevin`).
    scheme: "em" | "rk2" | "bm" (default) | "mala". step: the Langevin step eps (default 0.01;
    for "mala" it is only the starting value, tuned during warm-up towards acceptance 0.6, unless
    given). every: steps between kept configurations. symmetrize: random global symmetry moves.
    Chains that produce NaN/inf or |phi| > max_abs are dropped (reported in the summary); more than
    `max_bad_fraction` of them stops the run. With `checkpoint=path` the run state is saved every
    `checkpoint_every` kept configurations; `resume=True` continues from it (bitwise identical).
    """
    if theory.is_complex:
        from .complex_langevin import run_complex_langevin
        return run_complex_langevin(
            theory, n=n, chains=chains, warmup=warmup, seed=seed, device=device, dtype=dtype,
            step=step, every=every, scheme=scheme or "rk2", progress=progress,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
            max_abs=max_abs, max_bad_fraction=max_bad_fraction, **complex_options)
    if complex_options:
        raise SamplerError(f"options {sorted(complex_options)} apply to complex Langevin only; "
                           f"theory '{theory.name}' is real")
    check_real_langevin(theory)
    scheme = scheme or DEFAULT_SCHEME
    if scheme not in KERNELS:
        raise SamplerError(f"unknown Langevin scheme '{scheme}'; choose one of {list(KERNELS)}")
    if n < 1 or chains < 1 or every < 1 or warmup < 0:
        raise SamplerError("need n >= 1, chains >= 1, every >= 1 and warmup >= 0")
    settings = {
        "sampler": "langevin", "scheme": scheme, "n": int(n), "chains": int(chains),
        "warmup": int(warmup), "seed": int(seed), "every": int(every),
        "step_given": None if step is None else float(step),
        "symmetrize": bool(symmetrize), "dtype": str(dtype).replace("torch.", ""),
        "theory": theory.name, "shape": list(theory.shape), "max_abs": float(max_abs),
        "max_bad_fraction": float(max_bad_fraction),
    }
    loop = _LangevinLoop(theory, settings, torch.device(device), dtype)
    if checkpoint is not None and resume:
        loop.restore_if_present(checkpoint)
    loop.loop(progress, checkpoint, checkpoint_every)
    return loop.result()


class _LangevinLoop:
    """The whole state of a real Langevin run, in one place so it can be checkpointed."""

    def __init__(self, theory, settings: dict, device: torch.device, dtype: torch.dtype):
        self.theory, self.settings, self.device, self.dtype = theory, settings, device, dtype
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(settings["seed"])
        self.scheme = settings["scheme"]
        given = settings["step_given"]
        self.eps = DEFAULT_STEP if given is None else given
        self.tune = self.scheme == "mala" and given is None and settings["warmup"] > 0
        self.symmetries = list(theory.symmetries or ()) if settings["symmetrize"] else []
        chains, n = settings["chains"], settings["n"]
        phi0 = torch.randn((chains, *theory.shape), generator=self.generator, device=device,
                           dtype=dtype)
        self.kernel = KERNELS[self.scheme](theory, self.eps)
        self.state = self.kernel.init(phi0, self.generator)
        self.health = ChainHealth(chains, device, settings["max_abs"],
                                  settings["max_bad_fraction"])
        self.block = 0           # blocks of `every` steps done, warm-up blocks first
        self.stopped = None      # why the run stopped early, if it did
        self.configs = torch.zeros((chains, n, *theory.shape), dtype=dtype)
        self.stats = {"drift_magnitude": np.zeros((chains, n))}
        if self.scheme == "mala":
            self.stats["accept"] = np.zeros((chains, n))
        self.seconds = 0.0

    @property
    def warm_blocks(self) -> int:
        return -(-self.settings["warmup"] // self.settings["every"])

    @property
    def total(self) -> int:
        return self.warm_blocks + self.settings["n"]

    def advance(self) -> None:
        s, k = self.settings, self.block - self.warm_blocks
        n_steps = s["every"] if k >= 0 else min(s["every"], s["warmup"] - self.block * s["every"])
        start = time.perf_counter()
        if self.state.accepted is not None:
            self.state.accepted.zero_()
        for _ in range(n_steps):
            self.state = self.kernel.step(self.state, self.generator)
        if k < 0 and self.tune:
            self._tune(float(self.state.accepted.mean()) / n_steps)
        self.health.check(self.state.phi, max(k, 0))
        if k >= 0:
            self._record(k, n_steps)
            self.seconds += time.perf_counter() - start
        if self.symmetries:
            self.state = apply_symmetries(self.kernel, self.state, self.symmetries,
                                          self.generator)
        self.block += 1
        if self.health.too_many():
            self.stopped = (f"stopped after {max(k + 1, 0)} of {s['n']} configurations: "
                            f"{self.health.n_bad} of {s['chains']} chains ran away")

    def _tune(self, acceptance: float) -> None:
        """Robbins-Monro on log eps towards the MALA target acceptance, warm-up only."""
        rate = 1.0 / math.sqrt(1 + self.block)
        self.eps *= math.exp(rate * (acceptance - MALA_TARGET_ACCEPT) * 2)
        self.kernel.eps = self.eps

    def _record(self, k: int, n_steps: int) -> None:
        phi, drift = self.state.phi, self.state.drift
        self.configs[:, k] = phi.detach().to("cpu")
        self.stats["drift_magnitude"][:, k] = (
            drift.flatten(1).square().mean(1).sqrt().to("cpu", torch.float64).numpy())
        if "accept" in self.stats:
            self.stats["accept"][:, k] = (self.state.accepted / n_steps).cpu().numpy()

    def loop(self, progress: bool, checkpoint, checkpoint_every: int) -> None:
        bar = tqdm(total=self.total, initial=self.block, disable=not progress,
                   desc=f"langevin-{self.scheme}", unit="cfg")
        with bar:
            while self.block < self.total and self.stopped is None:
                self.advance()
                bar.update(1)
                done = self.block - self.warm_blocks
                if checkpoint is not None and done >= 0 and (
                        done % checkpoint_every == 0 or self.block == self.total):
                    save_checkpoint(checkpoint, self.snapshot())

    # -- checkpointing
    def snapshot(self) -> dict:
        st = self.state
        return {"sampler": "langevin", "settings": self.settings, "block": self.block,
                "phi": st.phi, "drift": st.drift, "noise": st.noise, "action": st.action,
                "accepted": st.accepted, "eps": self.eps,
                "generator": self.generator.get_state(), "configs": self.configs,
                "stats": {k: torch.from_numpy(v) for k, v in self.stats.items()},
                "health": self.health.state_dict(), "seconds": self.seconds}

    def restore_if_present(self, path) -> None:
        snap = load_run_checkpoint(path, "langevin", self.settings)
        if snap is None:
            return
        dev = self.device

        def to_dev(t):
            return None if t is None else t.to(dev)
        self.state = LangevinState(to_dev(snap["phi"]), to_dev(snap["drift"]),
                                   to_dev(snap["noise"]), to_dev(snap["action"]),
                                   to_dev(snap["accepted"]))
        self.eps = snap["eps"]
        self.kernel.eps = self.eps
        self.block = snap["block"]
        self.generator.set_state(snap["generator"])
        self.configs = snap["configs"]
        self.stats = {k: v.numpy().copy() for k, v in snap["stats"].items()}
        self.health.load(snap["health"])
        self.seconds = snap["seconds"]

    # -- output
    def result(self) -> SamplerRun:
        s = self.settings
        n_done = min(max(self.block - self.warm_blocks, 0), s["n"])
        configs, stats = trim_bad(self.configs, self.stats, self.health, n_done)
        summary = {
            "scheme": self.scheme, "step_size": self.eps,
            "langevin_time_per_config": self.eps * s["every"],
            "status": self.stopped or "completed",
            "seconds_per_step": self.seconds / max(1, n_done * s["every"]),
            "drift_evaluations_per_step": self.kernel.drifts_per_step,
            **self.health.report(),
        }
        if "accept" in stats:
            summary["acceptance"] = float(stats["accept"].mean())
        settings = dict(s, step_size=self.eps, tuned=self.tune, device=str(self.device))
        return SamplerRun(configs=configs, stats=stats, summary=summary, settings=settings)
