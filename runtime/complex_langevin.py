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
Configurations are kept *equally spaced in Langevin time*: every `every * eps` (each chain's last
step is shortened to land on that time), so plain averages over kept configurations are the
time averages CL is defined by; no dt weighting is needed. The Langevin time of each kept
configuration is recorded in the `langevin_time` statistic.

Schemes: "rk2" (default; stochastic Heun, weak order 2, bias O(eps^2), two drifts per step) and
"em" (Euler-Maruyama, bias O(eps)). At the default eps = 0.01 the rk2 bias on the complex quartic
model is ~1e-5, far below the statistical error of any affordable run.
Chains that go to NaN/inf, beyond `max_abs`, or whose adaptive step collapses (more than
`max_substeps_factor * every` steps to cover one interval) are dropped and reported; if more than
`max_bad_fraction` of the chains go bad the run stops and returns the good chains' data so far.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cl_diagnostics
from .checkpoint import load_checkpoint, save_checkpoint
from .langevin import (DEFAULT_EVERY, DEFAULT_STEP, DEFAULT_WARMUP, ChainHealth, SamplerError,
                       SamplerRun, _per_chain, trim_bad)

Tensor = torch.Tensor

CL_SCHEMES = ("em", "rk2")
DEFAULT_CL_SCHEME = "rk2"
STAT_NAMES = ("langevin_time", "n_steps", "dt_min", "dt_mean", "drift_magnitude", "y_max",
              "sd_re", "sd_im")


def complex_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """complex128 for float64/complex128, complex64 for float32/complex64."""
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


# ---------------------------------------------------------------------------------- kernel

class CLKernel:
    """One CL step for all chains with per-chain step sizes `dt` (chains,), float64."""

    def __init__(self, theory, scheme: str, noise_imag: float):
        if scheme not in CL_SCHEMES:
            raise SamplerError(f"unknown complex Langevin scheme '{scheme}'; choose one of "
                               f"{list(CL_SCHEMES)}")
        self.theory, self.scheme = theory, scheme
        self.n_x, self.n_y = 1.0 + float(noise_imag), float(noise_imag)
        self.drifts_per_step = 2 if scheme == "rk2" else 1

    def noise(self, z: Tensor, dt: Tensor, generator: torch.Generator) -> Tensor:
        """sqrt(2 N_x dt) eta_x + i sqrt(2 N_y dt) eta_y, per chain dt."""
        real = z.real
        sd = _per_chain((2 * dt).sqrt().to(real.dtype), real)
        eta = torch.randn(real.shape, generator=generator, device=z.device, dtype=real.dtype)
        eta.mul_(sd * math.sqrt(self.n_x))
        if self.n_y == 0:
            return eta
        eta_y = torch.randn(real.shape, generator=generator, device=z.device, dtype=real.dtype)
        return torch.complex(eta, eta_y.mul_(sd * math.sqrt(self.n_y)))

    def step(self, z: Tensor, drift: Tensor, dt: Tensor, generator: torch.Generator):
        """Advance z (in place) by dt; return (z, drift at the new z)."""
        dtb = _per_chain(dt.to(z.real.dtype), z)
        noise = self.noise(z, dt, generator)
        if self.scheme == "em":
            z.add_(drift * dtb)
        else:
            k_pred = self.theory.drift(z + drift * dtb + noise)
            z.add_((drift + k_pred) * (0.5 * dtb))
        if noise.is_complex():
            z.add_(noise)
        else:
            z.real.add_(noise)
        return z, self.theory.drift(z)


def max_drift(drift: Tensor) -> Tensor:
    """Largest |K| component per chain, float64 (chains,)."""
    return drift.abs().flatten(1).amax(1).to(torch.float64)


# -------------------------------------------------------------------------------- driver

