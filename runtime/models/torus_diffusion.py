"""Diffusion models for angle fields and U(1) link fields (issue 10 item 5; the U(1) diffusion
reference: Q. Zhu, G. Aarts, W. Wang, K. Zhou, L. Wang, arXiv:2410.19602).

How a `schedule` applies to an angle: the forward process adds the schedule's noise to each angle
on the real line and reads the result modulo 2 pi, so x_t = wrap(x_0 + sqrt(Xi(t)) eps) and the
perturbation kernel is the wrapped normal WN(x_0, Xi(t)). That is a diffusion on the circle only
for a variance-expanding schedule (drift = 0, f = 1: a drift -k x / 2 is not periodic in x), so a
schedule with a drift is refused. At t = 1 the kernel must have forgotten x_0: the prior is the
uniform (Haar) measure, which is WN's limit; its density deviates from uniform by at most
2 exp(-Xi(1) / 2), and a schedule with sqrt(Xi(1)) < SIGMA_MIN (deviation > 1%) is refused.

The score of the wrapped normal comes from its two series: for small variance the sum over images
p(d) = sum_k N(d + 2 pi k; 0, var) (few terms, log-sum-exp stable at tiny var), for large variance
the theta series p(d) = (1 + 2 sum_n q^(n^2) cos(n d)) / (2 pi), q = exp(-var / 2).

Training is the denoising score matching of diffusion.py on the circle: the conditional score of
x_t given x_0 is the wrapped-normal score of wrap(x_t - x_0), the loss xi-weighted,
E || sqrt(xi) (s_theta(x_t, t) - score_WN) ||^2 per angle.

The network sees periodic features only, so the score is 2 pi-periodic by construction:
- an angle site field (or a link field without `gauge`): (cos x, sin x) of each component;
- a `gauge` link field: (cos P, sin P) of its plaquettes P_{mu nu}(x), and the score of the links is
  J^T h with h(x) the network's output per plaquette and J = dP/dA. A gauge-invariant density
  depends on the links through the plaquettes (and the holonomies, on which the Wilson action and
  hence p_t do not depend), so its score has exactly this form: the model is gauge covariant by
  construction, its samples' plaquettes carry all the learned physics and their gauge orientation
  is Haar-random. (The reference trains a network on the raw links; here the symmetry is built
  in, which on 2 cores is the difference between learning the plaquette and not.)
Sampling integrates the reverse SDE or probability-flow ODE of sde.py from the uniform prior and
returns angles in [-pi, pi).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from theoryc.runtime.errors import SamplerError
from theoryc.runtime.io.ensemble import SamplerRun
from theoryc.runtime.models.circular import wrap
from theoryc.runtime.models.lattice_gauge import plaquette_pairs, plaquettes
from theoryc.runtime.models.networks import build_network
from theoryc.runtime.models.diffusion import (DenoisingScoreMatching, fit_score_model,
                                              sample_batches, score_task_settings,
                                              tabulate_schedule, tabulated_schedule)
from theoryc.runtime.models.trainer import TrainSettings
from theoryc.runtime.theory import Schedule

Tensor = torch.Tensor
TWO_PI = 2 * math.pi
SIGMA_MIN = 3.3          # 2 exp(-SIGMA_MIN^2 / 2) < 1%: the uniform prior's worst density error
_SWITCH_VAR = 1.5 ** 2   # images below, theta series above (both exact to < 1e-30 there)
_IMAGES = 3              # k = -3..3: the first omitted image is exp(-(7 pi)^2 / (2 var)) < 1e-45
_THETA_TERMS = 8         # q^(n^2) at n = 9 and var = 2.25: exp(-91)


# ------------------------------------------------------------------------------------------------
# The wrapped normal

def _images(d: Tensor, var: Tensor):
    k = torch.arange(-_IMAGES, _IMAGES + 1, dtype=d.dtype, device=d.device)
    shifted = d.unsqueeze(-1) + TWO_PI * k                       # (..., images)
    logw = -shifted**2 / (2 * var.unsqueeze(-1))
    return shifted, logw


def _theta_terms(d: Tensor, var: Tensor):
    n = torch.arange(1, _THETA_TERMS + 1, dtype=d.dtype, device=d.device)
    qn = torch.exp(-0.5 * var.unsqueeze(-1) * n**2)              # q^(n^2)
    nd = d.unsqueeze(-1) * n
    return n, qn, nd


def wrapped_normal_log_prob(d: Tensor, var) -> Tensor:
    """log of the wrapped normal density WN(0, var) at d (any real d; periodic), on [-pi, pi)."""
    var = torch.as_tensor(var, dtype=d.dtype, device=d.device).expand_as(d)
    small = var < _SWITCH_VAR
    v_small = torch.where(small, var, torch.ones_like(var))      # each branch at safe values
    v_large = torch.where(small, torch.full_like(var, 4.0), var)
    _, logw = _images(d, v_small)
    log_img = torch.logsumexp(logw, -1) - 0.5 * torch.log(TWO_PI * v_small)
    _, qn, nd = _theta_terms(d, v_large)
    log_theta = torch.log1p(2 * (qn * torch.cos(nd)).sum(-1)) - math.log(TWO_PI)
    return torch.where(small, log_img, log_theta)


def wrapped_normal_score(d: Tensor, var) -> Tensor:
    """d/dd log WN(d; 0, var): the series' closed-form derivatives (images: a softmax-weighted
    -(d + 2 pi k) / var; theta: -2 sum n q^(n^2) sin(n d) / (1 + 2 sum q^(n^2) cos(n d)))."""
    var = torch.as_tensor(var, dtype=d.dtype, device=d.device).expand_as(d)
    small = var < _SWITCH_VAR
    v_small = torch.where(small, var, torch.ones_like(var))
    v_large = torch.where(small, torch.full_like(var, 4.0), var)
    shifted, logw = _images(d, v_small)
    s_img = -(torch.softmax(logw, -1) * shifted).sum(-1) / v_small
    n, qn, nd = _theta_terms(d, v_large)
    s_theta = -2 * (n * qn * torch.sin(nd)).sum(-1) / (1 + 2 * (qn * torch.cos(nd)).sum(-1))
    return torch.where(small, s_img, s_theta)


def perturb_angles(x0: Tensor, std: Tensor, generator=None) -> tuple[Tensor, Tensor]:
    """x_t = wrap(x_0 + std eps) and the conditional score of x_t given x_0 (std: per sample)."""
    std = std.reshape(-1, *([1] * (x0.dim() - 1)))
    d = std * torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return wrap(x0 + d), wrapped_normal_score(d, (std**2).expand_as(d))


# ------------------------------------------------------------------------------------------------
# The adjoint of the plaquettes (lattice_gauge.plaquettes)

def plaquette_adjoint(h: Tensor, dim: int) -> Tensor:
    """J^T h for J = dP/dA: the gradient w.r.t. the links of sum_x,mu<nu h_{mu nu}(x) P_{mu nu}(x).
    h (batch, pairs, *lattice) -> (batch, dim, *lattice)."""
    grads = [torch.zeros_like(h[:, 0]) for _ in range(dim)]
    for c, (mu, nu) in enumerate(plaquette_pairs(dim)):
        hc = h[:, c]
        grads[mu] = grads[mu] + hc - torch.roll(hc, 1, nu + 1)     # +A_mu(x), -A_mu(x + nu)
        grads[nu] = grads[nu] + torch.roll(hc, 1, mu + 1) - hc     # +A_nu(x + mu), -A_nu(x)
    return torch.stack(grads, 1)


# ------------------------------------------------------------------------------------------------
# The model

def angle_layout(theory_like) -> tuple[list[int], list[list[int]]]:
    """(plain channels, one channel list per `gauge` link field) of an all-angle theory.

    A gauge link field's channels are its components 'A:0', 'A:1', ... in direction order."""
    names = list(theory_like.field_names)
    kinds = list(getattr(theory_like, "field_kinds", ()))
    if not names or any(k != "angle" for k in kinds):
        raise SamplerError(f"theory '{getattr(theory_like, 'name', '?')}': a diffusion model on "
                           "the torus needs every field to be an angle or an angle link")
    dim = len(getattr(theory_like, "lattice", ()))
    gauge = []
    for field in getattr(theory_like, "gauge", ()):
        chans = [names.index(f"{field}:{mu}") for mu in range(dim)]
        if dim >= 2:
            gauge.append(chans)
    taken = {c for group in gauge for c in group}
    return [c for c in range(len(names)) if c not in taken], gauge


