"""A diffusion model's own log-density of its samples, by the probability-flow ODE.

The probability-flow ODE dx/dt = v(x, t) = -k/2 x - g^2/2 s(x, t) carries the t = 1 prior to the
model's density at t_end, and along a trajectory the log-density obeys the continuity equation
    d log p_t(x_t) / dt = -div v(x_t, t).
A sample is made by drawing x_1 from the prior and integrating backwards; integrating
-div v alongside gives log q(x_end) = log p_1(x_1) + int_{t_end}^1 div v dt of that very sample,
so diffusion samples can be reweighted by exp(-S) / q or corrected by independent Metropolis
exactly as a flow's are (runtime/models/sampling.py; `ODESampler` is the model it takes).

The divergence is the trace of the Jacobian of v:
- exact: one backward pass per feature (small dimension: 0-d theories, tiny lattices);
- Hutchinson: E_e[e^T J e] with K Rademacher probes e, drawn afresh at every evaluation (one
  backward pass per probe): an unbiased log q whose noise averages over the steps. exp(-log q)
  is then not unbiased for 1/q (Jensen), so the bias this leaves in reweighted averages is
  measured, not assumed (BENCHMARKS.md, "Exact diffusion samples").
Heun's method integrates x and log q together on sde.time_grid, as the ODE sampler does.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .sde import prior_sample, probability_flow_drift, time_grid

Tensor = torch.Tensor
ScoreFn = Callable[[Tensor, Tensor], Tensor]
EXACT_MAX_FEATURES = 16       # default: exact divergence up to this many features, else probes
DEFAULT_PROBES = 4


def prior_log_density(x: Tensor, schedule, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; f(1) mean, f(1)^2 var + xi(1)) per sample (batch,): sde.prior_sample's density."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    f1, xi1 = schedule.f(one), schedule.xi(one)
    v = f1**2 * var + xi1
    z2 = (x - f1 * mean) ** 2 / v
    return -0.5 * (z2 + torch.log(2 * math.pi * v)).flatten(1).sum(1)


def divergence(v: Tensor, x: Tensor, probes: int, generator=None) -> Tensor:
    """tr(dv/dx) per sample, v = v(x) built with autograd from x. probes = 0: exact (one
    backward pass per feature); probes = K: Hutchinson's estimate with K Rademacher probes."""
    flat_v = v.flatten(1)
    if probes == 0:
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(flat_v.shape[1]):
            (gi,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True)
            div = div + gi.flatten(1)[:, i]
        return div
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(probes):
        e = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        (vjp,) = torch.autograd.grad((v * e).sum(), x, retain_graph=True)
        total = total + (vjp * e).flatten(1).sum(1)
    return total / probes


def _velocity_and_divergence(score_fn: ScoreFn, x: Tensor, t: Tensor, schedule, probes: int,
                             generator) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = probability_flow_drift(xg, t, score_fn(xg, t), schedule)
        div = divergence(v, xg, probes, generator)
    return v.detach(), div.detach()


def flow_with_log_density(score_fn: ScoreFn, x1: Tensor, schedule, mean: Tensor, var: Tensor, *,
                          steps: int = 100, t_end: float = 1e-3, rho: float = 2.0,
                          probes: int = 0, generator=None) -> tuple[Tensor, Tensor]:
    """Carry prior draws x1 (batch, *features) from t = 1 to t_end by Heun's method on the
    probability-flow ODE; returns (x at t_end, log q of it (batch,), float64).

    mean, var: the prior's per-feature data statistics (one configuration's shape), as in
    sde.prior_sample. probes: 0 for the exact divergence, K > 0 for Hutchinson with K probes.
    """
    ts = time_grid(steps, t_end, rho, dtype=x1.dtype, device=x1.device)
    x = x1
    log_q = prior_log_density(x1, schedule, mean, var).to(torch.float64)
    batch = x.shape[0]
    for i in range(steps):
        t, t_next = ts[i].expand(batch), ts[i + 1].expand(batch)
        h = ts[i + 1] - ts[i]                      # < 0: backwards in time
        k1, d1 = _velocity_and_divergence(score_fn, x, t, schedule, probes, generator)
        k2, d2 = _velocity_and_divergence(score_fn, x + h * k1, t_next, schedule, probes, generator)
        x = x + 0.5 * h * (k1 + k2)
        log_q = log_q - 0.5 * float(h) * (d1 + d2).to(torch.float64)
    return x, log_q