def run_complex_langevin(theory, *, n: int, chains: int = 1024, warmup: int = DEFAULT_WARMUP,
                         seed: int = 0, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float64, step: float | None = None,
                         every: int = DEFAULT_EVERY, noise_imag: float = 0.0,
                         adaptive: bool = True, drift_ref: float | None = None,
                         scheme: str = DEFAULT_CL_SCHEME, progress: bool = True,
                         checkpoint=None, checkpoint_every: int = 50, resume: bool = False,
                         max_abs: float = 1e6, max_bad_fraction: float = 0.1,
                         max_substeps_factor: int = 100) -> SamplerRun:
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
    settings = {
        "sampler": "complex_langevin", "scheme": scheme, "n": int(n), "chains": int(chains),
        "warmup": int(warmup), "seed": int(seed), "every": int(every),
        "step": float(DEFAULT_STEP if step is None else step), "noise_imag": float(noise_imag),
        "adaptive": bool(adaptive), "drift_ref_given": None if drift_ref is None else float(drift_ref),
        "dtype": str(complex_dtype_for(dtype)).replace("torch.", ""), "theory": theory.name,
        "shape": list(theory.shape), "max_abs": float(max_abs),
        "max_bad_fraction": float(max_bad_fraction), "max_substeps_factor": int(max_substeps_factor),
        "spacing": "equal Langevin time",
    }
    loop = _CLLoop(theory, settings, torch.device(device), complex_dtype_for(dtype))
    if checkpoint is not None and resume:
        loop.restore_if_present(checkpoint)
    loop.loop(progress, checkpoint, checkpoint_every)
    return loop.result()


