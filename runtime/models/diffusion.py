"""Score- and energy-based diffusion models on any compiled schedule (seed: "Diffusion Model" slides).

Training is denoising score matching with t ~ U[eps, 1] and weight lambda(t) = xi(t) (the seed's
sigma_i^2 weighting): for x_t = f x_0 + sqrt(xi) e the loss is E || sqrt(xi) s_theta(x_t, t) + e ||^2.

Parametrisation (why it trains fast): the network sees u = (x - f(t) m) c_in with
c_in = 1 / sqrt(f^2 v + xi), the data's per-feature mean m and variance v carried forward by the
schedule, so u has unit variance at every t. In these units the model is "standard normal plus a
learned correction":
  score flavour:  s(x, t) = c_in * (-u + F_theta(u, t))
  energy flavour: E(x, t) = |u|^2 / 2 + |v_theta(u, t)|^2 / 2,  s = -grad_x E (autograd)
The energy is the seed's E = ||v||^2 / 2 with v = (u, v_theta): conservative by construction, and a
Gaussian data set is learnt exactly by F = 0 (the score network's last layer starts at zero).

Complex ensembles (complex Langevin data z = x + i y) are learnt as 2 n_fields real features
(x, y); generated samples are recombined into complex configurations.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from theoryc.runtime.io.ensemble import SamplerRun
from theoryc.runtime.io.modelfile import theory_record
from theoryc.runtime.io.provenance import fingerprint
from theoryc.runtime.models.trainer import TrainSettings, data_fingerprint, train
from theoryc.runtime.models.networks import build_network
from theoryc.runtime.models.sde import (SOLVERS, integrate_reverse, lattice_power, prior_sample,
                                        shared_time, two_point_energy, two_point_score)
from theoryc.runtime.theory import Schedule

Tensor = torch.Tensor
FLAVOURS = ("score", "energy")


# ------------------------------------------------------------------------------------------------
# The model

class DiffusionModel(nn.Module):
    """A trained (or training) diffusion model: network + schedule + data statistics.

    config_shape: one configuration as the theory sees it, (n_fields, *lattice).
    feature_shape: what the network sees, (2 n_fields, *lattice) for complex data, else config_shape.
    """

    kind = "diffusion"
    # Energy flavour: take the score from the network's hand-written gradient where it has one
    # (TimeMLP.value_and_vjp); False forces autograd (the reference the tests compare with).
    analytic_gradient = True

    def __init__(self, net: nn.Module, schedule: Schedule, *, flavour: str,
                 config_shape: tuple[int, ...], is_complex: bool, data_mean: Tensor,
                 data_var: Tensor, t_eps: float, settings: dict,
                 data_power: Tensor | None = None):
        super().__init__()
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown flavour {flavour!r}; choose 'score' or 'energy'")
        self.net = net
        self.schedule = schedule
        self.flavour = flavour
        self.config_shape = tuple(config_shape)
        self.is_complex = bool(is_complex)
        self.t_eps = float(t_eps)
        self.settings = settings
        self.register_buffer("data_mean", data_mean.clone())
        self.register_buffer("data_var", data_var.clone())
        # the two-point base (build_model): the data's power spectrum, (features, *lattice)
        self.register_buffer("data_power", None if data_power is None else data_power.clone())
        self.history: dict = {}
        self.meta: dict = {}                   # the theory it was trained for (model files)
        self.raw_state: dict | None = None     # non-EMA weights, kept for the model file

    @property
    def feature_shape(self) -> tuple[int, ...]:
        n = self.config_shape[0]
        return (2 * n if self.is_complex else n, *self.config_shape[1:])

    @property
    def dtype(self):
        return self.data_mean.dtype

    @property
    def device(self):
        return self.data_mean.device

    # -- configurations <-> features
    def to_features(self, configs: Tensor) -> Tensor:
        if self.is_complex:
            configs = torch.cat([configs.real, configs.imag], dim=1)
        return configs.to(self.dtype)

    def from_features(self, x: Tensor) -> Tensor:
        if self.is_complex:
            n = self.config_shape[0]
            return torch.complex(x[:, :n], x[:, n:])
        return x

    # -- the score and the energy
    def _channel(self, v: Tensor, x: Tensor) -> Tensor:
        return v.reshape(1, -1, *([1] * (x.dim() - 2)))

    def precondition(self, x: Tensor, t: Tensor):
        """(u, c_in, log_std): the standardised input, its scale, and log sqrt(xi) per sample
        ((1,) when t is one time expanded over the batch; it broadcasts)."""
        sh = (-1, *([1] * (x.dim() - 1)))
        t = shared_time(t)             # one time for the whole batch (sampling): evaluated once
        xi_t = self.schedule.xi(t)
        f, xi = self.schedule.f(t).reshape(sh), xi_t.reshape(sh)
        mean, var = self._channel(self.data_mean, x), self._channel(self.data_var, x)
        c_in = torch.rsqrt(f**2 * var + xi)
        return (x - f * mean) * c_in, c_in, 0.5 * xi_t.log()

    def _centred(self, x: Tensor, t: Tensor):
        """(x - f m, f, xi), broadcast against x: what the two-point base needs."""
        sh = (-1, *([1] * (x.dim() - 1)))
        t = shared_time(t)
        f, xi = self.schedule.f(t).reshape(sh), self.schedule.xi(t).reshape(sh)
        return x - f * self._channel(self.data_mean, x), f, xi

    def _two_point_score(self, x: Tensor, t: Tensor) -> Tensor:
        """With the two-point base, the score of the Gaussian the model starts as (the network
        adds to it): the translation-invariant Gaussian of the data's power spectrum, every
        momentum mode's variance (the zero mode's included) right before any training, where
        the plain base -c_in u has independent sites of the data's variance."""
        return two_point_score(*self._centred(x, t), self.data_power)

    def energy(self, x: Tensor, t: Tensor, net: nn.Module | None = None) -> Tensor:
        """E(x, t) per sample (batch,), energy flavour only; exp(-E) ~ p_t(x) up to a constant."""
        if self.flavour != "energy":
            raise ValueError("only an energy-based model ('energy' flavour) has an energy")
        u, _, log_std = self.precondition(x, t)
        v = (net or self.net)(u, t, log_std)
        base = (0.5 * (u**2).flatten(1).sum(1) if self.data_power is None
                else two_point_energy(*self._centred(x, t), self.data_power))
        return base + 0.5 * (v**2).flatten(1).sum(1)

    def score(self, x: Tensor, t: Tensor, net: nn.Module | None = None,
              create_graph: bool = False) -> Tensor:
        """s(x, t) ~ grad_x log p_t(x), same shape as x (features). t: (batch,) or scalar."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        if self.flavour == "score":
            u, c_in, log_std = self.precondition(x, t)
            correction = (net or self.net)(u, t, log_std).reshape(u.shape)
            if self.data_power is None:
                return c_in * (-u + correction)
            return self._two_point_score(x, t) + c_in * correction
        net = net or self.net
        if (self.analytic_gradient and not create_graph and hasattr(net, "value_and_vjp")
                and self.data_power is None):
            # sampling: dE/dx = c_in (u + J^T v) with the network's own chain rule (networks.py)
            u, c_in, log_std = self.precondition(x, t)
            return -c_in * (u + net.value_and_vjp(u, t, log_std)[1])
        with torch.enable_grad():
            xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            e = self.energy(xg, t, net)
            (grad,) = torch.autograd.grad(e.sum(), xg, create_graph=create_graph)
        return -grad


# ------------------------------------------------------------------------------------------------
# Training

def _config_shape(theory_like, data: Tensor) -> tuple[int, ...]:
    shape = getattr(theory_like, "shape", None)
    return tuple(shape) if shape is not None else tuple(data.shape[1:])


def _flatten_data(data: Tensor, config_shape) -> Tensor:
    """Accept (N, *shape) or an ensemble's (chains, n, *shape)."""
    if data.dim() == len(config_shape) + 2:
        data = data.reshape(-1, *config_shape)
    if tuple(data.shape[1:]) != tuple(config_shape):
        raise ValueError(f"data of shape {tuple(data.shape)} does not hold configurations of "
                         f"shape {tuple(config_shape)}")
    return data


