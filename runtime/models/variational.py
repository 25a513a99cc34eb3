"""Reverse-KL training of flows (real fields) and VANs (spin fields), and their model files.

Both minimise KL(q || p) = E_q[log q + S] + log Z, i.e. the variational free energy
F_q = E_q[log q + S] (S = theory.action; beta, if any, is inside S):
- a flow is reparameterised, x = f(z), so the gradient flows through x into the action (autograd
  through the generated torch action);
- a VAN's samples are discrete, so we use REINFORCE with the batch mean as baseline:
  grad F_q = E_q[(log q + S - b) grad log q].
Annealing multiplies the action by a factor ramped linearly from 0 to 1 over the first `anneal`
fraction of the steps (Wu et al. anneal beta; our beta lives inside S, so we anneal a multiplier).
Optionally a forward-KL term -E_data[log q] on an ensemble of configurations is added.

Checkpoints (model, optimizer, step, RNG, history) are written atomically to `checkpoint` every
`checkpoint_every` steps and at the end; `resume=True` continues from one.
"""
from __future__ import annotations

import json
import math
import os
import time

import torch
from tqdm.auto import tqdm

from theoryc.runtime.models.flow import build_flow, flow_from_settings
from theoryc.runtime.stats.reweighting import expected_imh_acceptance, kish_ess
from theoryc.runtime.models.van import VAN, is_spin_flip, van_from_settings

FLOW_DEFAULTS = dict(n_layers=16, hidden=16, depth=2, kernel=3, scale_bound=1.0)
VAN_DEFAULTS = dict(hidden=2, depth=2)


def model_kind(theory) -> str:
    """"van" for theories of spin fields only, "flow" for real fields only."""
    kinds = set(theory.field_kinds)
    if kinds == {"spin"}:
        return "van"
    if kinds == {"real"}:
        return "flow"
    raise ValueError(f"cannot train a flow on mixed field kinds {sorted(kinds)}")


def has_spin_flip(theory) -> bool:
    gen = torch.Generator().manual_seed(0)
    return any(is_spin_flip(sym, tuple(theory.shape), gen) for sym in theory.symmetries)


def build_model(theory, *, device=None, dtype=None, z2=None, **arch):
    """The untrained network for a theory: a coupling flow or a (Z2-symmetric) VAN."""
    if getattr(theory, "is_complex", False):
        raise ValueError("reverse-KL training needs a real action (this theory is complex)")
    shape = tuple(theory.shape)
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
    if isinstance(model, VAN):
        signal = (log_q + multiplier * action).detach()
        loss = ((signal - signal.mean()) * log_q).mean()
    else:
        loss = (log_q + multiplier * action).mean()
    return loss, (-action - log_q).detach()


def _forward_kl(model, data, batch_size, gen):
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen, device=gen.device)
    return -model.log_prob(data[idx.to(data.device)]).mean()


def _save_atomic(payload, path):
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _history():
    return {"step": [], "free_energy": [], "ess": [], "acceptance": [], "seconds": []}


