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

import copy
import json
import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from theoryc.runtime.checkpoint import atomic_replace, load_checkpoint, save_checkpoint
from theoryc.runtime.ensemble import SamplerRun
from theoryc.runtime.models.networks import build_network
from theoryc.runtime.models.sde import SOLVERS, integrate_reverse, prior_sample
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

    def __init__(self, net: nn.Module, schedule: Schedule, *, flavour: str,
                 config_shape: tuple[int, ...], is_complex: bool, data_mean: Tensor,
                 data_var: Tensor, t_eps: float, settings: dict):
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
        self.history: dict = {}
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
        """(u, c_in, log_std): the standardised input, its scale, and log sqrt(xi) per sample."""
        sh = (-1, *([1] * (x.dim() - 1)))
        f, xi = self.schedule.f(t).reshape(sh), self.schedule.xi(t).reshape(sh)
        mean, var = self._channel(self.data_mean, x), self._channel(self.data_var, x)
        c_in = torch.rsqrt(f**2 * var + xi)
        return (x - f * mean) * c_in, c_in, 0.5 * self.schedule.xi(t).log()

    def energy(self, x: Tensor, t: Tensor, net: nn.Module | None = None) -> Tensor:
        """E(x, t) per sample (batch,), energy flavour only; exp(-E) ~ p_t(x) up to a constant."""
        if self.flavour != "energy":
            raise ValueError("only an energy-based model ('energy' flavour) has an energy")
        u, _, log_std = self.precondition(x, t)
        v = (net or self.net)(u, t, log_std)
        return 0.5 * (u**2).flatten(1).sum(1) + 0.5 * (v**2).flatten(1).sum(1)

    def score(self, x: Tensor, t: Tensor, net: nn.Module | None = None,
              create_graph: bool = False) -> Tensor:
        """s(x, t) ~ grad_x log p_t(x), same shape as x (features). t: (batch,) or scalar."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        if self.flavour == "score":
            u, c_in, log_std = self.precondition(x, t)
            return c_in * (-u + (net or self.net)(u, t, log_std).reshape(u.shape))
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


def _augment(configs: Tensor, symmetries, generator) -> Tensor:
    """Apply each declared symmetry to a random half of the batch (complex data: to x + i y)."""
    for sym in symmetries:
        flip = torch.rand(configs.shape[0], generator=generator, device=configs.device) < 0.5
        mask = flip.reshape(-1, *([1] * (configs.dim() - 1)))
        configs = torch.where(mask, sym(configs), configs)
    return configs


def _lr_at(step: int, lr: float, warmup: int, steps: int, final_fraction: float) -> float:
    """Linear warm-up, then cosine decay to final_fraction * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def dsm_loss(model: DiffusionModel, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """xi-weighted denoising score matching: mean || sqrt(xi) s(x_t, t) + e ||^2 per feature."""
    sh = (-1, *([1] * (x0.dim() - 1)))
    f, std = model.schedule.f(t).reshape(sh), model.schedule.xi(t).sqrt().reshape(sh)
    xt = f * x0 + std * noise
    if model.flavour == "energy":
        xt = xt.requires_grad_(True)
    s = model.score(xt, t, net=net, create_graph=True)
    return ((std * s + noise) ** 2).flatten(1).mean(1).mean()


@torch.no_grad()
def _ema_update(ema: nn.Module, net: nn.Module, decay: float):
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1 - decay)


def _finite(net: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in net.parameters())


def build_model(theory_like, data: Tensor, *, schedule: Schedule, flavour: str = "score",
                t_eps: float = 1e-3, width: int | None = None, depth: int | None = None,
                kernel: int = 3, seed: int = 0, device=None, dtype=torch.float32) -> DiffusionModel:
    """An untrained model for `data` (network initialised from `seed`, data statistics measured)."""
    config_shape = _config_shape(theory_like, data)
    data = _flatten_data(data, config_shape)
    is_complex = bool(getattr(theory_like, "is_complex", False) or data.is_complex())
    settings = {"flavour": flavour, "schedule": schedule.name, "config_shape": list(config_shape),
                "is_complex": is_complex, "t_eps": t_eps,
                "network": {"width": width, "depth": depth, "kernel": kernel},
                "field_names": list(getattr(theory_like, "field_names", ())) }
    n_feat = config_shape[0] * (2 if is_complex else 1)
    feature_shape = (n_feat, *config_shape[1:])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(feature_shape, width=width, depth=depth, kernel=kernel,
                            zero_out=(flavour == "score"))
    zero = torch.zeros(n_feat, dtype=torch.float64)
    model = DiffusionModel(net, schedule, flavour=flavour, config_shape=config_shape,
                           is_complex=is_complex, data_mean=zero, data_var=zero + 1,
                           t_eps=t_eps, settings=settings)
    mean, var = _symmetrised_stats(model, data, list(getattr(theory_like, "symmetries", [])))
    model.data_mean.copy_(mean)
    model.data_var.copy_(var)
    return model.to(device=device, dtype=dtype)