class TorusDiffusionModel(nn.Module):
    """A score model on the torus (see the module docstring). Same file kind as diffusion.py's
    models ('diffusion'); `on_torus` tells them apart."""

    kind = "diffusion"
    on_torus = True
    flavour = "score"
    is_complex = False

    def __init__(self, net: nn.Module, schedule: Schedule, *, config_shape, plain, gauge,
                 t_eps: float, settings: dict):
        super().__init__()
        self.net, self.schedule = net, schedule
        self.config_shape = tuple(config_shape)
        self.plain, self.gauge = list(plain), [list(g) for g in gauge]
        self.t_eps = float(t_eps)
        self.settings = settings
        self.register_buffer("_anchor", torch.zeros(()))          # carries device and dtype
        self.history: dict = {}
        self.meta: dict = {}
        self.raw_state: dict | None = None

    @property
    def dtype(self):
        return self._anchor.dtype

    @property
    def device(self):
        return self._anchor.device

    @property
    def dim(self) -> int:
        return len(self.config_shape) - 1

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.config_shape             # the network's inputs are derived in `features`

    def from_features(self, x: Tensor) -> Tensor:
        return wrap(x)

    def uniform_prior(self, n: int, generator) -> Tensor:
        """n draws of the t = 1 prior, uniform angles in [-pi, pi)."""
        u = torch.rand((n, *self.config_shape), generator=generator, dtype=self.dtype,
                       device=self.device)
        return (u * 2 - 1) * math.pi

    def features(self, x: Tensor) -> Tensor:
        """(cos, sin) of the plain angles and of every gauge field's plaquettes."""
        angles = [x[:, self.plain]] + [plaquettes(x[:, g]) for g in self.gauge]
        a = torch.cat(angles, 1)
        return torch.cat([torch.cos(a), torch.sin(a)], 1)

    def score(self, x: Tensor, t, net: nn.Module | None = None) -> Tensor:
        """s(x, t) ~ grad log p_t(x), same shape as x; periodic in every angle."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        std = self.schedule.xi(t).sqrt()
        out = (net or self.net)(self.features(x), t, std.log()).reshape(x.shape[0], -1, *x.shape[2:])
        out = out / std.reshape(-1, *([1] * (x.dim() - 1)))
        s = torch.zeros_like(x)
        s[:, self.plain] = out[:, :len(self.plain)]
        start = len(self.plain)
        for g in self.gauge:
            n_pairs = len(g) * (len(g) - 1) // 2
            s[:, g] = plaquette_adjoint(out[:, start:start + n_pairs], len(g))
            start += n_pairs
        return s


def _n_outputs(plain, gauge) -> int:
    return len(plain) + sum(len(g) * (len(g) - 1) // 2 for g in gauge)


def build_torus_network(config_shape, plain, gauge, *, width=None, depth=None, kernel=3,
                        zero_out=True) -> nn.Module:
    """networks.build_network's choice for (cos, sin) of n_out angles in, n_out numbers out."""
    n_out = _n_outputs(plain, gauge)
    return build_network((2 * n_out, *config_shape[1:]), width=width, depth=depth, kernel=kernel,
                         zero_out=zero_out, outputs=n_out)