def _symmetrised_stats(model_proto: DiffusionModel, data: Tensor, symmetries) -> tuple[Tensor, Tensor]:
    """Per-channel mean and variance of the features over the data and its symmetry images.

    Averaging over the symmetry images makes e.g. the mean of a Z2-symmetric theory exactly 0
    even when the data sit in one mode; lattice sites share one number per channel.
    """
    feats = [model_proto.to_features(data)]
    feats += [model_proto.to_features(sym(data)) for sym in symmetries]
    x = torch.cat(feats).to(torch.float64).transpose(0, 1).flatten(1)
    return x.mean(1), x.var(1).clamp_min(1e-12)


def _symmetrised_power(model_proto: DiffusionModel, data: Tensor, symmetries, mean: Tensor) -> Tensor:
    """The features' power spectrum (sde.lattice_power) averaged over the data and its images."""
    images = [data] + [sym(data) for sym in symmetries]
    powers = [lattice_power(model_proto.to_features(x), mean) for x in images]
    return torch.stack(powers).mean(0)


def _augment(configs: Tensor, symmetries, generator) -> Tensor:
    """Apply each declared symmetry to a random half of the batch (complex data: to x + i y)."""
    for sym in symmetries:
        flip = torch.rand(configs.shape[0], generator=generator, device=configs.device) < 0.5
        mask = flip.reshape(-1, *([1] * (configs.dim() - 1)))
        configs = torch.where(mask, sym(configs), configs)
    return configs