def train_diffusion(theory_like, data: Tensor, *, schedule: Schedule, flavour: str = "score",
                    steps: int = 2000, batch_size: int = 512, lr: float = 2e-3, warmup: int = 100,
                    lr_final_fraction: float = 0.05, ema_decay: float = 0.999,
                    grad_clip: float = 1.0, t_eps: float = 1e-3, width: int | None = None,
                    depth: int | None = None, kernel: int = 3, augment: bool = True,
                    seed: int = 0, device=None, dtype=torch.float32,
                    checkpoint: str | None = None, checkpoint_every: int = 500,
                    resume: bool = False, progress: bool = True,
                    log_every: int = 50, stop_after: int | None = None,
                    t_power: float = 1.0) -> DiffusionModel:
    """Train a score- or energy-based diffusion model on `data` by denoising score matching.

    theory_like: anything with `shape`, `is_complex`, `symmetries` (and for the model file `name`,
    `source`, `params`, `field_names`): a compiled theory or a fake. data: (N, *shape) real or
    complex configurations (an ensemble's (chains, n, *shape) is flattened). Returns the model
    with EMA weights (the raw weights are kept in `model.raw_state`), `model.history` holding the
    loss curve and the NaN-guard counts. With `checkpoint` a resumable state is written every
    `checkpoint_every` steps and at the end; `resume=True` continues it bit for bit.
    stop_after: end this call after that many steps (checkpointed), e.g. to train in time-limited
    chunks; a later call with `resume=True` and the same arguments carries on.
    t_power: times are t = eps + (1 - eps) u^t_power with stratified u ~ U[0, 1]; 1 is the seed's
    t ~ U[eps, 1], > 1 spends more of the training on small t (an extra weight in the loss's t
    integral), which sharpens the t -> 0 energy that MCMC-EBM samples.
    """
    device = torch.device(device or "cpu")
    config_shape = _config_shape(theory_like, data)
    data = _flatten_data(data, config_shape).to(device)
    if not data.is_complex():
        data = data.to(dtype)
    model = build_model(theory_like, data, schedule=schedule, flavour=flavour, t_eps=t_eps,
                        width=width, depth=depth, kernel=kernel, seed=seed, device=device,
                        dtype=dtype)
    model.settings["training"] = {"steps": steps, "batch_size": batch_size, "lr": lr,
                                  "warmup": warmup, "lr_final_fraction": lr_final_fraction,
                                  "ema_decay": ema_decay, "grad_clip": grad_clip,
                                  "augment": augment, "seed": seed, "n_data": int(data.shape[0]),
                                  "t_power": t_power}
    symmetries = list(getattr(theory_like, "symmetries", [])) if augment else []
    net, ema = model.net, copy.deepcopy(model.net)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {"step": 0, "history": {"step": [], "loss": [], "lr": []}, "skipped": 0,
             "restored": 0, "window": [0.0, 0]}
    if resume and checkpoint:
        state = _load_training_checkpoint(checkpoint, net, ema, opt, gen, model)

    bar = tqdm(total=steps, initial=state["step"], disable=not progress, desc=f"train {flavour}")
    t0 = time.perf_counter()
    start = state["step"]
    end = steps if stop_after is None else min(steps, start + stop_after)
    while state["step"] < end:
        _train_step(model, net, ema, opt, gen, data, symmetries, state, steps=steps, t_power=t_power,
                    batch_size=batch_size, lr=lr, warmup=warmup, final=lr_final_fraction,
                    ema_decay=ema_decay, grad_clip=grad_clip, log_every=log_every, bar=bar)
        if checkpoint and (state["step"] % checkpoint_every == 0 or state["step"] == end):
            _save_training_checkpoint(checkpoint, net, ema, opt, gen, model, state)
    bar.close()
    elapsed = time.perf_counter() - t0
    model.raw_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(ema.state_dict())
    hist = dict(state["history"])
    hist.update(skipped_steps=state["skipped"], restored=state["restored"],
                train_seconds=elapsed,
                samples_per_second=(state["step"] - start) * batch_size / max(elapsed, 1e-9))
    model.history = hist
    return model