def check_angle_schedule(schedule: Schedule) -> None:
    """Refuse a schedule that is not a diffusion on the circle with a uniform t = 1 prior."""
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    if not torch.allclose(schedule.f(t).expand_as(t), torch.ones_like(t), atol=1e-9):
        raise SamplerError(f"schedule '{schedule.name}' has a drift; angles diffuse on the circle "
                           "only with a variance-expanding schedule (drift = 0)")
    sigma1 = float(schedule.xi(torch.ones((), dtype=torch.float64)).sqrt())
    if sigma1 < SIGMA_MIN:
        raise SamplerError(f"schedule '{schedule.name}' reaches sqrt(Xi(1)) = {sigma1:.3g}; on "
                           f"angles the uniform prior at t = 1 needs at least {SIGMA_MIN} "
                           "(raise its sigma)")


def build_torus_model(theory_like, *, schedule: Schedule, t_eps: float = 1e-3, width=None,
                      depth=None, kernel: int = 3, seed: int = 0, device=None,
                      dtype=torch.float32) -> TorusDiffusionModel:
    check_angle_schedule(schedule)
    plain, gauge = angle_layout(theory_like)
    config_shape = tuple(theory_like.shape)
    settings = {"flavour": "score", "torus": True, "schedule": schedule.name,
                "config_shape": list(config_shape), "plain": plain, "gauge": gauge,
                "t_eps": t_eps, "network": {"width": width, "depth": depth, "kernel": kernel},
                "field_names": list(theory_like.field_names)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_torus_network(config_shape, plain, gauge, width=width, depth=depth,
                                  kernel=kernel)
    model = TorusDiffusionModel(net, schedule, config_shape=config_shape, plain=plain,
                                gauge=gauge, t_eps=t_eps, settings=settings)
    return model.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Training

class WrappedScoreMatching(DenoisingScoreMatching):
    """The trainer's task: diffusion.py's (its batches, symmetry flips and stratified times) with
    the wrapped-normal kernel's xi-weighted denoising score matching as the batch's loss."""

    def batch_loss(self, x0: Tensor, t: Tensor, gen) -> Tensor:
        std = self.model.schedule.xi(t).sqrt()
        xt, target = perturb_angles(x0, std, gen)      # wraps x0 too (a flip may leave [-pi, pi))
        s = self.model.score(xt, t, net=self.net)
        w = std.reshape(-1, *([1] * (x0.dim() - 1)))
        return ((w * (s - target)) ** 2).flatten(1).mean(1).mean()


def _angle_data(theory_like, data: Tensor, dtype) -> Tensor:
    shape = tuple(theory_like.shape)
    if data.dim() == len(shape) + 2:
        data = data.reshape(-1, *shape)
    if tuple(data.shape[1:]) != shape:
        raise SamplerError(f"data of shape {tuple(data.shape)} does not hold configurations of "
                           f"shape {shape}")
    return wrap(data.to(dtype))


def train_torus_diffusion(theory_like, data: Tensor, *, schedule: Schedule, flavour: str = "score",
                          steps: int = 2000, batch_size: int = 256, lr: float = 2e-3,
                          warmup: int = 100, lr_final_fraction: float = 0.05,
                          ema_decay: float = 0.999, grad_clip: float = 1.0, t_eps: float = 1e-3,
                          width: int | None = None, depth: int | None = None, kernel: int = 3,
                          augment: bool = True, seed: int = 0, device=None, dtype=torch.float32,
                          checkpoint: str | None = None, checkpoint_every: int = 500,
                          resume: bool = False, progress: bool = True, log_every: int = 50,
                          stop_after: int | None = None, t_power: float = 1.0,
                          max_bad_steps: int = 50) -> TorusDiffusionModel:
    """Train a score model on the torus on `data` (N or (chains, n), *shape) of angles, by the one
    trainer (warm-up + cosine lr, clipping, EMA, checkpoints, resume). Options as
    diffusion.train_diffusion's; only the score flavour exists on the torus."""
    if flavour != "score":
        raise SamplerError("on angle fields only the score flavour exists (--flavour score)")
    device = torch.device(device or "cpu")
    data = _angle_data(theory_like, torch.as_tensor(data), dtype).to(device)
    model = build_torus_model(theory_like, schedule=schedule, t_eps=t_eps, width=width,
                              depth=depth, kernel=kernel, seed=seed, device=device, dtype=dtype)
    loop = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup=warmup,
                         lr_final_fraction=lr_final_fraction, grad_clip=grad_clip,
                         ema_decay=ema_decay, max_bad_steps=max_bad_steps, log_every=log_every)
    options = {"augment": augment, "t_power": t_power, "n_data": int(data.shape[0])}
    settings = score_task_settings("torus_diffusion", model, theory_like, data, dtype, device,
                                   options)
    symmetries = list(getattr(theory_like, "symmetries", [])) if augment else []
    task = WrappedScoreMatching(model, data, symmetries, batch_size=batch_size, t_power=t_power,
                                settings=settings)
    return fit_score_model(model, task, loop, options, theory_like, device=device,
                           checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                           resume=resume, stop_after=stop_after, progress=progress,
                           desc="train torus score")