def dsm_loss(model: DiffusionModel, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """xi-weighted denoising score matching: mean || sqrt(xi) s(x_t, t) + e ||^2 per feature."""
    sh = (-1, *([1] * (x0.dim() - 1)))
    f, std = model.schedule.f(t).reshape(sh), model.schedule.xi(t).sqrt().reshape(sh)
    xt = f * x0 + std * noise
    if model.flavour == "energy":
        xt = xt.requires_grad_(True)
    s = model.score(xt, t, net=net, create_graph=True)
    return ((std * s + noise) ** 2).flatten(1).mean(1).mean()


def build_model(theory_like, data: Tensor, *, schedule: Schedule, flavour: str = "score",
                t_eps: float = 1e-3, width: int | None = None, depth: int | None = None,
                kernel: int = 3, zero_mode_head: bool = False, two_point: bool = False,
                seed: int = 0, device=None, dtype=torch.float32) -> DiffusionModel:
    """An untrained model for `data` (network initialised from `seed`, data statistics measured);
    zero_mode_head: networks.ZeroModeHead on a lattice network; two_point: the model starts as
    the Gaussian of the data's power spectrum instead of independent sites (lattices only)."""
    config_shape = _config_shape(theory_like, data)
    data = _flatten_data(data, config_shape)
    is_complex = bool(getattr(theory_like, "is_complex", False) or data.is_complex())
    settings = {"flavour": flavour, "schedule": schedule.name, "config_shape": list(config_shape),
                "is_complex": is_complex, "t_eps": t_eps, "two_point": two_point,
                "network": {"width": width, "depth": depth, "kernel": kernel,
                            "zero_mode_head": zero_mode_head},
                "field_names": list(getattr(theory_like, "field_names", ())) }
    n_feat = config_shape[0] * (2 if is_complex else 1)
    feature_shape = (n_feat, *config_shape[1:])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(feature_shape, width=width, depth=depth, kernel=kernel,
                            zero_out=(flavour == "score"), zero_mode_head=zero_mode_head)
    zero = torch.zeros(n_feat, dtype=torch.float64)
    model = DiffusionModel(net, schedule, flavour=flavour, config_shape=config_shape,
                           is_complex=is_complex, data_mean=zero, data_var=zero + 1,
                           t_eps=t_eps, settings=settings)
    symmetries = list(getattr(theory_like, "symmetries", []))
    mean, var = _symmetrised_stats(model, data, symmetries)
    model.data_mean.copy_(mean)
    model.data_var.copy_(var)
    if two_point:
        if len(config_shape) < 2:
            raise ValueError("the two-point base needs a lattice theory (0-d data have no momenta)")
        model.data_power = _symmetrised_power(model, data, symmetries, mean)
    return model.to(device=device, dtype=dtype)


class DenoisingScoreMatching:
    """The trainer's task for a diffusion model: xi-weighted DSM on batches of the data, each
    declared symmetry applied to a random half of the batch, stratified times."""

    def __init__(self, model, data, symmetries, *, batch_size, t_power, settings):
        self.model, self.net = model, model.net
        self.data, self.symmetries = data, symmetries
        self.batch_size, self.t_power = batch_size, t_power
        self.settings = settings

    def loss(self, step, gen):
        x0, t = self.draw(gen)
        return self.batch_loss(x0, t, gen), None

    def draw(self, gen) -> tuple[Tensor, Tensor]:
        """A batch of configurations (each symmetry applied to a random half) and its times;
        shared by the torus diffusion's task, which only changes `batch_loss`."""
        model, n, device = self.model, self.batch_size, self.data.device
        idx = torch.randint(self.data.shape[0], (n,), generator=gen, device=device)
        x0 = _augment(self.data[idx], self.symmetries, gen)
        # stratified times: one per 1/batch_size slice of [eps, 1] -> lower-variance loss estimate
        u = (torch.arange(n, device=device, dtype=model.dtype)
             + torch.rand(n, generator=gen, device=device, dtype=model.dtype)) / n
        return x0, model.t_eps + (1 - model.t_eps) * u**self.t_power

    def batch_loss(self, x0: Tensor, t: Tensor, gen) -> Tensor:
        x0 = self.model.to_features(x0)
        noise = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        return dsm_loss(self.model, self.net, x0, t, noise)

    def record(self, info) -> dict:
        return {}


def train_diffusion(theory_like, data: Tensor, *, schedule: Schedule, flavour: str = "score",
                    steps: int = 2000, batch_size: int = 512, lr: float = 2e-3, warmup: int = 100,
                    lr_final_fraction: float = 0.05, ema_decay: float = 0.999,
                    grad_clip: float = 1.0, t_eps: float = 1e-3, width: int | None = None,
                    depth: int | None = None, kernel: int = 3, zero_mode_head: bool = False,
                    two_point: bool = False, augment: bool = True, seed: int = 0, device=None,
                    dtype=torch.float32,
                    checkpoint: str | None = None, checkpoint_every: int = 500,
                    resume: bool = False, progress: bool = True,
                    log_every: int = 50, stop_after: int | None = None,
                    t_power: float = 1.0, max_bad_steps: int = 50) -> DiffusionModel:
    """Train a score- or energy-based diffusion model on `data` by denoising score matching.

    theory_like: anything with `shape`, `is_complex`, `symmetries` (and for the model file `name`,
    `source`, `params`, `field_names`): a compiled theory or a fake. data: (N, *shape) real or
    complex configurations (an ensemble's (chains, n, *shape) is flattened). Returns the model
    with EMA weights (the raw weights are kept in `model.raw_state`), `model.history` holding the
    loss curve and the NaN-guard count. The loop, warm-up + cosine learning rate, clipping, EMA,
    checkpoints and resume are the one trainer's (runtime/models/trainer.py).
    stop_after: end this call after that many steps (checkpointed), e.g. to train in time-limited
    chunks; a later call with `resume=True` and the same arguments carries on.
    t_power: times are t = eps + (1 - eps) u^t_power with stratified u ~ U[0, 1]; 1 is the seed's
    t ~ U[eps, 1], > 1 spends more of the training on small t (an extra weight in the loss's t
    integral), which sharpens the t -> 0 energy that MCMC-EBM samples.
    zero_mode_head: a lattice network with networks.ZeroModeHead, which learns the score of the
    field's spatial mean (the zero mode) directly instead of through the convolutions.
    two_point: start from the Gaussian with the data's power spectrum (build_model), so the
    network learns only what is not Gaussian; the slow, large-variance long-wavelength modes'
    scores are what denoising score matching determines worst at small t.
    """
    device = torch.device(device or "cpu")
    config_shape = _config_shape(theory_like, data)
    data = _flatten_data(data, config_shape).to(device)
    if not data.is_complex():
        data = data.to(dtype)
    model = build_model(theory_like, data, schedule=schedule, flavour=flavour, t_eps=t_eps,
                        width=width, depth=depth, kernel=kernel, zero_mode_head=zero_mode_head,
                        two_point=two_point, seed=seed, device=device, dtype=dtype)
    loop = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup=warmup,
                         lr_final_fraction=lr_final_fraction, grad_clip=grad_clip,
                         ema_decay=ema_decay, max_bad_steps=max_bad_steps, log_every=log_every)
    options = {"augment": augment, "t_power": t_power, "n_data": int(data.shape[0])}
    settings = score_task_settings("diffusion", model, theory_like, data, dtype, device, options)
    symmetries = list(getattr(theory_like, "symmetries", [])) if augment else []
    task = DenoisingScoreMatching(model, data, symmetries, batch_size=batch_size, t_power=t_power,
                                  settings=settings)
    return fit_score_model(model, task, loop, options, theory_like, device=device,
                           checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                           resume=resume, stop_after=stop_after, progress=progress,
                           desc=f"train {flavour}")


