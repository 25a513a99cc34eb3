"""Forward and reverse-time SDEs of a compiled `Schedule`, and the cumulant laws they obey.

A schedule is the forward SDE `dx = -k(t)/2 x dt + g(t) dW` on t in [0, 1] with perturbation kernel
`x_t = f(t) x_0 + sqrt(xi(t)) eps` (runtime/theory.py). Generation runs it backwards from t = 1 to a
small t = eps, either stochastically (the reverse-time SDE of Anderson 1982,
`dx = [-k/2 x - g^2 score] dt + g dW-bar`) or deterministically (the probability-flow ODE,
`dx = [-k/2 x - g^2/2 score] dt`, which has the same marginals p_t).

Everything here takes a plain `score_fn(x, t) -> tensor like x` so that the solvers can be tested
against an exact score (no network), and the diffusion models reuse them unchanged.

Prior at t = 1 (a documented choice): each feature c is drawn from
N(f(1) mean_c, f(1)^2 var_c + xi(1)) with the data's per-feature mean and variance. This is the exact
p_1 for Gaussian data and the Gaussian with the right first two cumulants otherwise (the cumulant
laws below), so it is correct for VP (where f(1) ~ 0) and for VE with a finite sigma alike.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from theoryc.runtime.stats.cumulants import cumulant_table, cumulants_from_moments
from theoryc.runtime.theory import Schedule

Tensor = torch.Tensor
ScoreFn = Callable[[Tensor, Tensor], Tensor]
SOLVERS = ("em", "pc", "ode")


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a (batch,) tensor of per-sample numbers to broadcast against x (batch, ...)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def shared_time(t: Tensor) -> Tensor:
    """t itself, or its first element (shape (1,), which broadcasts) when t is one time expanded
    over the batch (stride 0, as the solvers pass it): the schedule is then evaluated once per
    step instead of once per sample."""
    if t.dim() == 1 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1]
    return t


def perturb(x0: Tensor, t: Tensor, schedule: Schedule, generator: torch.Generator | None = None):
    """Sample x_t ~ p_t(x | x_0) = N(f(t) x_0, xi(t)). Returns (x_t, eps, std) with std = sqrt(xi)."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device).expand(x0.shape[0])
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    f = _per_sample(schedule.f(t), x0)
    std = _per_sample(schedule.xi(t).sqrt(), x0)
    return f * x0 + std * eps, eps, std


def prior_sample(schedule: Schedule, n: int, mean: Tensor, var: Tensor,
                 generator: torch.Generator | None = None) -> Tensor:
    """n draws of the t = 1 prior N(f(1) mean, f(1)^2 var + xi(1)); mean, var have one config's shape."""
    one = torch.ones((), dtype=mean.dtype, device=mean.device)
    f1, xi1 = schedule.f(one), schedule.xi(one)
    z = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
    return f1 * mean + (f1**2 * var + xi1).sqrt() * z