def train_flow(theory, *, steps: int = 2000, batch_size: int | None = None,
               lr: float | None = None,
               seed: int = 0, device="cpu", dtype=torch.float32,
               n_layers=None, hidden=None, depth=None, kernel=None, scale_bound=None, z2=None,
               anneal: float | None = None, grad_clip: float | None = 10.0,
               data: torch.Tensor | None = None, data_weight: float = 1.0,
               reverse_weight: float = 1.0, checkpoint: str | None = None,
               checkpoint_every: int = 200, resume: bool = False, progress: bool = True,
               log_every: int = 10, max_bad_steps: int = 50):
    """Train a flow (real fields) or a VAN (spin fields) on `theory` by reverse KL; returns it.

    Defaults (None): batch_size 64 (flow) / 256 (VAN), lr 1e-3 (flow) / 3e-3 (VAN).
    Architecture (None = default): flow n_layers=16, hidden=16 channels, depth=2 hidden conv
    layers, kernel=3, scale_bound=1 (tanh bound of log-scales); a single 0-d variable gets
    n_layers // 4 monotone maps with `hidden` tanh components. VAN hidden=2 units per spin, depth=2 masked
    layers, z2=None (symmetrise when the theory declares s -> -s).
    anneal: fraction of steps over which the action multiplier ramps 0 -> 1 (default 0 for
    flows, 0.3 for VANs). data: optional ensemble tensor (..., *theory.shape) for a forward-KL
    term weighted by data_weight (reverse_weight=0 trains on data only).
    The returned model has `.meta` (theory name, source, params, training settings, history)
    for `save_model`.
    """
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype   # "float64" too
    with torch.random.fork_rng(devices=[]):   # initial weights from `seed`, global RNG untouched
        torch.manual_seed(seed)
        model = build_model(theory, device=device, dtype=torch_dtype, z2=z2, n_layers=n_layers,
                            hidden=hidden, depth=depth, kernel=kernel, scale_bound=scale_bound)
    is_van = isinstance(model, VAN)
    anneal = (0.3 if is_van else 0.0) if anneal is None else anneal
    batch_size = batch_size or (256 if is_van else 64)
    lr = lr or (3e-3 if is_van else 1e-3)
    train_settings = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, anneal=anneal,
                          grad_clip=grad_clip, data_weight=data_weight if data is not None else 0.0,
                          reverse_weight=reverse_weight, dtype=str(torch_dtype).split(".")[-1])
    if data is not None:
        data = data.reshape(-1, *theory.shape).to(device=device, dtype=torch_dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {"step": 0, "history": _history(), "seconds": 0.0}
    if resume and checkpoint and os.path.exists(checkpoint):
        state = _load_checkpoint(checkpoint, model, optimizer, gen)
    _run_steps(model, theory, optimizer, gen, state, steps=steps, batch_size=batch_size,
               anneal=anneal, grad_clip=grad_clip, data=data, data_weight=data_weight,
               reverse_weight=reverse_weight, checkpoint=checkpoint,
               checkpoint_every=checkpoint_every, progress=progress, log_every=log_every,
               max_bad_steps=max_bad_steps)
    model.meta = dict(theory_name=theory.name, theory_source=theory.source,
                      params=dict(theory.params), training=train_settings,
                      history=state["history"], train_seconds=state["seconds"])
    return model.eval()


def _run_steps(model, theory, optimizer, gen, state, *, steps, batch_size, anneal, grad_clip,
               data, data_weight, reverse_weight, checkpoint, checkpoint_every, progress,
               log_every, max_bad_steps):
    bad = 0
    bar = tqdm(range(state["step"], steps), disable=not progress, desc=f"train {model.kind}",
               initial=state["step"], total=steps)
    t0 = time.perf_counter() - state["seconds"]
    for step in bar:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss, log_w = _reverse_kl(model, theory, batch_size, gen, _annealing(step, steps, anneal))
        loss = reverse_weight * loss
        if data is not None:
            loss = loss + data_weight * _forward_kl(model, data, batch_size, gen)
        if torch.isfinite(loss):
            loss.backward()
        grads_ok = torch.isfinite(loss) and all(
            torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        if not grads_ok:   # NaN guard: skip the update; persistent trouble is an error
            bad += 1
            if bad > max_bad_steps:
                raise FloatingPointError(f"{bad} consecutive non-finite losses/gradients at "
                                         f"step {step}; lower lr or scale_bound")
            continue
        bad = 0
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - t0
        if step % log_every == 0 or step == steps - 1:
            _record(state, bar, step, log_w)
        if checkpoint and (state["step"] % checkpoint_every == 0 or state["step"] == steps):
            _save_checkpoint(checkpoint, model, optimizer, gen, state)
    bar.close()


def _record(state, bar, step, log_w):
    """Log F_q, the batch ESS and the expected IMH acceptance (all at the full action)."""
    h = state["history"]
    entry = dict(step=step, free_energy=float(-log_w.mean()), ess=kish_ess(log_w),
                 acceptance=expected_imh_acceptance(log_w[:1024]),   # O(N^2): cap the batch
                 seconds=state["seconds"])
    for k, v in entry.items():
        h[k].append(v)
    bar.set_postfix(F=f"{entry['free_energy']:.3f}", ess=f"{entry['ess']:.2f}",
                    acc=f"{entry['acceptance']:.2f}", refresh=False)


def _save_checkpoint(path, model, optimizer, gen, state):
    _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "step": state["step"], "seconds": state["seconds"], "rng": gen.get_state(),
                  "history": state["history"], "settings": json.dumps(model.settings)}, path)


def _load_checkpoint(path, model, optimizer, gen):
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    if json.loads(ckpt["settings"]) != model.settings:
        raise ValueError(f"checkpoint {path} was written for another architecture: "
                         f"{ckpt['settings']}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    gen.set_state(ckpt["rng"])
    return {"step": int(ckpt["step"]), "history": ckpt["history"],
            "seconds": float(ckpt["seconds"])}


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("theoryc")
    except Exception:   # not installed (running from a source tree)
        return "unknown"


def _json_params(params) -> str:
    def enc(v):
        return [v.real, v.imag] if isinstance(v, complex) else v
    return json.dumps({k: enc(v) for k, v in dict(params).items()})


def save_model(model, path: str, meta: dict | None = None) -> None:
    """Write a flow/VAN model file (notes/modelfile.md), atomically.

    meta overrides/extends `model.meta` (theory_name, theory_source, params, training, history).
    """
    info = {**getattr(model, "meta", {}), **(meta or {})}
    settings = {**model.settings, "training": info.get("training", {})}
    payload = {"kind": model.kind, "theoryc_version": _version(),
               "theory_name": str(info.get("theory_name", "")),
               "theory_source": str(info.get("theory_source", "")),
               "params": _json_params(info.get("params", {})),
               "settings": json.dumps(settings),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "history": info.get("history", {}),
               "train_seconds": float(info.get("train_seconds", 0.0))}
    _save_atomic(payload, path)


def load_model(path: str, device=None, dtype=None):
    """Rebuild a flow or VAN from a model file (weights_only load); dtype defaults to the saved."""
    payload = torch.load(path, weights_only=True, map_location="cpu")
    settings = json.loads(payload["settings"])
    state = payload["state_dict"]
    if dtype is None:
        dtype = next(v.dtype for v in state.values() if v.is_floating_point())
    builders = {"flow": flow_from_settings, "van": van_from_settings}
    if payload["kind"] not in builders:
        raise ValueError(f"{path} holds a {payload['kind']!r} model, not a flow or VAN")
    model = builders[payload["kind"]](settings, device=device, dtype=dtype)
    model.load_state_dict(state)
    model.meta = dict(theory_name=payload["theory_name"], theory_source=payload["theory_source"],
                      params=json.loads(payload["params"]), training=settings.get("training", {}),
                      history=payload.get("history", {}),
                      train_seconds=payload.get("train_seconds", 0.0))
    return model.eval()
