"""Conditional diffusion models: the score of p(x | c) for external data (issue 14, item 3).

The seed's heavy-ion emulators learn spectra conditioned on initial profiles and eta/s; here any
arrays of an HDF5 file (runtime/io/dataset.py) conditioned on scalars (labels) and/or arrays on
the same lattice. The network is the unconditional one (networks.py) with two additions:
- scalar conditions, standardised by the training set's mean and spread, pass through a small
  MLP whose output is added to the time embedding (so every block sees them) and sets a gain
  per output channel (the blocks' GroupNorms remove per-channel constants, and with them much
  of what an embedding alone says about the scale of the score, e.g. a mass);
- array conditions, standardised per channel, enter as extra input channels.
The normalisations are buffers of the network, so the one model-file format stores them.

Everything else -- preconditioning, denoising score matching, the one trainer, the reverse-SDE and
ODE samplers, model files -- is the unconditional model's (diffusion.py): the network is told
the condition of the batch it is about to see by `bind` (the training task binds the conditions
of the events it draws, the sampler binds the requested one).
"""
from __future__ import annotations

import torch
from torch import nn

from .diffusion import (DenoisingScoreMatching, DiffusionModel, _symmetrised_stats,
                        fit_score_model, sample_diffusion, score_task_settings)
from .networks import TimeConvNet, TimeMLP
from .trainer import TrainSettings, data_fingerprint

Tensor = torch.Tensor