def lattice_power(x: Tensor, mean: Tensor, chunk: int = 1024) -> Tensor:
    """The power spectrum P_c(k) = <|FFT_x (x_c - mean_c)|^2> / V of lattice data x (N, C, *lattice),
    averaged over the N configurations (in float64, `chunk` at a time): the variance of each
    momentum mode, which is all a translation-invariant Gaussian's covariance holds."""
    dims = tuple(range(2, x.dim()))
    volume = math.prod(x.shape[2:])
    centred_mean = mean.to(torch.float64).reshape(1, -1, *([1] * len(dims)))
    total = torch.zeros(x.shape[1:], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        y = x[start:start + chunk].to(torch.float64) - centred_mean
        total += (torch.fft.fftn(y, dim=dims).abs() ** 2).sum(0)
    return total / (x.shape[0] * volume)


def two_point_score(y: Tensor, f: Tensor, xi: Tensor, power: Tensor) -> Tensor:
    """The score of x_t ~ N(f m, f^2 C + xi) at y = x_t - f m, C translation-invariant with power
    spectrum `power` (C, *lattice): diagonal in momentum space, -FFT^-1[y_k / (f^2 P(k) + xi)]."""
    dims = tuple(range(2, y.dim()))
    yk = torch.fft.fftn(y, dim=dims)
    return -torch.fft.ifftn(yk / (f**2 * power + xi), dim=dims).real


def two_point_energy(y: Tensor, f: Tensor, xi: Tensor, power: Tensor) -> Tensor:
    """-log N(y; 0, f^2 C + xi) per sample up to a constant: sum_k |y_k|^2 / (2 V (f^2 P + xi))."""
    dims = tuple(range(2, y.dim()))
    yk = torch.fft.fftn(y, dim=dims)
    volume = math.prod(y.shape[2:])
    return 0.5 * (yk.abs() ** 2 / (f**2 * power + xi)).flatten(1).sum(1) / volume


def reverse_sde_drift(x: Tensor, t: Tensor, score: Tensor, schedule: Schedule) -> Tensor:
    """dx/dt of the reverse-time SDE (integrated with dt < 0): -k/2 x - g^2 score."""
    t = shared_time(t)
    g2 = _per_sample(schedule.g(t) ** 2, x)
    return schedule.drift(x, t) - g2 * score


def probability_flow_drift(x: Tensor, t: Tensor, score: Tensor, schedule: Schedule) -> Tensor:
    """dx/dt of the probability-flow ODE: -k/2 x - g^2/2 score."""
    t = shared_time(t)
    g2 = _per_sample(schedule.g(t) ** 2, x)
    return schedule.drift(x, t) - 0.5 * g2 * score


def time_grid(steps: int, t_end: float, rho: float = 1.0, dtype=None, device=None) -> Tensor:
    """steps + 1 times from 1 down to t_end: t_i = (1 + i/steps (t_end^(1/rho) - 1))^rho.

    rho = 1 is uniform in t (Song et al. 2021); rho > 1 puts more steps at small t, where the
    score of a distribution with sharp features changes fastest (sqrt(xi) ~ sqrt(t) there for
    VE and VP, so rho = 2 is roughly uniform in the noise level's square root... and rho ~ 3.5
    is Karras et al.'s rho = 7 in sigma).
    """
    i = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    t = (1.0 + i * (t_end ** (1.0 / rho) - 1.0)) ** rho
    return t.to(dtype=dtype or torch.get_default_dtype(), device=device)


def integrate_reverse(score_fn: ScoreFn, x: Tensor, schedule: Schedule, *, solver: str = "em",
                      steps: int = 500, t_end: float = 1e-3, snr: float = 0.16,
                      corrector_steps: int = 1, ode_method: str = "heun", rho: float = 1.0,
                      generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Carry x from t = 1 to t = t_end with `solver`; returns x at t_end.

    em:  Euler-Maruyama on the reverse SDE.
    pc:  Euler-Maruyama predictor + `corrector_steps` Langevin corrector steps per time, step size
         2 (snr |z| / |score|)^2 with batch-averaged norms (Song et al. 2021, Alg. 4/5).
    ode: probability-flow ODE with Heun's (2 evaluations/step) or RK4's (4) method.
    rho: the time grid's spacing (`time_grid`): 1 uniform, > 1 denser near t_end.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    ts = time_grid(steps, t_end, rho, dtype=x.dtype, device=x.device)
    batch = x.shape[0]
    for i in tqdm(range(steps), disable=not progress, desc=f"reverse {solver}", leave=False):
        t, t_next = ts[i].expand(batch), ts[i + 1].expand(batch)
        if solver == "ode":
            x = _ode_step(score_fn, x, t, t_next, schedule, ode_method)
            continue
        x = _em_step(score_fn, x, t, t_next, schedule, generator)
        if solver == "pc":
            for _ in range(corrector_steps):
                x = _langevin_corrector(score_fn, x, t_next, snr, generator)
    return x


def _em_step(score_fn, x, t, t_next, schedule, generator):
    dt = (t - t_next)[0]                      # > 0: we step backwards in time
    drift = reverse_sde_drift(x, t, score_fn(x, t), schedule)
    g = _per_sample(schedule.g(shared_time(t)), x)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x - drift * dt + g * dt.sqrt() * noise


def _langevin_corrector(score_fn, x, t, snr, generator):
    """One unadjusted Langevin step on p_t at fixed t, step set by the signal-to-noise ratio."""
    score = score_fn(x, t)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    score_norm = score.flatten(1).norm(dim=1).mean()
    noise_norm = noise.flatten(1).norm(dim=1).mean()
    step = 2 * (snr * noise_norm / score_norm.clamp_min(1e-12)) ** 2
    return x + step * score + (2 * step).sqrt() * noise


def _ode_step(score_fn, x, t, t_next, schedule, method):
    def velocity(y, s):
        return probability_flow_drift(y, s, score_fn(y, s), schedule)

    h = (t_next - t)[0]                       # < 0
    if method == "heun":
        k1 = velocity(x, t)
        x_euler = x + h * k1
        k2 = velocity(x_euler, t_next)
        return x + 0.5 * h * (k1 + k2)
    if method == "rk4":
        t_mid = t + 0.5 * h
        k1 = velocity(x, t)
        k2 = velocity(x + 0.5 * h * k1, t_mid)
        k3 = velocity(x + 0.5 * h * k2, t_mid)
        k4 = velocity(x + h * k3, t_next)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(f"unknown ODE method {method!r}; choose 'heun' or 'rk4'")


# ------------------------------------------------------------------------------------------------
# Cumulants and the forward process's cumulant laws (seed: kappa_2(t) = kappa_2(0) f^2 + Xi(t),
# kappa_n(t) = kappa_n(0) f^n for n > 2, to all orders, from the generating functional).

def sample_cumulants(x: Tensor, n_max: int = 8) -> Tensor:
    """kappa_1..kappa_{n_max} of the samples x (N,) (real or complex), in float64/complex128."""
    x = x.to(torch.complex128 if x.is_complex() else torch.float64)
    moments = [torch.ones((), dtype=x.dtype)] + [(x**n).mean() for n in range(1, n_max + 1)]
    return torch.stack(cumulants_from_moments(moments)[1:])


def cumulants_with_errors(x: Tensor, n_max: int = 8, blocks: int = 20):
    """(kappa_1..kappa_n, jackknife errors) over `blocks` equal blocks of the samples x, as
    tensors: runtime/stats/cumulants.py's routine. For complex x the error is re_err + 1j im_err."""
    x = x.reshape(-1).detach().cpu()
    table = cumulant_table(x.numpy(), n_max, block_size=x.shape[0] // blocks, min_blocks=blocks)
    return torch.as_tensor(table.mean), torch.as_tensor(table.error)


def predicted_cumulants(kappa0: Tensor, schedule: Schedule, t: float) -> Tensor:
    """The forward process's cumulants of a 1-d variable at time t from those at t = 0."""
    tt = torch.tensor(float(t), dtype=torch.float64)
    f, xi = schedule.f(tt), schedule.xi(tt)
    orders = torch.arange(1, len(kappa0) + 1, dtype=torch.float64)
    pred = kappa0 * f**orders
    pred[1] = pred[1] + xi
    return pred


def check_cumulant_laws(x0: Tensor, schedule: Schedule, ts, *, kappa0: Tensor | None = None,
                        n_max: int = 6, blocks: int = 20,
                        generator: torch.Generator | None = None) -> list[dict]:
    """Perturb 1-d data x0 (N,) to each t in ts and compare measured cumulants with the laws.

    kappa0: the cumulants kappa_1..kappa_{n_max} at t = 0 (exact ones when known; otherwise they
    are measured on x0). Returns one dict per t: t, measured, error, predicted, pull (all (n_max,)
    float64 tensors; pull = (measured - predicted) / error).
    """
    x0 = x0.reshape(-1, 1).to(torch.float64)
    if kappa0 is None:
        kappa0 = sample_cumulants(x0[:, 0], n_max)
    rows = []
    for t in ts:
        xt, _, _ = perturb(x0, torch.tensor(float(t), dtype=torch.float64), schedule, generator)
        meas, err = cumulants_with_errors(xt[:, 0], n_max, blocks)
        pred = predicted_cumulants(kappa0.to(torch.float64), schedule, t)
        rows.append({"t": float(t), "measured": meas, "error": err, "predicted": pred,
                     "pull": (meas - pred) / err.clamp_min(1e-300)})
    return rows
