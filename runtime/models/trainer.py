"""The one training loop for every generative model (flows, VANs, diffusion models).

A model kind supplies a *task*: `net` (the module whose parameters are trained), `settings` (a
JSON-able dict of everything of that kind which changes the result: architecture, theory and
data fingerprints, loss options), `loss(step, generator) -> (loss, info)` and
`record(info) -> {name: float}` (the kind's diagnostics, called at logging steps only). The loop
owns everything else, once:

- Adam with a learning rate warmed up linearly over `warmup` steps, then constant
  (lr_final_fraction = 1) or cosine-decayed to lr_final_fraction * lr;
- gradient clipping (grad_clip; None = none) and an exponential moving average of the weights
  (ema_decay; None = none), whose warm-up min(decay, (1 + step) / (10 + step)) lets the early
  average forget the initial weights;
- one NaN policy: a step whose loss or gradient is not finite is skipped (no update) and counted;
  more than max_bad_steps of them in a row stop the training with a one-line error;
- the history: every log_every steps the mean loss since the last entry, the learning rate,
  the seconds spent and the task's diagnostics; totals skipped_steps, train_seconds,
  samples_per_second;
- the progress bar and checkpoints: every checkpoint_every steps and at the end, a checkpoint
  holds weights, EMA, optimizer, RNG, counters, history and the settings; `resume` continues it
  bit for bit and refuses one made with any other setting, naming it.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from theoryc.runtime.io import interrupt
from theoryc.runtime.io.checkpoint import load_checkpoint, refuse_other_settings, save_checkpoint
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.parallel import collectives
from theoryc.runtime.parallel.training import data_parallel, rank_seed
from theoryc.runtime.parallel.world import world

CHECKPOINT_KIND = "training"


class NonFiniteTraining(SamplerError, FloatingPointError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass(frozen=True)
class TrainSettings:
    """The loop's settings that change the result (all recorded in checkpoints)."""
    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    warmup: int = 0
    lr_final_fraction: float = 1.0
    grad_clip: float | None = None
    ema_decay: float | None = None
    max_bad_steps: int = 50
    log_every: int = 10


@dataclass
class TrainResult:
    history: dict            # lists per logged step, plus totals
    raw_state: dict | None   # the last (non-averaged) weights when an EMA replaced them


def learning_rate(step: int, s: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to lr_final_fraction * lr (constant when it is 1)."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    p = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    f = s.lr_final_fraction
    return s.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p)))


def data_fingerprint(data: torch.Tensor | None) -> str | None:
    """sha256 of the training data's bytes, shape and dtype (None without data)."""
    if data is None:
        return None
    t = data.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)} {t.dtype}".encode())
    h.update(t.numpy().tobytes() if not t.is_complex() else torch.view_as_real(t).numpy().tobytes())
    return h.hexdigest()


def _all_settings(task, s: TrainSettings) -> dict:
    # round-trip through JSON so that a loaded checkpoint compares equal (tuples become lists)
    return json.loads(json.dumps({"training": dataclasses.asdict(s), **task.settings}))


def _fresh_state() -> dict:
    return {"step": 0, "history": {"step": [], "loss": [], "lr": [], "seconds": []},
            "window": [0.0, 0], "bad": 0, "skipped": 0, "seconds": 0.0}


def train(task, s: TrainSettings, *, device="cpu", checkpoint: str | None = None,
          checkpoint_every: int = 200, resume: bool = False, stop_after: int | None = None,
          progress: bool = True, desc: str = "train") -> TrainResult:
    """Run the loop on `task` (see the module docstring); the task's net ends with the EMA
    weights when an EMA is used. stop_after: end this call after that many steps (checkpointed);
    a later call with resume=True and the same settings carries on."""
    net = task.net
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=s.lr)
    ema = _frozen_copy(net) if s.ema_decay is not None else None
    w = world()        # torchrun: data-parallel over the ranks (parallel/training.py)
    gen = torch.Generator(device=device).manual_seed(rank_seed(s.seed, w.rank))
    settings = _all_settings(task, s)
    if w.spread:       # each rank's batches and generator depend on the number of ranks
        settings["ranks"] = w.size
        task = data_parallel(task, device)
        progress = progress and w.is_main
    state = _fresh_state()
    if resume and checkpoint and os.path.exists(checkpoint):
        state = _restore(checkpoint, settings, net, ema, opt, gen)
    start = state["step"]
    end = s.steps if stop_after is None else min(s.steps, start + stop_after)
    bar = tqdm(total=s.steps, initial=start, disable=not progress, desc=desc)
    t0 = time.perf_counter() - state["seconds"]
    with interrupt.safe_points() if checkpoint else contextlib.nullcontext():
        while state["step"] < end:
            # SIGINT/SIGTERM: checkpoint between steps, then stop (torchrun: all ranks at the
            # same step, whichever the signal reached)
            if collectives.any_rank(interrupt.requested() is not None):
                _save(checkpoint, settings, net, ema, opt, gen, state)
                raise interrupt.Interrupted(interrupt.requested() or "SIGTERM", checkpoint)
            _step(task, s, net, params, ema, opt, gen, state)
            state["seconds"] = time.perf_counter() - t0
            bar.update(1)
            if state["history"]["step"][-1:] == [state["step"] - 1]:     # this step was logged
                bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in state["history"].items()
                                 if k not in ("step", "seconds", "lr")}, refresh=False)
            if checkpoint and (state["step"] % checkpoint_every == 0 or state["step"] == end):
                _save(checkpoint, settings, net, ema, opt, gen, state)
    bar.close()
    raw = None
    if ema is not None:
        raw = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(ema.state_dict())
    seconds = max(state["seconds"], 1e-9)
    history = dict(state["history"], skipped_steps=state["skipped"], train_seconds=state["seconds"],
                   samples_per_second=state["step"] * s.batch_size * w.size / seconds)
    return TrainResult(history=history, raw_state=raw)


