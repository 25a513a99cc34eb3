"""Reverse-KL training of flows (real fields) and VANs (spin fields), and their model files.

Both minimise KL(q || p) = E_q[log q + S] + log Z, i.e. the variational free energy
F_q = E_q[log q + S] (S = theory.action; beta, if any, is inside S):
- a flow is reparameterised, x = f(z), so the gradient flows through x into the action (autograd
  through the generated torch action);
- a VAN's samples are discrete, so we use REINFORCE with the batch mean as baseline:
  grad F_q = E_q[(log q + S - b) grad log q].
Annealing multiplies the action by a factor ramped linearly from 0 to 1 over the first `anneal`
fraction of the steps (Wu et al. anneal beta; our beta lives inside S, so we anneal a multiplier).
`temper` < 1 ends the ramp there instead: q is trained towards p^temper, broader than p. Reverse
KL is mode-seeking, so a q trained on p itself is too narrow in p's collective modes and the
weights p/q of the independent Metropolis chains get a heavy tail from the configurations q
rarely proposes (XY L = 8, beta = 1: the torus flow under-proposes small |m|, and its IMH e comes
out 3-5 sigma high); a broader q covers them, at the cost of a lower acceptance.
Optionally a forward-KL term -E_data[log q] on an ensemble of configurations is added.

The loop (NaN policy, clipping, logging, checkpoints, resume) is the one trainer's
(runtime/models/trainer.py); this module supplies the loss and the diagnostics it records.
"""
from __future__ import annotations

import dataclasses

import torch

from theoryc.runtime.io.modelfile import theory_record
from theoryc.runtime.io.provenance import fingerprint
from theoryc.runtime.models.circular import ANGLE_ARCHS, angle_model, angle_model_from_settings
from theoryc.runtime.models.flow import build_flow, flow_from_settings
from theoryc.runtime.models.trainer import TrainSettings, data_fingerprint, train
from theoryc.runtime.models.van import VAN, is_spin_flip, van_from_settings
from theoryc.runtime.stats.reweighting import expected_imh_acceptance, kish_ess

FLOW_DEFAULTS = dict(n_layers=16, hidden=16, depth=2, kernel=3, scale_bound=1.0)
VAN_DEFAULTS = dict(hidden=2, depth=2)
# The von Mises network: one masked layer, so its natural parameters are linear in the earlier
# angles' (cos, sin), as the XY Gibbs conditional is (XY L = 8: free energy -156.07 against
# -154.70 for a hidden layer of 8 per site in 400 steps; README, "autoregressive").
AR_DEFAULTS = dict(FLOW_DEFAULTS, depth=1)


def model_kind(theory) -> str:
    """"van" for theories of spin fields only, "flow" for real fields only."""
    kinds = set(theory.field_kinds)
    if kinds == {"spin"}:
        return "van"
    if kinds == {"real"} or kinds == {"angle"}:     # angles: a torus flow (circular.py)
        return "flow"
    raise ValueError(f"cannot train a flow on mixed field kinds {sorted(kinds)}")


def has_spin_flip(theory) -> bool:
    gen = torch.Generator().manual_seed(0)
    return any(is_spin_flip(sym, tuple(theory.shape), gen) for sym in theory.symmetries)


def build_model(theory, *, device=None, dtype=None, z2=None, flow=None, **arch):
    """The untrained network for a theory: a coupling flow or a (Z2-symmetric) VAN;
    flow="fourier": the Fourier flow (fourier_flow.py), whose first layer is the free part."""
    if getattr(theory, "is_complex", False):
        raise ValueError("reverse-KL training needs a real action (this theory is complex)")
    shape = tuple(theory.shape)
    if flow not in (None, "realnvp", "fourier"):
        raise ValueError(f"unknown flow {flow!r}; choose 'realnvp' or 'fourier'")
    if flow == "fourier":
        from theoryc.runtime.models.fourier_flow import fourier_flow
        return fourier_flow(theory, device=device, dtype=dtype,
                            **{**FLOW_DEFAULTS, **{k: v for k, v in arch.items()
                                                   if v is not None and k in FLOW_DEFAULTS}})
    if arch.get("autoregressive") and set(theory.field_kinds) != {"angle"}:
        raise ValueError("the continuous autoregressive network is for angle fields only")
    if set(theory.field_kinds) == {"angle"}:
        defaults = AR_DEFAULTS if arch.get("autoregressive") else FLOW_DEFAULTS
        return angle_model(theory, device=device, dtype=dtype,
                           **{**defaults, **{k: v for k, v in arch.items() if v is not None}})
    if model_kind(theory) == "flow":
        settings = {**FLOW_DEFAULTS, **{k: v for k, v in arch.items() if v is not None}}
        return build_flow(shape, device=device, dtype=dtype, **settings)
    settings = {**VAN_DEFAULTS, **{k: v for k, v in arch.items()
                                   if v is not None and k in VAN_DEFAULTS}}
    if z2 is None:
        z2 = has_spin_flip(theory)
    elif z2 and not has_spin_flip(theory):
        raise ValueError("z2 symmetrisation needs the theory to declare the symmetry s -> -s")
    return VAN(shape, z2=z2, **settings).to(device=device, dtype=dtype or torch.get_default_dtype())