# ------------------------------------------------------------------------------------------------
# Sampling

@torch.no_grad()
def sample_torus_diffusion(model: TorusDiffusionModel, n: int, *, solver: str = "em",
                           steps: int = 500, seed: int = 0, device=None,
                           batch_size: int | None = None, progress: bool = True,
                           t_end: float | None = None, snr: float = 0.16,
                           corrector_steps: int = 1, ode_method: str = "heun",
                           rho: float = 2.0, denoise: bool = True) -> SamplerRun:
    """n independent configurations: uniform angles at t = 1 carried to t_end (default the
    training eps) by sde.integrate_reverse, returned in [-pi, pi). Options as
    diffusion.sample_diffusion's. denoise: end with Tweedie's step x + Xi(t_end) s(x, t_end),
    the mean of x_0 given x_t to O(Xi^2): without it the noise left at t_end (more than Xi(t_end):
    the last EM steps are coarse) lowered <cos P> of U(1) by 0.007 at 200 steps, 6 sigma."""
    if device is not None:
        model = model.to(device)
    t_end = model.t_eps if t_end is None else t_end

    def finish(x):
        if denoise:
            t = torch.full((x.shape[0],), t_end, dtype=x.dtype, device=x.device)
            x = x + model.schedule.xi(t).reshape(-1, *([1] * (x.dim() - 1))) * model.score(x, t)
        return wrap(x)

    return sample_batches(model, n, model.uniform_prior, finish, solver=solver, steps=steps,
                          seed=seed, batch_size=batch_size or min(n, 1024), progress=progress,
                          t_end=t_end, snr=snr, corrector_steps=corrector_steps,
                          ode_method=ode_method, rho=rho,
                          settings={"denoise": denoise, "flavour": "score", "torus": True,
                                    "schedule": model.schedule.name})