def _step(task, s, net, params, ema, opt, gen, state):
    step = state["step"]
    for group in opt.param_groups:
        group["lr"] = learning_rate(step, s)
    opt.zero_grad(set_to_none=True)
    loss, info = task.loss(step, gen)
    # one decision for all ranks (a NaN on one skips the step everywhere; DDP's backward
    # needs every rank or none)
    ok = not collectives.any_rank(not bool(torch.isfinite(loss)))
    if ok:
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip or math.inf)
        ok = bool(torch.isfinite(norm))
    if not ok:     # the one NaN policy: no update from this batch; persistent trouble stops
        state["skipped"] += 1
        state["bad"] += 1
        if state["bad"] > s.max_bad_steps:
            raise NonFiniteTraining(f"{state['bad']} steps in a row with a non-finite loss or "
                                    f"gradient (up to step {step}); lower the learning rate")
    else:
        state["bad"] = 0
        opt.step()
        if ema is not None:
            _ema_update(ema, net, min(s.ema_decay, (1 + step) / (10 + step)))
        state["window"][0] += float(loss.detach())
        state["window"][1] += 1
    state["step"] = step + 1
    if state["step"] % s.log_every == 0 or state["step"] == s.steps:
        _log(task, state, step, info, opt)


def _frozen_copy(net):
    ema = copy.deepcopy(net)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def _ema_update(ema, net, decay: float):
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1 - decay)


def _log(task, state, step, info, opt):
    total, count = (collectives.total(v) for v in state["window"])    # the mean over ranks
    entry = {"step": step, "loss": total / count if count else float("nan"),
             "lr": opt.param_groups[0]["lr"], "seconds": state["seconds"], **task.record(info)}
    h = state["history"]
    for k, v in entry.items():
        h.setdefault(k, []).append(float(v) if k != "step" else int(v))
    state["window"] = [0.0, 0]


def _all_rngs(gen) -> torch.Tensor:
    """The generator state; with torchrun every rank's, (ranks, bytes), on rank 0."""
    w = world()
    if not w.spread:
        return gen.get_state()
    return collectives.gather_rows(gen.get_state()[None], [1] * w.size)


def _save(path, settings, net, ema, opt, gen, state):
    rng = _all_rngs(gen)
    if not world().is_main:      # torchrun: rank 0 writes (the weights are the same everywhere)
        return
    save_checkpoint(path, {"kind": CHECKPOINT_KIND, "settings": json.dumps(settings, sort_keys=True),
                           "net": net.state_dict(), "ema": ema.state_dict() if ema else None,
                           "optimizer": opt.state_dict(), "rng": rng,
                           "state": {k: v for k, v in state.items()}})


def _refuse_other_theory(path, saved, current) -> None:
    """A task's settings["theory"] is its theory's fingerprint (runtime/io/provenance.py): one of
    another theory, lattice or parameters is refused in those words, before the other settings."""
    from theoryc.runtime.io.provenance import refuse_mismatch
    if not isinstance(current, dict):
        return                       # a task without a theory
    if not isinstance(saved, dict):  # a digest: an older theoryc's checkpoint
        raise SamplerError(f"{path} was made by an older theoryc, which recorded its theory in "
                           "another form; remove it to start again")
    refuse_mismatch(path, "was made for", saved, current,
                    "resume with the training's own --set values, or remove it to start again")


def _restore(path, settings, net, ema, opt, gen) -> dict:
    ck = load_checkpoint(path)
    if ck.get("kind") != CHECKPOINT_KIND:
        raise SamplerError(f"{path} is not a training checkpoint (it holds {ck.get('kind')!r})")
    saved = json.loads(ck["settings"])
    _refuse_other_theory(path, saved.get("theory"), settings.get("theory"))
    refuse_other_settings(path, saved, settings)
    net.load_state_dict(ck["net"])
    if ema is not None:
        ema.load_state_dict(ck["ema"])
    opt.load_state_dict(ck["optimizer"])
    rng = ck["rng"]
    gen.set_state(rng[world().rank] if rng.dim() == 2 else rng)   # (ranks, bytes): torchrun
    state = ck["state"]
    state["window"] = list(state["window"])
    return state