def _annealing(step: int, steps: int, anneal: float) -> float:
    ramp = int(anneal * steps)
    return 1.0 if ramp <= 0 else min(1.0, (step + 1) / ramp)


def _reverse_kl(model, theory, batch_size, gen, multiplier):
    """(loss to differentiate, log weights at multiplier 1 for diagnostics)."""
    x, log_q = model.sample(batch_size, gen)
    action = theory.action(x)
    if isinstance(model, VAN) or getattr(model, "reinforce", False):   # not reparameterised
        signal = (log_q + multiplier * action).detach()
        loss = ((signal - signal.mean()) * log_q).mean()
    else:
        loss = (log_q + multiplier * action).mean()
    return loss, (-action - log_q).detach()


def _forward_kl(model, data, batch_size, gen):
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen, device=gen.device)
    return -model.log_prob(data[idx.to(data.device)]).mean()


class ReverseKL:
    """The trainer's task for a flow or VAN: reverse KL (+ optional forward KL on data)."""

    def __init__(self, model, theory, *, batch_size, steps, anneal, data, data_weight,
                 reverse_weight, settings, temper=1.0):
        self.net, self.theory = model, theory
        self.batch_size, self.steps, self.anneal, self.temper = batch_size, steps, anneal, temper
        self.data, self.data_weight, self.reverse_weight = data, data_weight, reverse_weight
        self.settings = settings

    def loss(self, step, gen):
        self.net.train()
        loss, log_w = _reverse_kl(self.net, self.theory, self.batch_size, gen,
                                  self.temper * _annealing(step, self.steps, self.anneal))
        loss = self.reverse_weight * loss
        if self.data is not None:
            loss = loss + self.data_weight * _forward_kl(self.net, self.data, self.batch_size, gen)
        return loss, log_w

    def record(self, log_w) -> dict:
        """F_q, the batch ESS and the expected IMH acceptance (all at the full action)."""
        return {"free_energy": float(-log_w.mean()), "ess": kish_ess(log_w),
                "acceptance": expected_imh_acceptance(log_w[:1024])}   # O(N^2): cap the batch


