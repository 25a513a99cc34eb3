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
  measured, not assumed (BENCHMARKS.md, "Exact diffusion samples");
- diluted (the default on lattices): each Rademacher vector split into one probe per colour
  class, a channel's sites x mod `dilution` in each direction (2^d classes per channel at
  dilution 2). A score learnt on a lattice is local, so its Jacobian's large entries join near
  neighbours, which then sit in different classes and add no noise: on 2-d U(1) at L = 8 (20
  steps) the noise of log q was 0.21 at 8 passes per evaluation against 1.11 with 4 plain probes
  (benchmarks/bench_torus_diffusion.py).
Heun's method integrates x and log q together on sde.time_grid, as the ODE sampler does.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .circular import wrap
from .sde import prior_sample, probability_flow_drift, time_grid

Tensor = torch.Tensor
ScoreFn = Callable[[Tensor, Tensor], Tensor]
EXACT_MAX_FEATURES = 16       # default: exact divergence up to this many features, else probes
DEFAULT_PROBES = 1            # sign vectors per evaluation, each diluted (DEFAULT_DILUTION)
DEFAULT_DILUTION = 2


def prior_log_density(x: Tensor, schedule, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; f(1) mean, f(1)^2 var + xi(1)) per sample (batch,): sde.prior_sample's density."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    f1, xi1 = schedule.f(one), schedule.xi(one)
    v = f1**2 * var + xi1
    z2 = (x - f1 * mean) ** 2 / v
    return -0.5 * (z2 + torch.log(2 * math.pi * v)).flatten(1).sum(1)


def probe_colours(feature_shape, spacing: int) -> Tensor | None:
    """The colour classes of diluted probing: feature (c, x) gets a colour of its own channel c
    and its position x mod `spacing` in every lattice direction, so two features of one colour
    are `spacing` or more sites apart. spacing <= 1: None (one class, plain Hutchinson)."""
    channels, *lattice = feature_shape
    if spacing <= 1:
        return None
    colour = torch.arange(channels).reshape(-1, *([1] * len(lattice)))
    for axis, n in enumerate(lattice):     # position along each axis, broadcast over the rest
        position = torch.arange(n).reshape(n, *([1] * (len(lattice) - axis - 1)))
        colour = colour * spacing + position % spacing
    return colour.expand(feature_shape).contiguous()


def divergence(v: Tensor, x: Tensor, probes: int, generator=None,
               colours: Tensor | None = None) -> Tensor:
    """tr(dv/dx) per sample, v = v(x) built with autograd from x.

    probes = 0: exact, one backward pass per feature. probes = K: K Rademacher sign vectors s,
    each split by `colours` (one configuration's shape; None: one class) into one probe e = s on
    the class, 0 elsewhere, per class: sum_classes e^T J e is unbiased for tr J (E s_i s_j =
    delta_ij) and its noise holds only J_ij of features i, j of one class (diluted probing). With
    classes `spacing` sites apart (probe_colours) the large near-neighbour entries of a local
    score's Jacobian are left out of the noise; the cost is K x classes backward passes."""
    exact = probes == 0
    if exact:                              # every feature a class of its own, signs irrelevant
        colours, probes = torch.arange(x[0].numel()).reshape(x.shape[1:]), 1
    classes = 1 if colours is None else int(colours.max()) + 1
    colours = None if colours is None else colours.to(x.device)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(probes):
        s = (torch.ones_like(x) if exact else
             torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1)
        for c in range(classes):              # each class's mask made when used (memory)
            e = s if colours is None else s * (colours == c)
            (vjp,) = torch.autograd.grad((v * e).sum(), x, retain_graph=True)
            total = total + (vjp * e).flatten(1).sum(1)
    return total / probes


def _velocity_and_divergence(score_fn: ScoreFn, x: Tensor, t: Tensor, schedule, probes: int,
                             generator, colours) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = probability_flow_drift(xg, t, score_fn(xg, t), schedule)
        div = divergence(v, xg, probes, generator, colours)
    return v.detach(), div.detach()


def flow_with_log_density(score_fn: ScoreFn, x1: Tensor, schedule, mean: Tensor, var: Tensor, *,
                          steps: int = 100, t_end: float = 1e-3, rho: float = 2.0,
                          probes: int = 0, generator=None, colours: Tensor | None = None
                          ) -> tuple[Tensor, Tensor]:
    """Carry prior draws x1 (batch, *features) from t = 1 to t_end by Heun's method on the
    probability-flow ODE; returns (x at t_end, log q of it (batch,), float64).

    mean, var: the prior's per-feature data statistics (one configuration's shape), as in
    sde.prior_sample. probes: 0 for the exact divergence, K > 0 for Hutchinson with K probes,
    diluted by `colours` (see `divergence`).
    """
    log_q1 = prior_log_density(x1, schedule, mean, var)
    return carry_log_density(score_fn, x1, log_q1, schedule, steps=steps, t_end=t_end, rho=rho,
                             probes=probes, generator=generator, colours=colours)