def score_task_settings(kind: str, model, theory_like, data: Tensor, dtype, device,
                        options: dict, **extra) -> dict:
    """What a score-model training's checkpoint must match to be resumed: the model's
    architecture, the theory, the data, dtype, device and the task's options."""
    return {"kind": kind, "architecture": dict(model.settings),
            "theory": fingerprint(theory_like), "data": data_fingerprint(data), **extra,
            "dtype": str(dtype).split(".")[-1], "device": device.type, **options}


def fit_score_model(model, task, loop: TrainSettings, options: dict, theory_like, **run):
    """Train `task` (the model's network) by the one trainer and record on the model what its
    file keeps: the loop's and task's settings, the raw (non-EMA) weights, the loss history and
    the theory it learns (`theory_record`). run: train()'s keywords (device, checkpoint, ...)."""
    result = train(task, loop, **run)
    model.settings["training"] = {**dataclasses.asdict(loop), **options}
    model.raw_state, model.history = result.raw_state, result.history
    model.meta = dict(theory_record(theory_like),
                      training=model.settings["training"], history=result.history)
    return model


# ------------------------------------------------------------------------------------------------
# Sampling

@torch.no_grad()
def sample_diffusion(model: DiffusionModel, n: int, *, solver: str = "em", steps: int = 500,
                     seed: int = 0, device=None, batch_size: int | None = None,
                     progress: bool = True, t_end: float | None = None, snr: float = 0.16,
                     corrector_steps: int = 1, ode_method: str = "heun",
                     rho: float = 2.0) -> SamplerRun:
    """Generate n independent configurations by integrating from the prior at t = 1 to t_end.

    solver: "em" (reverse SDE, Euler-Maruyama), "pc" (EM predictor + Langevin corrector with
    signal-to-noise `snr`), "ode" (probability-flow ODE, `ode_method` "heun" or "rk4").
    batch_size: configurations integrated at once (default min(n, 2048)).
    t_end defaults to the training eps. rho: time-grid spacing (sde.time_grid); the default 2
    puts more steps at small t than Song's uniform grid (rho = 1), which matters for data with
    sharp features (the complex quartic's CL data: Im<x^2> off by 1.5% at 300 uniform EM steps,
    0.5% with rho = 2). Complex models return complex configurations.
    Returns a SamplerRun (chains = 1, kind "independent") with configs on the cpu.
    """
    if device is not None:
        model = model.to(device)
    t_end = model.t_eps if t_end is None else t_end
    chan = (-1, *([1] * (len(model.feature_shape) - 1)))
    mean = model.data_mean.reshape(chan).expand(model.feature_shape)
    var = model.data_var.reshape(chan).expand(model.feature_shape)
    return sample_batches(model, n, lambda m, gen: prior_sample(model.schedule, m, mean, var, gen),
                          model.from_features, solver=solver, steps=steps, seed=seed,
                          batch_size=batch_size or min(n, 2048), progress=progress, t_end=t_end,
                          snr=snr, corrector_steps=corrector_steps, ode_method=ode_method,
                          rho=rho, settings={"flavour": model.flavour,
                                             "schedule": model.schedule.name})