def train_flow(theory, *, steps: int = 2000, batch_size: int | None = None,
               lr: float | None = None,
               seed: int = 0, device="cpu", dtype=torch.float32,
               n_layers=None, hidden=None, depth=None, kernel=None, scale_bound=None, z2=None,
               autoregressive: bool = False, flow: str | None = None,
               anneal: float | None = None, temper: float = 1.0,
               lr_final_fraction: float = 1.0, grad_clip: float | None = 10.0,
               data: torch.Tensor | None = None, data_weight: float = 1.0,
               reverse_weight: float = 1.0, checkpoint: str | None = None,
               checkpoint_every: int = 200, resume: bool = False, progress: bool = True,
               log_every: int = 10, max_bad_steps: int = 50, stop_after: int | None = None):
    """Train a flow (real fields) or a VAN (spin fields) on `theory` by reverse KL; returns it.

    Defaults (None): batch_size 64 (flow) / 256 (VAN), lr 1e-3 (flow) / 3e-3 (VAN).
    Architecture (None = default): flow n_layers=16, hidden=16 channels, depth=2 hidden conv
    layers, kernel=3, scale_bound=1 (tanh bound of log-scales); angle fields get a torus flow
    (runtime/models/circular.py), or with autoregressive=True a von Mises mixture network;
    flow="fourier": the Fourier flow (runtime/models/fourier_flow.py: the exact free-field layer
    of the action's quadratic part, then n_layers couplings); a single 0-d variable gets
    n_layers // 4 monotone maps with `hidden` tanh components. VAN hidden=2 units per spin, depth=2 masked
    layers, z2=None (symmetrise when the theory declares s -> -s).
    anneal: fraction of steps over which the action multiplier ramps 0 -> 1 (default 0 for
    flows, 0.3 for VANs); temper: the multiplier the ramp ends at (q trained towards p^temper;
    < 1 broadens q for independent Metropolis, see the module docstring); lr_final_fraction:
    cosine-decay the learning rate to this fraction of lr (1: constant). data: optional
    ensemble tensor (..., *theory.shape) for a forward-KL term weighted by data_weight
    (reverse_weight=0 trains on data only).
    The loop, its NaN policy, checkpoints and resume are the trainer's (runtime/models/trainer.py).
    The returned model has `.history` and `.meta` (theory fingerprint, training settings,
    history) for `save_model`.
    """
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype   # "float64" too
    with torch.random.fork_rng(devices=[]):   # initial weights from `seed`, global RNG untouched
        torch.manual_seed(seed)
        model = build_model(theory, device=device, dtype=torch_dtype, z2=z2, n_layers=n_layers,
                            hidden=hidden, depth=depth, kernel=kernel, scale_bound=scale_bound,
                            flow=flow, **({"autoregressive": True} if autoregressive else {}))
    is_van = isinstance(model, VAN) or getattr(model, "reinforce", False)
    anneal = (0.3 if is_van else 0.0) if anneal is None else anneal
    batch_size = batch_size or (256 if is_van else 64)
    lr = lr or (3e-3 if is_van else 1e-3)
    if data is not None:
        data = data.reshape(-1, *theory.shape).to(device=device, dtype=torch_dtype)
    if not 0 < temper <= 1:
        raise ValueError(f"temper must be in (0, 1] (got {temper})")
    loop = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed, grad_clip=grad_clip,
                         lr_final_fraction=lr_final_fraction,
                         max_bad_steps=max_bad_steps, log_every=log_every)
    settings = {"kind": model.kind, "architecture": model.settings, "theory": fingerprint(theory),
                "data": data_fingerprint(data), "anneal": anneal,
                "data_weight": data_weight if data is not None else 0.0,
                "reverse_weight": reverse_weight, "dtype": str(torch_dtype).split(".")[-1],
                "device": torch.device(device).type,
                **({"temper": temper} if temper != 1 else {})}   # old checkpoints still resume
    task = ReverseKL(model, theory, batch_size=batch_size, steps=steps, anneal=anneal, data=data,
                     data_weight=data_weight, reverse_weight=reverse_weight, settings=settings,
                     temper=temper)
    result = train(task, loop, device=device, checkpoint=checkpoint,
                   checkpoint_every=checkpoint_every, resume=resume, stop_after=stop_after,
                   progress=progress, desc=f"train {model.kind}")
    model.history = result.history
    model.meta = dict(theory_record(theory),
                      training={**dataclasses.asdict(loop), **settings}, history=result.history)
    return model.eval()


def flow_state(model) -> dict:
    """What the model file holds for a flow or VAN (see runtime/io/modelfile.py)."""
    return {"kind": model.kind, "settings": {**model.settings, "training": model.meta.get("training", {})},
            "state_dict": model.state_dict(), "extra": {}}


def flow_from_file(payload: dict, device=None, dtype=None):
    """Rebuild a flow or VAN from a model file's payload; dtype defaults to the saved one."""
    state = payload["state_dict"]
    if dtype is None:
        dtype = next(v.dtype for v in state.values() if v.is_floating_point())
    builders = {"flow": flow_from_settings, "van": van_from_settings}
    builder = builders[payload["kind"]]
    if payload["settings"].get("arch") in ANGLE_ARCHS:
        builder = angle_model_from_settings
    if payload["settings"].get("arch") == "fourier":
        from theoryc.runtime.models.fourier_flow import fourier_flow_from_settings as builder
    model = builder(payload["settings"], device=device, dtype=dtype)
    model.load_state_dict(state)
    return model.eval()