def _train_step(model, net, ema, opt, gen, data, symmetries, state, *, steps, t_power, batch_size, lr,
                warmup, final, ema_decay, grad_clip, log_every, bar):
    step = state["step"]
    idx = torch.randint(data.shape[0], (batch_size,), generator=gen, device=data.device)
    configs = _augment(data[idx], symmetries, gen)
    x0 = model.to_features(configs)
    # stratified times: one per 1/batch_size slice of [eps, 1] -> lower-variance loss estimate
    u = (torch.arange(batch_size, device=x0.device, dtype=x0.dtype)
         + torch.rand(batch_size, generator=gen, device=x0.device, dtype=x0.dtype)) / batch_size
    t = model.t_eps + (1 - model.t_eps) * u**t_power
    noise = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
    for group in opt.param_groups:
        group["lr"] = _lr_at(step, lr, warmup, steps, final)
    opt.zero_grad(set_to_none=True)
    loss = dsm_loss(model, net, x0, t, noise)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    if not (torch.isfinite(loss) and torch.isfinite(gnorm)):
        state["skipped"] += 1                      # NaN guard: drop this step, keep going
        opt.zero_grad(set_to_none=True)
    else:
        opt.step()
        if not _finite(net):                       # a step that poisoned the weights: undo it
            net.load_state_dict(ema.state_dict())
            opt.state.clear()
            state["restored"] += 1
        else:
            _ema_update(ema, net, min(ema_decay, (1 + step) / (10 + step)))
        state["window"][0] += float(loss.detach())
        state["window"][1] += 1
    state["step"] = step + 1
    bar.update(1)
    if state["step"] % log_every == 0 or state["step"] == steps:
        total, count = state["window"]
        mean = total / max(count, 1)
        state["history"]["step"].append(state["step"])
        state["history"]["loss"].append(mean)
        state["history"]["lr"].append(opt.param_groups[0]["lr"])
        state["window"] = [0.0, 0]
        bar.set_postfix(loss=f"{mean:.4f}")


def _save_training_checkpoint(path, net, ema, opt, gen, model, state):
    save_checkpoint(path, {"kind": "diffusion-training", "settings": json.dumps(model.settings),
                           "net": net.state_dict(), "ema": ema.state_dict(),
                           "optimizer": opt.state_dict(), "rng": gen.get_state(),
                           "step": state["step"], "history": state["history"],
                           "skipped": state["skipped"], "restored": state["restored"],
                           "window": state["window"]})


def _load_training_checkpoint(path, net, ema, opt, gen, model) -> dict:
    ck = load_checkpoint(path)
    saved = json.loads(ck["settings"])
    for key in ("flavour", "config_shape", "is_complex", "network", "schedule"):
        if saved.get(key) != model.settings.get(key):
            raise ValueError(f"{path}: checkpoint was made with {key}={saved.get(key)!r}, "
                             f"this run has {model.settings.get(key)!r}")
    net.load_state_dict(ck["net"])
    ema.load_state_dict(ck["ema"])
    opt.load_state_dict(ck["optimizer"])
    gen.set_state(ck["rng"])
    return {"step": int(ck["step"]), "history": ck["history"], "skipped": int(ck["skipped"]),
            "restored": int(ck["restored"]), "window": list(ck["window"])}


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
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if device is not None:
        model = model.to(device)
    device = model.device
    t_end = model.t_eps if t_end is None else t_end
    batch_size = batch_size or min(n, 2048)     # bounded memory on lattices, fast on cpu in 0-d
    gen = torch.Generator(device=device).manual_seed(seed)
    chan = (-1, *([1] * (len(model.feature_shape) - 1)))
    mean = model.data_mean.reshape(chan).expand(model.feature_shape)
    var = model.data_var.reshape(chan).expand(model.feature_shape)
    out = []
    t0 = time.perf_counter()
    bar = tqdm(total=n, disable=not progress, desc=f"sample {solver}")
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = prior_sample(model.schedule, m, mean, var, gen)
        x = integrate_reverse(model.score, x, model.schedule, solver=solver, steps=steps,
                              t_end=t_end, snr=snr, corrector_steps=corrector_steps,
                              ode_method=ode_method, rho=rho, generator=gen,
                              progress=progress and batch_size >= n)
        out.append(model.from_features(x).cpu())
        bar.update(m)
    bar.close()
    elapsed = time.perf_counter() - t0
    configs = torch.cat(out)[None]
    finite = torch.isfinite(torch.view_as_real(configs) if configs.is_complex() else configs)
    n_bad = int((~finite.flatten(2).all(2)).sum())
    settings = {"sampler": "diffusion", "solver": solver, "steps": steps, "t_end": t_end,
                "snr": snr, "corrector_steps": corrector_steps, "ode_method": ode_method, "rho": rho,
                "seed": seed, "flavour": model.flavour, "schedule": model.schedule.name}
    summary = {"samples_per_second": n / max(elapsed, 1e-9), "seconds": elapsed,
               "non_finite": n_bad}
    return SamplerRun(configs=configs, summary=summary, settings=settings, kind="independent")