def sample_batches(model, n: int, draw_prior, finish, *, solver: str, steps: int, seed: int,
                   batch_size: int, progress: bool, t_end: float, snr: float,
                   corrector_steps: int, ode_method: str, rho: float,
                   settings: dict) -> SamplerRun:
    """The one sampling loop of the diffusion models (plain, conditional and torus): batches of
    draw_prior(m, generator) at t = 1 carried to t_end by sde.integrate_reverse, then
    finish(x) (the configurations); a SamplerRun (chains = 1, kind "independent", configs on the
    cpu) whose settings are the solver's plus `settings`."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    gen = torch.Generator(device=model.device).manual_seed(seed)
    out = []
    t0 = time.perf_counter()
    bar = tqdm(total=n, disable=not progress, desc=f"sample {solver}")
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = integrate_reverse(model.score, draw_prior(m, gen), model.schedule, solver=solver,
                              steps=steps, t_end=t_end, snr=snr, corrector_steps=corrector_steps,
                              ode_method=ode_method, rho=rho, generator=gen,
                              progress=progress and batch_size >= n)
        out.append(finish(x).cpu())
        bar.update(m)
    bar.close()
    elapsed = time.perf_counter() - t0
    configs = torch.cat(out)[None]
    finite = torch.isfinite(torch.view_as_real(configs) if configs.is_complex() else configs)
    n_bad = int((~finite.flatten(2).all(2)).sum())
    settings = {"sampler": "diffusion", "solver": solver, "steps": steps, "t_end": t_end,
                "snr": snr, "corrector_steps": corrector_steps, "ode_method": ode_method, "rho": rho,
                "seed": seed, **settings}
    timing = {"samples_per_second": n / max(elapsed, 1e-9), "seconds": elapsed}
    return SamplerRun(configs=configs, summary={"non_finite": n_bad}, settings=settings,
                      kind="independent", timing=timing)


# ------------------------------------------------------------------------------------------------
# Model files (runtime/io/modelfile.py): kind "diffusion"

# Geometric near t = 0 (xi ~ t there, so relative accuracy needs relative spacing) merged with a
# uniform grid (f = exp(-int k / 2) bends most at t ~ 1): linear interpolation is good to ~1e-5.
SCHEDULE_GRID = torch.unique(torch.cat([torch.zeros(1, dtype=torch.float64),
                                        torch.logspace(-7, 0, 3001, dtype=torch.float64),
                                        torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)]))


def tabulate_schedule(schedule: Schedule) -> dict:
    """The schedule's k, g, f, xi on SCHEDULE_GRID (fine near t = 0), for a self-contained file."""
    t = SCHEDULE_GRID
    return {"name": schedule.name, "t": t.clone(),
            **{k: getattr(schedule, k)(t).to(torch.float64).expand_as(t).clone()
               for k in ("k", "g", "f", "xi")}}


