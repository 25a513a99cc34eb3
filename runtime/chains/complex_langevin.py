"""Complex Langevin (CL) for theories with a complex action, batched over chains.

The fields are complexified, z = x + i y (started at y = 0, x ~ N(0, 1)), and evolve with the
holomorphic drift K = theory.drift(z) = -dS/dz and real-and-imaginary noise

    dx = Re K dt + sqrt(2 N_x dt) eta_x,   dy = Im K dt + sqrt(2 N_y dt) eta_y,   N_x - N_y = 1,

(`noise_imag` = N_y, default 0: real noise). Expectation values of holomorphic observables over
the stationary P(x, y) equal the complex-weight averages when CL is justified (fast decay of P at
large |y| and of the drift distribution; `cl_diagnostics` checks this and its figures go into the
summary).

Step size: with `adaptive=True` (default) each chain takes dt_n = min(eps, eps K_ref / max|K|),
where max|K| is the largest drift component of that chain and K_ref the mean of max|K| over chains
and steps during warm-up (then frozen; Aarts, James, Seiler, Stamatescu, PLB 687 (2010) 154).
This bounds the displacement per step, which is what stops the runaways a fixed step produces.
Configurations are kept *equally spaced in Langevin time*: every `every * eps`. Each chain has its
own clock and reaches each grid time in as many adaptive substeps as it needs (its last one
shortened to land on the grid), so plain averages over kept configurations are the time averages
CL is defined by; no dt weighting is needed. Chains run asynchronously: a chain that has recorded
a configuration goes straight on to the next, and all chains are level only every `sync_every`
(20) kept configurations, where those ahead wait (dt = 0) for the others; a chain that is slow in
one span catches up over the next ones. The driver gets whole blocks (`advance_block`). The
warm-up is one span of `warmup * eps` for every chain. The Langevin time of each kept
configuration is the `langevin_time` statistic.

Schemes: "rk2" (default; stochastic Heun, weak order 2, bias O(eps^2), two drifts per step) and
"em" (Euler-Maruyama, bias O(eps)). On the complex quartic model rk2 shows no bias at eps = 0.02
within 6e-4 on <x^2> (20000 chains), so at the default eps = 0.01 it is below ~2e-4 (0.04%).
Chains that go to NaN/inf, beyond `max_abs`, or whose adaptive step collapses (more than
`max_substeps_factor * every` steps to cover one interval) are dropped and reported (chains/health.py); if
more than `max_bad_fraction` of the chains go bad the run stops and keeps the good chains' data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SamplerError
from . import cl_diagnostics
from .adaptation import DriftReference
from .driver import Output, Plan, run_chains
from .health import ChainHealth
from .moves import per_chain
from .noise import DEFAULT_EVERY, DEFAULT_STEP, DEFAULT_WARMUP, gaussian_noise
from ..parallel import collectives
from ..parallel.streams import randn
from ..parallel.world import world

Tensor = torch.Tensor

CL_SCHEMES = ("em", "rk2")
STAT_NAMES = ("langevin_time", "n_steps", "dt_min", "dt_mean", "drift_magnitude", "y_max", "y_rms",
              "sd_re", "sd_im")
DEFAULT_CL_SCHEME = "rk2"


def complex_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """complex128 for float64/complex128, complex64 for float32/complex64."""
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


# ---------------------------------------------------------------------------------- kernel

@dataclass
class CLState:
    z: Tensor             # (chains, *shape) complex
    drift: Tensor         # K(z)
    time: Tensor          # (chains,) float64: Langevin time since the start
    failed: Tensor        # (chains,) bool: the last step's adaptive step collapsed
    substeps: int = 0     # batched substeps taken so far (all chains at once)


class CLKernel:
    """Advances every chain by `params["span"]` of Langevin time with per-chain steps
    dt = min(eps, eps K_ref / max|K|) (adaptive) or eps, the last one cut to land on the span.

    params: span, max_substeps (a chain needing more has a collapsed step: `failed`), adaptive,
    drift_ref (None during warm-up: the running mean of max|K| from drift_sum / drift_count,
    which this step extends; info returns the sums of this step for the adaptation).
    """

    averaged: tuple[str, ...] = ()
    # draws through parallel/streams.py: chain i's numbers depend on (seed, i) only, so the
    # chains can be split over ranks (chains/driver.py)
    chain_streams = True
    # kept configurations per chain between two moments when all chains are level: a chain that
    # is slow in one span catches up over the others (the results depend on this, not on the
    # checkpoint cadence; blocks and checkpoints fall on multiples of it)
    sync_every = 20

    def __init__(self, theory, scheme: str, noise_imag: float, eps: float):
        if scheme not in CL_SCHEMES:
            raise SamplerError(f"unknown complex Langevin scheme '{scheme}'; choose one of "
                               f"{list(CL_SCHEMES)}")
        self.theory, self.scheme, self.eps = theory, scheme, float(eps)
        self.n_x, self.n_y = 1.0 + float(noise_imag), float(noise_imag)
        self.drifts_per_step = 2 if scheme == "rk2" else 1

    def init(self, z: Tensor, generator=None) -> CLState:
        chains = z.shape[0]
        return CLState(z, self.theory.drift(z),
                       torch.zeros(chains, dtype=torch.float64, device=z.device),
                       torch.zeros(chains, dtype=torch.bool, device=z.device))

    def noise(self, z: Tensor, dt: Tensor, generator: torch.Generator) -> Tensor:
        """sqrt(2 N_x dt) eta_x + i sqrt(2 N_y dt) eta_y with per-chain dt (real if N_y = 0)."""
        real = z.real
        sd = per_chain((2 * dt).sqrt_().to(real.dtype), real)
        eta = gaussian_noise(real.shape, real.dtype, z.device, generator)
        eta.mul_(sd * math.sqrt(self.n_x) if self.n_x != 1 else sd)
        if self.n_y == 0:
            return eta
        eta_y = gaussian_noise(real.shape, real.dtype, z.device, generator)
        return torch.complex(eta, eta_y.mul_(sd * math.sqrt(self.n_y)))

    def substep(self, z: Tensor, drift: Tensor, dt: Tensor, generator: torch.Generator):
        """Advance z (in place) by dt; return (z, drift at the new z). Consumes `drift`."""
        dtb = per_chain(dt.to(z.real.dtype), z)
        noise = self.noise(z, dt, generator)
        move = drift.mul_(dtb)                       # K dt
        if self.scheme == "rk2":                     # Heun: average K over both ends
            predicted = z + move
            _add_noise(predicted, noise)
            move.add_(self.theory.drift(predicted).mul_(dtb)).mul_(0.5)
        _add_noise(z.add_(move), noise)
        return z, self.theory.drift(z)

    def step(self, s: CLState, generator: torch.Generator, params: dict):
        """One span for every chain (the warm-up): (state, info)."""
        s, _, stats, _, info = self.advance(s, generator, params, 1)
        return s, {**info, "n_steps": stats["n_steps"][:, 0], "dt_min": stats["dt_min"][:, 0]}

    def advance_block(self, s: CLState, generator: torch.Generator, params: dict, count: int):
        """`count` kept configurations per chain: (state, configs (chains, count, *shape),
        stats {name: (chains, count)}, failed (chains, count))."""
        s, configs, stats, failed, _ = self.advance(s, generator, params, count)
        return s, configs, stats, failed

    def advance(self, s: CLState, generator: torch.Generator, params: dict, count: int):
        """Every chain advances `count` spans on its own clock: a chain that reaches the end of
        a span records its configuration and goes on with the next at once, so a chain whose
        adaptive steps are small holds the others up only at the end of the block (records are
        scattered chain by chain into the block's buffers, on the device)."""
        eps, span = self.eps, params["span"]
        z, drift = s.z, s.drift
        rdtype, chains, dev = z.real.dtype, z.shape[0], z.device
        real = dict(dtype=rdtype, device=dev)
        # a float32 clock errs by ~1e-7 of one span; it is reset at every kept configuration
        tol = eps * (1e-9 if rdtype == torch.float64 else 1e-5)
        configs = torch.empty((chains, count, *z.shape[1:]), dtype=z.dtype, device=dev)
        stats = {k: torch.empty((chains, count), dtype=torch.float64, device=dev)
                 for k in STAT_NAMES}
        failed = torch.zeros((chains, count), dtype=torch.bool, device=dev)
        index = torch.zeros(chains, dtype=torch.int64, device=dev)   # next record per chain
        remaining = torch.full((chains,), span, **real)
        n_steps = torch.zeros(chains, **real)
        dt_min = torch.full((chains,), eps, **real)
        k_sum = torch.zeros((), dtype=torch.float64, device=dev)
        k_count = torch.zeros((), dtype=torch.float64, device=dev)
        prior_sum, prior_count = params.get("drift_sum", 0.0), params.get("drift_count", 0)
        active = torch.ones(chains, dtype=torch.bool, device=dev)
        substeps = s.substeps
        split = getattr(generator, "split", None) if world().spread else None
        while True:
            if params["adaptive"]:
                k2 = max_drift_squared(drift)
                if params["drift_ref"] is None:     # warm-up: running mean of max|K| (finite)
                    kmax = k2.to(torch.float64).sqrt()
                    ok = active & torch.isfinite(kmax)
                    k_step, n_step = chain_sums(torch.where(ok, kmax, 0.0), ok, split)
                    k_sum += k_step
                    k_count += n_step
                    ref = ((k_sum + prior_sum) / (k_count + prior_count).clamp(min=1)).clamp(
                        min=1e-300).to(rdtype)
                else:
                    ref = params["drift_ref"]
                dt_adaptive = k2.rsqrt_().mul_(eps * ref).clamp_(max=eps)   # |K|=0 -> eps
                torch.minimum(dt_min, torch.where(active, dt_adaptive, eps), out=dt_min)
                dt = torch.minimum(dt_adaptive, remaining)
            else:
                dt = remaining.clamp(max=eps)
            dt = torch.where(active, dt, 0.0)       # chains done with the block wait
            n_steps += active
            z, drift = self.substep(z, drift, dt, generator)
            remaining -= dt
            substeps += 1
            stalled = active & (n_steps > params["max_substeps"])
            due = active & ((remaining <= tol) | stalled | torch.isnan(remaining))
            if not bool(due.any()):
                # chains split over ranks: every rank takes as many substeps as the slowest
                # chain anywhere (the waiting ones draw noise, as in one process)
                if split is not None and not collectives.any_rank(bool(active.any())):
                    break
                continue
            idx = due.nonzero().squeeze(1)
            k = index[idx]
            self._record(configs, stats, idx, k, z, drift, n_steps, dt_min, span, s.time)
            failed[idx, k] = stalled[idx]
            broken = stalled[idx] | ~torch.isfinite(torch.view_as_real(z[idx])).flatten(1).all(1)
            if bool(broken.any()):                  # restart them harmlessly; dropped at the end
                z[idx[broken]] = 0
                drift = self.theory.drift(z)
            index[idx] = k + 1
            remaining[idx] = span
            n_steps[idx] = 0
            dt_min[idx] = eps
            active = index < count
            if not (bool(active.any()) if split is None
                    else collectives.any_rank(bool(active.any()))):
                break
        info = {"drift_sum": float(k_sum), "drift_count": int(k_count)}
        state = CLState(z, drift, s.time + count * span, failed[:, -1], substeps)
        return state, configs, stats, failed, info

    @staticmethod
    def _record(configs, stats, idx, k, z, drift, n_steps, dt_min, span, time0) -> None:
        zi, ki = z[idx], drift[idx]
        configs[idx, k] = zi
        zf, kf = zi.flatten(1), ki.flatten(1)
        # Langevin operator on O = mean(z^2): L_c O = mean(2 (1 + z K)); <L_c O> = 0 is the
        # Schwinger-Dyson equation, and its cutoff dependence the boundary term (cl_diagnostics).
        # in real arithmetic: torch's complex product rounds differently in its vectorised
        # loop and its tail, so it would depend on how many chains are recorded at once
        x, y, kx, ky = zf.real, zf.imag, kf.real, kf.imag
        sd_re = (2 * (1 + (x * kx - y * ky))).mean(1)
        sd_im = (2 * (x * ky + y * kx)).mean(1)
        figures = {"langevin_time": time0[idx] + (k + 1).to(torch.float64) * span,
                   "n_steps": n_steps[idx], "dt_min": dt_min[idx],
                   "dt_mean": span / n_steps[idx].clamp(min=1),
                   "drift_magnitude": (kf.real.square() + kf.imag.square()).mean(1).sqrt(),
                   "y_max": y.abs().amax(1), "y_rms": y.square().mean(1).sqrt(),
                   "sd_re": sd_re, "sd_im": sd_im}
        for name, v in figures.items():
            stats[name][idx, k] = v.to(torch.float64)

    # -- what the driver needs besides init/step
    def fields(self, s: CLState) -> Tensor:
        return s.z

    def failed(self, s: CLState) -> Tensor:
        return s.failed

    def transform(self, s: CLState, fn) -> CLState:
        z = fn(s.z)
        return CLState(z, self.theory.drift(z), s.time, s.failed, s.substeps)

    def summary(self, stats: dict, params: dict, settings: dict) -> dict:
        span, n_done = params["span"], stats["dt_mean"].shape[1]
        eps = self.eps
        out = {
            "scheme": self.scheme, "step_size": eps, "adaptive": params["adaptive"],
            "drift_ref": params["drift_ref"], "noise_imag": self.n_y,
            "langevin_time_per_config": span,
            "langevin_time_total": settings["warmup"] * eps + n_done * span,
            "mean_dt": float(stats["dt_mean"].mean()) if stats["dt_mean"].size else None,
            "min_dt": float(stats["dt_min"].min()) if stats["dt_min"].size else None,
            "intervals_with_adapted_steps": (
                float((stats["dt_min"] < eps * (1 - 1e-9)).mean())
                if stats["dt_min"].size else None),
            "chain_steps": float(stats["n_steps"].sum()),
            "drift_evaluations_per_step": self.drifts_per_step,
        }
        if n_done > 0:
            out["diagnostics"] = cl_diagnostics.summarize(stats)
        return out

    def final_settings(self, params: dict) -> dict:
        return {}

    def timing(self, seconds: float, stats: dict, plan: Plan) -> dict:
        chain_steps = float(stats["n_steps"].sum())
        return {"seconds": seconds, "chain_steps_per_second": chain_steps / max(seconds, 1e-9)}

    def state_dict(self, s: CLState) -> dict:
        return {"z": s.z, "drift": s.drift, "time": s.time, "failed": s.failed,
                "substeps": s.substeps}

    def load_state(self, d: dict, device) -> CLState:
        return CLState(*(d[k].to(device) for k in ("z", "drift", "time", "failed")),
                       int(d["substeps"]))


def chain_sums(x: Tensor, ok: Tensor, split) -> tuple[Tensor, Tensor]:
    """(x.sum(), ok.sum()) over every rank's chains, from one gather per substep, each summed in
    one order (bitwise the one-process sums; a count of 0/1 is exact in float64)."""
    if split is None:
        return x.sum(), ok.sum()
    both = collectives.all_rows(torch.stack([x, ok.to(x.dtype)], 1), split.counts)
    return both[:, 0].contiguous().sum(), both[:, 1].contiguous().sum()


def _add_noise(z: Tensor, noise: Tensor) -> Tensor:
    if noise.is_complex():
        return z.add_(noise)
    z.real.add_(noise)
    return z


def max_drift_squared(drift: Tensor) -> Tensor:
    """Largest |K|^2 over the components of each chain (chains,). (re^2 + im^2 is ~4x cheaper
    than complex abs on the cpu; one dof per chain needs no reduction.)"""
    k2 = (drift.real.square() + drift.imag.square()).flatten(1)
    return k2[:, 0] if k2.shape[1] == 1 else k2.amax(1)


# ------------------------------------------------------------------------------ the sampler

def run_complex_langevin(theory, *, n: int, chains: int = 1024, warmup: int = DEFAULT_WARMUP,
                         seed: int = 0, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float64, step: float | None = None,
                         every: int = DEFAULT_EVERY, noise_imag: float = 0.0,
                         adaptive: bool = True, drift_ref: float | None = None,
                         scheme: str = DEFAULT_CL_SCHEME, progress: bool = True,
                         checkpoint=None, checkpoint_every: int = 50, resume: bool | dict = False,
                         max_abs: float = 1e6, max_bad_fraction: float = 0.1,
                         max_substeps_factor: int = 100, output: Output | None = None,
                         save_every: int = 1, store_configs: bool = True):
    """Sample a complex-action `theory` by complex Langevin; configs are complex (x + i y).

    n: kept configurations per chain, every `every * step` of Langevin time after
    `warmup * step` of warm-up. step: the nominal (largest) dt, default 0.01. noise_imag: N_y >= 0.
    adaptive: bound the drift per step (see module doc); `drift_ref` fixes K_ref instead of
    measuring it during warm-up. The summary holds the CL trust diagnostics (`cl_diagnostics`).
    """
    if n < 1 or chains < 1 or every < 1 or warmup < 0:
        raise SamplerError("need n >= 1, chains >= 1, every >= 1 and warmup >= 0")
    if noise_imag < 0:
        raise SamplerError(f"noise_imag (N_y) must be >= 0, got {noise_imag}")
    if adaptive and warmup == 0 and drift_ref is None:
        raise SamplerError("adaptive complex Langevin measures its reference drift during "
                           "warm-up: give warmup > 0 or drift_ref")
    eps = float(DEFAULT_STEP if step is None else step)
    kernel = CLKernel(theory, scheme, noise_imag, eps)
    cdtype = complex_dtype_for(dtype)
    # the driver's steps are spans of Langevin time: one for the warm-up, one per kept config
    plan = Plan(n=n, chains=chains, warmup=1 if warmup > 0 else 0, every=1,
                save_every=save_every, store_configs=store_configs, block=checkpoint_every,
                seed=seed, device=device)
    common = {"adaptive": bool(adaptive), "drift_ref": drift_ref}
    warm = {**common, "span": warmup * eps, "max_substeps": max_substeps_factor * max(warmup, 1)}
    production = {**common, "span": every * eps, "max_substeps": max_substeps_factor * every}
    adaptation = DriftReference(warm, production, measure=adaptive and drift_ref is None)
    settings = {
        "sampler": "complex_langevin", "scheme": scheme, "step": eps,
        "noise_imag": float(noise_imag), "adaptive": bool(adaptive),
        "drift_ref_given": None if drift_ref is None else float(drift_ref),
        "dtype": str(cdtype).replace("torch.", ""), "theory": theory.name,
        "shape": list(theory.shape), "max_abs": float(max_abs),
        "max_bad_fraction": float(max_bad_fraction),
        "max_substeps_factor": int(max_substeps_factor),
        "spacing": "equal Langevin time", "warmup": int(warmup), "every": int(every),
        "sync_every": CLKernel.sync_every,
    }
    rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32

    def start(generator):
        return randn((generator.chains, *theory.shape), generator=generator, device=plan.device,
                     dtype=rdtype).to(cdtype)
    return run_chains(kernel, start, plan, adaptation, settings, output=output,
                      health=ChainHealth(chains, plan.device, max_abs, max_bad_fraction),
                      checkpoint=checkpoint, resume=resume, progress=progress,
                      label=f"complex-langevin-{scheme}")