def prior_statistics(model) -> tuple[Tensor, Tensor]:
    """A DiffusionModel's per-channel data mean and variance spread over one configuration."""
    chan = (-1, *([1] * (len(model.feature_shape) - 1)))
    return (model.data_mean.reshape(chan).expand(model.feature_shape),
            model.data_var.reshape(chan).expand(model.feature_shape))


def model_log_density_flow(model, x1: Tensor, **options) -> tuple[Tensor, Tensor]:
    """flow_with_log_density with a DiffusionModel's score, prior statistics and t_eps."""
    mean, var = prior_statistics(model)
    options.setdefault("t_end", model.t_eps)
    return flow_with_log_density(model.score, x1, model.schedule, mean, var, **options)


def default_probes(model) -> int:
    """0 (exact divergence) in small dimension, else DEFAULT_PROBES Hutchinson probes."""
    return 0 if math.prod(model.feature_shape) <= EXACT_MAX_FEATURES else DEFAULT_PROBES


class ODESampler(torch.nn.Module):
    """A trained diffusion model as an independent proposal with a log-density, the interface
    of a flow (`sample(n, generator) -> (configs, log q)`), for runtime/models/sampling.py.

    steps: Heun steps of the ODE (rho: the time grid's spacing, as sample_diffusion's);
    probes: None picks `default_probes`; dtype: the model runs in it (float64 by default, so
    that log q is not limited by float32 round-off over many steps).
    """

    kind = "diffusion"

    def __init__(self, model, *, steps: int = 100, probes: int | None = None, rho: float = 2.0,
                 t_end: float | None = None, dtype=torch.float64):
        if model.is_complex:
            raise ValueError("exact diffusion sampling needs a real action: exp(-S) is not a "
                             "probability for a complex model")
        if probes is not None and probes < 0:
            raise ValueError(f"probes must be 0 (exact divergence) or positive, not {probes}")
        super().__init__()
        self.model = model.to(dtype=dtype)      # a submodule: .to(device) and .eval() reach it
        self.steps, self.rho = int(steps), float(rho)
        self.t_end = model.t_eps if t_end is None else float(t_end)
        self.probes = default_probes(model) if probes is None else int(probes)

    @property
    def settings(self) -> dict:
        return {"ode_steps": self.steps, "rho": self.rho, "t_end": self.t_end,
                "probes": self.probes,
                "divergence": "exact" if self.probes == 0 else "hutchinson",
                "model": self.model.settings}

    def sample(self, n: int, generator) -> tuple[Tensor, Tensor]:
        """n configurations and their log q (float64)."""
        m = self.model
        x1 = prior_sample(m.schedule, n, *prior_statistics(m), generator)
        x, log_q = model_log_density_flow(m, x1, steps=self.steps, t_end=self.t_end,
                                          rho=self.rho, probes=self.probes, generator=generator)
        return m.from_features(x), log_q


def sample_exact(theory, model, n: int, *, steps: int = 100, probes: int | None = None,
                 rho: float = 2.0, metropolis: bool = False, seed: int = 0, device="cpu",
                 batch_size: int = 1024, progress: bool = True, chains: int = 1,
                 checkpoint=None, resume: bool = False):
    """Sample a theory exactly with a trained diffusion model: ODE samples with log weights
    -S - log q (metropolis=False, kind "independent") or an independent-Metropolis chain over
    them (metropolis=True) -- the flows' one path (sampling.sample_flow), so the summary has
    acceptance, ess, log_z and free_energy alike."""
    from .sampling import sample_flow
    proposer = ODESampler(model, steps=steps, probes=probes, rho=rho)
    run = sample_flow(theory, proposer, n, seed=seed, device=device, metropolis=metropolis,
                      batch_size=batch_size, progress=progress, chains=chains,
                      checkpoint=checkpoint, resume=resume)
    run.settings = {**run.settings, "sampler": "diffusion", "exact": True}
    return run