def tabulated_schedule(table: dict) -> Schedule:
    """A Schedule that linearly interpolates a `tabulate_schedule` table (any device/dtype of t)."""
    grid = table["t"]

    def interp(values: Tensor) -> Callable[[Tensor], Tensor]:
        def fn(t: Tensor) -> Tensor:
            tt = torch.as_tensor(t)
            g = grid.to(tt.device)
            x = tt.to(torch.float64).clamp(0.0, 1.0)
            i = torch.searchsorted(g, x.contiguous()).clamp(1, len(g) - 1)
            t0, t1 = g[i - 1], g[i]
            v = values.to(tt.device)
            w = (x - t0) / (t1 - t0)
            out = v[i - 1] + w * (v[i] - v[i - 1])
            return out.to(tt.dtype if tt.is_floating_point() else torch.float64)
        return fn

    return Schedule(name=table["name"], **{k: interp(table[k]) for k in ("k", "g", "f", "xi")})


def diffusion_state(model: DiffusionModel) -> dict:
    """What the model file holds for a diffusion model: the EMA weights as `state_dict`, the raw
    weights, the data statistics and the schedule both by name (so the CLI can rebuild it from
    the compiled theory) and tabulated on a fine t grid (so the file also stands alone)."""
    extra = {"raw_state_dict": {k: v.detach().cpu() for k, v in (model.raw_state or {}).items()},
             "data_mean": model.data_mean.detach().cpu(), "data_var": model.data_var.detach().cpu(),
             "schedule_name": model.schedule.name,
             "schedule_table": tabulate_schedule(model.schedule)}
    if model.data_power is not None:
        extra["data_power"] = model.data_power.detach().cpu()
    return {"kind": "diffusion", "settings": model.settings, "state_dict": model.net.state_dict(),
            "extra": extra}