class ConditionalNet(nn.Module):
    """A time network (TimeMLP / TimeConvNet) that also takes scalar and array conditions."""

    def __init__(self, feature_shape, specs: list[dict], *, width=None, depth=None, kernel=3,
                 emb: int = 32, zero_out: bool = True):
        super().__init__()
        channels, lattice = feature_shape[0], tuple(feature_shape[1:])
        self.specs = [dict(s) for s in specs]
        self.n_scalars = sum(s["width"] for s in specs if s["kind"] == "scalar")
        self.n_arrays = sum(s["width"] for s in specs if s["kind"] == "array")
        if self.n_arrays and not lattice:
            raise ValueError("array conditions need a lattice theory; give scalars in 0-d")
        self.lattice = lattice
        if lattice:
            self.base = TimeConvNet(len(lattice), channels + self.n_arrays, channels,
                                    width=width or 32, depth=depth or 4, kernel=kernel, emb=emb,
                                    zero_out=zero_out)
        else:
            self.base = TimeMLP(channels, channels, width=width or 64, depth=depth or 3, emb=emb,
                                zero_out=zero_out)
        self.cond_embed = (nn.Sequential(nn.Linear(self.n_scalars, emb), nn.SiLU(),
                                         nn.Linear(emb, emb)) if self.n_scalars else None)
        self.cond_gain = nn.Linear(emb, channels) if self.n_scalars else None
        if self.cond_gain is not None:      # start as the unconditional network
            nn.init.zeros_(self.cond_gain.weight)
            nn.init.zeros_(self.cond_gain.bias)
        for name, size in (("scalar", self.n_scalars), ("array", self.n_arrays)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        self._bound: tuple[Tensor | None, Tensor | None] = (None, None)

    # -- conditions
    def set_normalisation(self, scalars: Tensor | None, arrays: Tensor | None) -> None:
        """Standardise conditions by the training set's: per scalar, per array channel."""
        if scalars is not None:
            self.scalar_mean.copy_(scalars.mean(0))
            self.scalar_std.copy_(scalars.std(0).clamp_min(1e-12))
        if arrays is not None:
            per_channel = arrays.transpose(0, 1).flatten(1)
            self.array_mean.copy_(per_channel.mean(1))
            self.array_std.copy_(per_channel.std(1).clamp_min(1e-12))

    def split(self, conditions: list[Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """The conditions in spec order -> (scalars (N, S), arrays (N, C, *lattice))."""
        scalars = [c for c, s in zip(conditions, self.specs) if s["kind"] == "scalar"]
        arrays = [c for c, s in zip(conditions, self.specs) if s["kind"] == "array"]
        return (torch.cat(scalars, 1) if scalars else None,
                torch.cat(arrays, 1) if arrays else None)

    def bind(self, scalars: Tensor | None, arrays: Tensor | None) -> None:
        """The conditions of the next batch: one row each (broadcast) or one per sample."""
        sh = (1, -1, *([1] * len(self.lattice)))
        dtype = self.scalar_mean.dtype
        s = None if scalars is None else (scalars.to(dtype) - self.scalar_mean) / self.scalar_std
        a = None if arrays is None else ((arrays.to(dtype) - self.array_mean.reshape(sh))
                                         / self.array_std.reshape(sh))
        self._bound = (s, a)

    def forward(self, u: Tensor, t: Tensor, log_std: Tensor) -> Tensor:
        scalars, arrays = self._bound
        if (scalars is None) != (self.n_scalars == 0) or (arrays is None) != (self.n_arrays == 0):
            raise RuntimeError("a conditional network needs its conditions bound (bind) first")
        base = self.base
        e = base.embed(t, log_std)
        gain = None
        if scalars is not None:
            c = self.cond_embed(scalars.to(u.dtype))
            e, gain = e + c, 1 + self.cond_gain(c)
        if arrays is not None:
            u_in = torch.cat([u, arrays.to(u.dtype).expand(u.shape[0], *arrays.shape[1:])], 1)
        else:
            u_in = u
        h = base.inp(u_in if self.lattice else u_in.flatten(1))
        for block in base.blocks:
            h = block(h, e)
        out = base.out(h)
        if not self.lattice:
            out = out.reshape(u.shape[0], -1)
        if gain is not None:
            out = out * gain.reshape(*gain.shape, *([1] * len(self.lattice)))
        return out


class ConditionedData:
    """The training events, indexed as the DSM task indexes its data: drawing events `idx`
    binds their conditions to the network (so the task and its loss stay the unconditional
    ones)."""

    def __init__(self, configs: Tensor, conditions: list[Tensor], net: ConditionalNet):
        self.configs, self.net = configs, net
        self.scalars, self.arrays = net.split(conditions)
        self.shape, self.device = configs.shape, configs.device

    def __getitem__(self, idx):
        self.net.bind(None if self.scalars is None else self.scalars[idx],
                      None if self.arrays is None else self.arrays[idx])
        return self.configs[idx]


def conditional_network(settings: dict, feature_shape) -> ConditionalNet:
    """The network a conditional model's settings describe (model files)."""
    netset = settings["network"]
    return ConditionalNet(feature_shape, settings["condition"], width=netset["width"],
                          depth=netset["depth"], kernel=netset["kernel"], zero_out=False)


def train_conditional(theory_like, data: Tensor, conditions: list[Tensor], specs, *, schedule,
                      steps: int = 2000, batch_size: int = 256, lr: float = 2e-3,
                      warmup: int = 100, ema_decay: float = 0.999, t_eps: float = 1e-3,
                      width=None, depth=None, kernel: int = 3, seed: int = 0, device=None,
                      dtype=torch.float32, checkpoint=None, checkpoint_every: int = 500,
                      resume: bool = False, progress: bool = True, log_every: int = 50,
                      t_power: float = 1.0) -> DiffusionModel:
    """A diffusion model of p(x | c) trained by denoising score matching on (data, conditions).

    data: (N, *shape) real configurations; conditions: one tensor per spec, (N, k) scalars or
    (N, c, *lattice) arrays (runtime/io/dataset.py); specs: their ConditionSpec or dicts.
    No symmetry augmentation: a symmetry of x alone need not be one of the pair (x, c).
    """
    device = torch.device(device or "cpu")
    specs = [s if isinstance(s, dict) else s.as_dict() for s in specs]
    config_shape = tuple(data.shape[1:])
    data = data.to(device=device, dtype=dtype)
    conditions = [c.to(device=device, dtype=torch.float64) for c in conditions]
    settings = {"flavour": "score", "schedule": schedule.name, "config_shape": list(config_shape),
                "is_complex": False, "t_eps": t_eps, "condition": specs,
                "network": {"width": width, "depth": depth, "kernel": kernel},
                "field_names": list(getattr(theory_like, "field_names", ()))}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConditionalNet(config_shape, specs, width=width, depth=depth, kernel=kernel)
    net.set_normalisation(*[None if c is None else c.float() for c in net.split(conditions)])
    zero = torch.zeros(config_shape[0], dtype=torch.float64)
    model = DiffusionModel(net, schedule, flavour="score", config_shape=config_shape,
                           is_complex=False, data_mean=zero, data_var=zero + 1, t_eps=t_eps,
                           settings=settings)
    mean, var = _symmetrised_stats(model, data, [])
    model.data_mean.copy_(mean)
    model.data_var.copy_(var)
    model = model.to(device=device, dtype=dtype)
    loop = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup=warmup,
                         ema_decay=ema_decay, log_every=log_every)
    options = {"t_power": t_power, "n_data": int(data.shape[0])}
    task_settings = score_task_settings("diffusion", model, theory_like, data, dtype, device,
                                        options,
                                        conditions=[data_fingerprint(c) for c in conditions])
    task = DenoisingScoreMatching(model, ConditionedData(data, conditions, net), [],
                                  batch_size=batch_size, t_power=t_power, settings=task_settings)
    return fit_score_model(model, task, loop, options, theory_like, device=device,
                           checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                           resume=resume, progress=progress, desc="train conditional")


def is_conditional(model) -> bool:
    return isinstance(getattr(model, "net", None), ConditionalNet)


def sample_conditional(model: DiffusionModel, n: int, conditions: list[Tensor], **options):
    """n configurations of p(x | c) by sample_diffusion (options: its solver, steps, seed, ...).
    conditions: one tensor per condition of the model, in its order; each one row (every
    sample gets it: (1, k) or (1, c, *lattice)) or n rows (one per sample, drawn in one batch)."""
    net: ConditionalNet = model.net
    if len(conditions) != len(net.specs):
        names = ", ".join(s["name"] for s in net.specs)
        raise ValueError(f"the model is conditioned on {len(net.specs)} condition(s) ({names}); "
                         f"{len(conditions)} given")
    rows = {c.shape[0] for c in conditions}
    if rows - {1, n}:
        raise ValueError(f"a condition has {sorted(rows - {1, n})} rows: give 1 or n = {n}")
    if n in rows and n > 1:
        options["batch_size"] = n          # per-sample conditions: one batch holds them all
    conditions = [c.to(model.device) for c in conditions]
    net.bind(*net.split(conditions))
    run = sample_diffusion(model, n, **options)
    run.settings["condition"] = [s["name"] for s in net.specs]
    return run