# ------------------------------------------------------------------------------------------------
# Model files (runtime/io/modelfile.py, kind "diffusion" with settings["torus"])

def torus_diffusion_state(model: TorusDiffusionModel) -> dict:
    """What the model file holds: EMA weights, raw weights, the schedule by name and tabulated."""
    extra = {"raw_state_dict": {k: v.detach().cpu() for k, v in (model.raw_state or {}).items()},
             "schedule_name": model.schedule.name,
             "schedule_table": tabulate_schedule(model.schedule)}
    return {"kind": "diffusion", "settings": model.settings, "state_dict": model.net.state_dict(),
            "extra": extra}


def torus_diffusion_from_file(payload: dict, *, schedule: Schedule | None = None, device=None,
                              dtype=torch.float32) -> TorusDiffusionModel:
    s = payload["settings"]
    schedule = schedule or tabulated_schedule(payload["schedule_table"])
    netset = s["network"]
    net = build_torus_network(s["config_shape"], s["plain"], s["gauge"], width=netset["width"],
                              depth=netset["depth"], kernel=netset["kernel"], zero_out=False)
    net.load_state_dict(payload["state_dict"])
    model = TorusDiffusionModel(net, schedule, config_shape=s["config_shape"], plain=s["plain"],
                                gauge=s["gauge"], t_eps=s["t_eps"], settings=s)
    model.raw_state = payload.get("raw_state_dict") or None
    return model.to(device=device or "cpu", dtype=dtype)