def carry_log_density(score_fn: ScoreFn, x1: Tensor, log_q1: Tensor, schedule, *,
                      steps: int = 100, t_end: float = 1e-3, rho: float = 2.0, probes: int = 0,
                      generator=None, colours: Tensor | None = None,
                      project: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """flow_with_log_density for any prior: x1 drawn from it, log_q1 its log-density of them.

    project: applied after every step (the torus's wrap into [-pi, pi): a local isometry, so it
    leaves log q alone; the score is periodic, so Heun's intermediate point needs none)."""
    ts = time_grid(steps, t_end, rho, dtype=x1.dtype, device=x1.device)
    x = x1
    log_q = log_q1.to(torch.float64)
    batch = x.shape[0]
    for i in range(steps):
        t, t_next = ts[i].expand(batch), ts[i + 1].expand(batch)
        h = ts[i + 1] - ts[i]                      # < 0: backwards in time
        k1, d1 = _velocity_and_divergence(score_fn, x, t, schedule, probes, generator, colours)
        k2, d2 = _velocity_and_divergence(score_fn, x + h * k1, t_next, schedule, probes,
                                          generator, colours)
        x = x + 0.5 * h * (k1 + k2)
        if project is not None:
            x = project(x)
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
    """0 (exact divergence) in small dimension, else DEFAULT_PROBES diluted probes."""
    return 0 if math.prod(model.feature_shape) <= EXACT_MAX_FEATURES else DEFAULT_PROBES


class ODESampler(torch.nn.Module):
    """A trained diffusion model as an independent proposal with a log-density, the interface
    of a flow (`sample(n, generator) -> (configs, log q)`), for runtime/models/sampling.py.

    steps: Heun steps of the ODE (rho: the time grid's spacing, as sample_diffusion's);
    probes: None picks `default_probes`; dilution: the spacing of the probes' colour classes
    (`probe_colours`; None: DEFAULT_DILUTION, 1: plain Hutchinson); dtype: the model runs in it
    (float64 by default, so that log q is not limited by float32 round-off over many steps).
    """

    kind = "diffusion"

    def __init__(self, model, *, steps: int = 100, probes: int | None = None, rho: float = 2.0,
                 t_end: float | None = None, dilution: int | None = None,
                 dtype=torch.float64):
        if model.is_complex:
            raise ValueError("exact diffusion sampling needs a real action: exp(-S) is not a "
                             "probability for a complex model")
        if probes is not None and probes < 0:
            raise ValueError(f"probes must be 0 (exact divergence) or positive, not {probes}")
        if dilution is not None and dilution < 1:
            raise ValueError(f"dilution must be 1 (plain Hutchinson) or more, not {dilution}")
        super().__init__()
        self.model = model.to(dtype=dtype)      # a submodule: .to(device) and .eval() reach it
        self.steps, self.rho = int(steps), float(rho)
        self.t_end = model.t_eps if t_end is None else float(t_end)
        self.probes = default_probes(model) if probes is None else int(probes)
        self.dilution = DEFAULT_DILUTION if dilution is None else int(dilution)
        self.colours = probe_colours(model.feature_shape, self.dilution)

    @property
    def settings(self) -> dict:
        return {"ode_steps": self.steps, "rho": self.rho, "t_end": self.t_end,
                "probes": self.probes, "dilution": self.dilution,
                "divergence": ("exact" if self.probes == 0 else "hutchinson"
                               if self.colours is None else "diluted"),
                "model": self.model.settings}

    def sample(self, n: int, generator) -> tuple[Tensor, Tensor]:
        """n configurations and their log q (float64)."""
        m = self.model
        x1, log_q1, project = prior_draw(m, n, generator)
        x, log_q = carry_log_density(m.score, x1, log_q1, m.schedule, steps=self.steps,
                                     t_end=self.t_end, rho=self.rho, probes=self.probes,
                                     generator=generator, colours=self.colours,
                                     project=project)
        return m.from_features(x), log_q


def prior_draw(model, n: int, generator):
    """(x1, log q of x1, project) for a model's t = 1 prior: the uniform (Haar) measure of a
    model on the torus (runtime/models/torus_diffusion.py), whose ODE is wrapped after every
    step, or sde.prior_sample's Gaussian."""
    if getattr(model, "on_torus", False):
        x1 = model.uniform_prior(n, generator)
        log_q1 = torch.full((n,), -x1[0].numel() * math.log(2 * math.pi), dtype=torch.float64,
                            device=x1.device)
        return x1, log_q1, wrap
    mean, var = prior_statistics(model)
    x1 = prior_sample(model.schedule, n, mean, var, generator)
    return x1, prior_log_density(x1, model.schedule, mean, var), None


def sample_exact(theory, model, n: int, *, steps: int = 100, probes: int | None = None,
                 dilution: int | None = None, rho: float = 2.0, metropolis: bool = False,
                 seed: int = 0, device="cpu", dtype=torch.float64, batch_size: int = 1024,
                 progress: bool = True, chains: int = 1, checkpoint=None, resume: bool = False):
    """Sample a theory exactly with a trained diffusion model: ODE samples with log weights
    -S - log q (metropolis=False, kind "independent") or an independent-Metropolis chain over
    them (metropolis=True) -- the flows' one path (sampling.sample_flow), so the summary has
    acceptance, ess, log_z and free_energy alike. dtype: the ODE's (log q is summed in float64
    either way; float32 runs ~3.5x faster on a CPU and moved log q by 2e-5 on 2-d U(1), 20
    steps, far below the probes' noise)."""
    from .sampling import sample_flow
    proposer = ODESampler(model, steps=steps, probes=probes, dilution=dilution, rho=rho,
                          dtype=dtype)
    run = sample_flow(theory, proposer, n, seed=seed, device=device, metropolis=metropolis,
                      batch_size=batch_size, progress=progress, chains=chains,
                      checkpoint=checkpoint, resume=resume)
    run.settings = {**run.settings, "sampler": "diffusion", "exact": True}
    return run