class _CLLoop:
    """The whole state of a CL run, in one place so it can be checkpointed."""

    def __init__(self, theory, settings: dict, device: torch.device, cdtype: torch.dtype):
        self.theory, self.settings, self.device = theory, settings, device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(settings["seed"])
        self.kernel = CLKernel(theory, settings["scheme"], settings["noise_imag"])
        chains, n, shape = settings["chains"], settings["n"], theory.shape
        rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
        x0 = torch.randn((chains, *shape), generator=self.generator, device=device, dtype=rdtype)
        self.z = x0.to(cdtype)
        self.drift = theory.drift(self.z)
        self.health = ChainHealth(chains, device, settings["max_abs"],
                                  settings["max_bad_fraction"])
        given = settings["drift_ref_given"]
        self.k_ref = given          # frozen reference drift (None while warming up)
        self.k_sum, self.k_count = 0.0, 0
        self.time = 0.0             # Langevin time reached by every good chain
        self.block = 0
        self.stopped = None
        self.configs = torch.zeros((chains, n, *shape), dtype=cdtype)
        self.stats = {k: np.zeros((chains, n)) for k in STAT_NAMES}
        self.seconds = 0.0

    @property
    def warm_blocks(self) -> int:
        return -(-self.settings["warmup"] // self.settings["every"])

    @property
    def total(self) -> int:
        return self.warm_blocks + self.settings["n"]

    # -- one interval of Langevin time
    def _dt(self, remaining: Tensor) -> Tensor:
        eps = self.settings["step"]
        if not self.settings["adaptive"]:
            return torch.minimum(torch.full_like(remaining, eps), remaining), None
        kmax = max_drift(self.drift)
        if self.k_ref is None:      # warm-up: reference = running mean of max|K| (finite chains)
            ok = torch.isfinite(kmax)
            self.k_sum += float(torch.where(ok, kmax, 0.0).sum())
            self.k_count += int(ok.sum())
            ref = max(self.k_sum / max(self.k_count, 1), 1e-300)
        else:
            ref = self.k_ref
        dt = (eps * ref / kmax).clamp(max=eps)   # kmax = 0 -> inf -> eps; NaN stays NaN
        return torch.minimum(dt, remaining), dt

    def _interval(self, span: float, every: int) -> dict:
        """Evolve all chains by Langevin time `span`; per-chain figures of the interval."""
        s = self.settings
        chains = self.z.shape[0]
        remaining = torch.full((chains,), span, dtype=torch.float64, device=self.device)
        n_steps = torch.zeros_like(remaining)
        dt_min = torch.full_like(remaining, s["step"])
        max_sub = s["max_substeps_factor"] * every
        sub = 0
        while sub < max_sub:
            if sub >= every and not bool((remaining > 0).any()):
                break
            if sub >= every and not s["adaptive"]:
                break
            dt, dt_adaptive = self._dt(remaining)
            active = dt > 0
            n_steps += active
            if dt_adaptive is not None:   # the adaptive choice, not the final clipped step
                dt_min = torch.where(active, torch.minimum(dt_min, dt_adaptive), dt_min)
            self.z, self.drift = self.kernel.step(self.z, self.drift, dt.nan_to_num(0.0),
                                                  self.generator)
            remaining = remaining - dt
            sub += 1
        stalled = remaining > 1e-12 * span
        if not s["adaptive"]:
            stalled = torch.zeros_like(stalled)
        return {"n_steps": n_steps, "dt_min": dt_min, "stalled": stalled,
                "dt_mean": span / n_steps.clamp(min=1)}

    def advance(self) -> None:
        s, k = self.settings, self.block - self.warm_blocks
        steps = s["every"] if k >= 0 else min(s["every"], s["warmup"] - self.block * s["every"])
        start = time.perf_counter()
        info = self._interval(steps * s["step"], steps)
        self.time += steps * s["step"]
        new_bad = self.health.check(self.z, max(k, 0), extra_bad=info["stalled"])
        if bool(new_bad.any()):
            self.drift = self.theory.drift(self.z)    # the bad chains were reset to 0
        if k < 0 and self.block == self.warm_blocks - 1 and self.k_ref is None and s["adaptive"]:
            self.k_ref = self.k_sum / max(self.k_count, 1)
        if k >= 0:
            self._record(k, info)
            self.seconds += time.perf_counter() - start
        self.block += 1
        if self.health.too_many():
            self.stopped = (f"stopped after {max(k + 1, 0)} of {s['n']} configurations: "
                            f"{self.health.n_bad} of {s['chains']} chains ran away")

    def _record(self, k: int, info: dict) -> None:
        z, K = self.z, self.drift
        self.configs[:, k] = z.detach().to("cpu")
        zf, kf = z.flatten(1), K.flatten(1)
        # Langevin operator on O = mean(z^2): L_c O = mean(2 (1 + z K)); <L_c O> = 0 is the
        # Schwinger-Dyson equation, and its cutoff dependence the boundary term (cl_diagnostics).
        sd = (2 * (1 + zf * kf)).mean(1)
        figures = {"langevin_time": torch.full((z.shape[0],), self.time),
                   "n_steps": info["n_steps"], "dt_min": info["dt_min"],
                   "dt_mean": info["dt_mean"],
                   "drift_magnitude": kf.abs().square().mean(1).sqrt(),
                   "y_max": zf.imag.abs().amax(1), "sd_re": sd.real, "sd_im": sd.imag}
        for name, v in figures.items():
            self.stats[name][:, k] = v.to("cpu", torch.float64).numpy()

    def loop(self, progress: bool, checkpoint, checkpoint_every: int) -> None:
        bar = tqdm(total=self.total, initial=self.block, disable=not progress,
                   desc=f"complex-langevin-{self.settings['scheme']}", unit="cfg")
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
        return {"sampler": "complex_langevin", "settings": self.settings, "block": self.block,
                "z": self.z, "drift": self.drift, "k_ref": self.k_ref, "k_sum": self.k_sum,
                "k_count": self.k_count, "time": self.time,
                "generator": self.generator.get_state(), "configs": self.configs,
                "stats": {k: torch.from_numpy(v) for k, v in self.stats.items()},
                "health": self.health.state_dict(), "seconds": self.seconds}

    def restore_if_present(self, path) -> None:
        if not os.path.exists(path):
            return
        snap = load_checkpoint(path)
        if snap.get("sampler") != "complex_langevin" or snap["settings"] != self.settings:
            raise SamplerError(f"checkpoint {path} was made by a different run "
                               f"({snap.get('settings')}); remove it or rerun with its settings")
        self.z, self.drift = snap["z"].to(self.device), snap["drift"].to(self.device)
        self.k_ref, self.k_sum, self.k_count = snap["k_ref"], snap["k_sum"], snap["k_count"]
        self.time, self.block = snap["time"], snap["block"]
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
            "scheme": s["scheme"], "step_size": s["step"], "adaptive": s["adaptive"],
            "drift_ref": self.k_ref, "noise_imag": s["noise_imag"],
            "langevin_time_per_config": s["every"] * s["step"],
            "langevin_time_total": self.time,
            "mean_dt": float(stats["dt_mean"].mean()) if stats["dt_mean"].size else None,
            "min_dt": float(stats["dt_min"].min()) if stats["dt_min"].size else None,
            "intervals_with_adapted_steps": (float((stats["dt_min"] < s["step"] * (1 - 1e-9)).mean())
                                 if stats["dt_min"].size else None),
            "status": self.stopped or "completed",
            "seconds_per_step": self.seconds / max(1.0, n_done * s["every"]),
            "drift_evaluations_per_step": self.kernel.drifts_per_step,
            **self.health.report(),
        }
        if n_done > 0:
            summary["diagnostics"] = cl_diagnostics.summarize(configs.numpy(), stats)
        settings = dict(s, device=str(self.device))
        return SamplerRun(configs=configs, stats=stats, summary=summary, settings=settings)