def diffusion_from_file(payload: dict, *, schedule: Schedule | None = None, device=None,
                        dtype=torch.float32) -> DiffusionModel:
    """Rebuild a diffusion model from a model file's payload. `schedule`: the compiled theory's
    schedule of the stored name, if the caller has it; otherwise the tabulated copy is used."""
    settings = payload["settings"]
    schedule = schedule or tabulated_schedule(payload["schedule_table"])
    config_shape = tuple(settings["config_shape"])
    n_feat = config_shape[0] * (2 if settings["is_complex"] else 1)
    netset = settings["network"]
    if settings.get("condition"):       # a conditional model: its network takes the conditions
        from theoryc.runtime.models.conditional import conditional_network
        net = conditional_network(settings, (n_feat, *config_shape[1:]))
    else:
        net = build_network((n_feat, *config_shape[1:]), width=netset["width"],
                            depth=netset["depth"], kernel=netset["kernel"], zero_out=False,
                            zero_mode_head=netset.get("zero_mode_head", False))
    net.load_state_dict(payload["state_dict"])
    model = DiffusionModel(net, schedule, flavour=settings["flavour"], config_shape=config_shape,
                           is_complex=settings["is_complex"], data_mean=payload["data_mean"],
                           data_var=payload["data_var"], t_eps=settings["t_eps"],
                           settings=settings, data_power=payload.get("data_power"))
    model.raw_state = payload.get("raw_state_dict") or None
    return model.to(device=device or "cpu", dtype=dtype)


# ------------------------------------------------------------------------------------------------
# The EBM's energy as a potential for MCMC (seed: "MCMC-EBM")

class EnergyPotential:
    """The learned energy E_theta(x, t_small) of an energy-based model, as a Theory for HMC/Langevin.

    The configuration is the model's real feature vector: (n_fields, *lattice) for a real theory,
    (2 n_fields, *lattice) = (x, y) for a complex ensemble. `observables` of a complex model are the
    theory's observables evaluated on x + i y (so <x^2> of the complex quartic comes out complex).
    """

    is_complex = False
    schedules: dict = {}

    def __init__(self, model: DiffusionModel, theory=None, t: float | None = None):
        if model.flavour != "energy":
            raise ValueError("an EnergyPotential needs an energy-based model (flavour 'energy')")
        self.model = model
        self.theory = theory
        self.t = model.t_eps if t is None else float(t)
        base = tuple(getattr(theory, "field_names", ()) or
                     model.settings.get("field_names") or
                     [f"phi{i}" for i in range(model.config_shape[0])])
        self.field_names = (tuple(f"{n}_re" for n in base) + tuple(f"{n}_im" for n in base)
                            if model.is_complex else base)
        self.field_kinds = ("real",) * len(self.field_names)
        self.lattice = tuple(model.config_shape[1:])
        self.name = f"{getattr(theory, 'name', 'model')}_ebm"
        self.source = ""
        self.params = dict(getattr(theory, "params", {}))
        self.symmetries: list = []
        self.estimates = dict(getattr(theory, "estimates", {})) if theory is not None else {}
        self.n_fields = len(self.field_names)
        self.shape = (self.n_fields, *self.lattice)
        self.volume = math.prod(self.lattice)

    @property
    def observable_names(self) -> tuple[str, ...]:
        return tuple(getattr(self.theory, "observable_names", ())) if self.theory else ()

    def _t(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), self.t, dtype=self.model.dtype, device=x.device)

    def action(self, phi: Tensor) -> Tensor:
        with torch.no_grad():                      # samplers take the force from `force`
            x = phi.to(self.model.dtype)
            return self.model.energy(x, self._t(x)).to(phi.dtype)

    def force(self, phi: Tensor) -> Tensor:
        x = phi.detach().to(self.model.dtype)
        return (-self.model.score(x, self._t(x))).detach().to(phi.dtype)

    def drift(self, z: Tensor) -> Tensor:
        return -self.force(z)

    def configurations(self, phi: Tensor) -> Tensor:
        """The theory's configurations: x + i y for a complex model, phi itself otherwise."""
        return self.model.from_features(phi)

    def observables(self, phi: Tensor) -> dict[str, Tensor]:
        if self.theory is None:
            return {}
        return self.theory.observables(self.configurations(phi))

    def estimate_inputs(self, obs):
        return self.theory.estimate_inputs(obs) if self.theory is not None else {}