# ------------------------------------------------------------------------------------------------
# Model files (notes/modelfile.md): kind "diffusion"

def _json_params(params) -> str:
    def conv(v):
        if isinstance(v, complex):
            return [v.real, v.imag]
        if isinstance(v, (np.generic,)):
            return v.item()
        return v
    return json.dumps({k: conv(v) for k, v in dict(params or {}).items()})


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


def save_model(model: DiffusionModel, path: str, *, theory=None, theory_name: str | None = None,
               theory_source: str | None = None, params=None) -> None:
    """Write the model file (atomically): EMA weights as `state_dict`, raw weights, settings,
    data statistics, loss history and the schedule both by name (so the CLI can rebuild it from
    the compiled theory) and tabulated on a fine t grid (so the file also stands alone)."""
    from theoryc import __version__
    name = theory_name or getattr(theory, "name", "")
    source = theory_source if theory_source is not None else getattr(theory, "source", "")
    params = params if params is not None else getattr(theory, "params", {})
    hist = {k: (list(map(float, v)) if isinstance(v, list) else float(v))
            for k, v in model.history.items()}
    payload = {"kind": "diffusion", "theoryc_version": __version__, "theory_name": name,
               "theory_source": source, "params": _json_params(params),
               "settings": json.dumps(model.settings),
               "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
               "raw_state_dict": {k: v.detach().cpu() for k, v in (model.raw_state or {}).items()},
               "data_mean": model.data_mean.detach().cpu(), "data_var": model.data_var.detach().cpu(),
               "schedule_name": model.schedule.name,
               "schedule_table": tabulate_schedule(model.schedule), "history": hist}
    atomic_replace(path, lambda tmp: torch.save(payload, tmp))


def model_info(path: str) -> dict:
    """What a model file says about itself without building the network: kind, theory_name,
    theory_source, params (dict), settings (dict), schedule_name, history. The CLI reads
    schedule_name to hand `load_model` the compiled theory's schedule."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    info = {k: payload.get(k) for k in ("kind", "theoryc_version", "theory_name", "theory_source",
                                        "schedule_name", "history")}
    info["params"] = json.loads(payload.get("params") or "{}")
    info["settings"] = json.loads(payload.get("settings") or "{}")
    return info


def load_model(path: str, *, schedule: Schedule | None = None, device=None,
               dtype=torch.float32) -> DiffusionModel:
    """Read a model file (weights_only). `schedule`: the compiled theory's schedule of the stored
    name, if the caller has it; otherwise the tabulated copy in the file is used."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("kind") != "diffusion":
        raise ValueError(f"{path}: not a diffusion model file (kind {payload.get('kind')!r})")
    settings = json.loads(payload["settings"])
    schedule = schedule or tabulated_schedule(payload["schedule_table"])
    config_shape = tuple(settings["config_shape"])
    n_feat = config_shape[0] * (2 if settings["is_complex"] else 1)
    netset = settings["network"]
    net = build_network((n_feat, *config_shape[1:]), width=netset["width"], depth=netset["depth"],
                        kernel=netset["kernel"], zero_out=False)
    net.load_state_dict(payload["state_dict"])
    model = DiffusionModel(net, schedule, flavour=settings["flavour"], config_shape=config_shape,
                           is_complex=settings["is_complex"], data_mean=payload["data_mean"],
                           data_var=payload["data_var"], t_eps=settings["t_eps"],
                           settings=settings)
    model.history = payload.get("history", {})
    model.raw_state = payload.get("raw_state_dict") or None
    model.meta = {k: payload[k] for k in ("theory_name", "theory_source", "params",
                                          "theoryc_version")}
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

    @property
    def n_fields(self) -> int:
        return len(self.field_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_fields, *self.lattice)

    @property
    def volume(self) -> int:
        return math.prod(self.lattice)

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
