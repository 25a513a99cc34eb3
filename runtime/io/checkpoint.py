"""The one checkpoint format, shared by every long-running sampler and trainer.

A checkpoint is a plain dict of tensors and primitives (int, float, str, bool, None, lists, dicts)
written with `torch.save` and read back with `torch.load(weights_only=True)`: nothing in a checkpoint
file is ever unpickled as arbitrary Python. Writes go through `atomic.atomic_replace`,
so a crash mid-write leaves the previous checkpoint intact. A sampler's checkpoint holds its state
and how many configurations it has written, never the ensemble itself (io/ensemble.py streams it).
"""
from __future__ import annotations

import os

import torch

from ..errors import SamplerError
from .atomic import atomic_replace
from .validate import FormatError, load_plain, require

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically write `state` (tensors moved to the cpu) to `path`."""
    payload = {"checkpoint_format": CHECKPOINT_FORMAT, **_to_cpu(state)}
    atomic_replace(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors on the cpu, weights_only); a
    foreign, damaged or pickled file is a one-line SamplerError (io/validate.py)."""
    state = load_plain(path, "checkpoint")
    if not isinstance(state, dict) or "checkpoint_format" not in state:
        raise FormatError(f"{path}: not a theoryc checkpoint (no checkpoint format in it)")
    fmt = state.pop("checkpoint_format")
    if fmt != CHECKPOINT_FORMAT:
        raise SamplerError(f"{path}: not a checkpoint this theoryc reads (format {fmt!r}, this "
                           f"one reads {CHECKPOINT_FORMAT}); remove it and start again")
    return state


RUN_KEYS = {"sampler": str, "settings": dict, "t": int, "written": int, "state": dict,
            "adaptation": dict, "seconds": float}


def load_run_checkpoint(path: str | os.PathLike, sampler: str, settings: dict,
                        snap: dict | None = None) -> dict | None:
    """The checkpoint of an interrupted run to resume, or None when there is none. A checkpoint
    made by another sampler or with other settings is refused: resuming it would silently mix
    two different runs. snap: the checkpoint at `path` already read (checked, not read again)."""
    if snap is None:
        if not os.path.exists(path):
            return None
        snap = load_checkpoint(path)
    require(path, snap, RUN_KEYS, "sampler checkpoint")
    refuse_other_settings(path, {"sampler": snap.get("sampler"), "settings": snap.get("settings")},
                          {"sampler": sampler, "settings": settings})
    return snap


def refuse_other_settings(path, saved: dict, current: dict) -> None:
    """A one-line error naming the first setting (dotted path into nested dicts) in which the
    checkpoint at `path` differs from this run; nothing when they agree."""
    a, b = _flat(saved), _flat(current)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise SamplerError(f"checkpoint {path} was made by a different run: {key}={a.get(key)!r}"
                               f" there, {b.get(key)!r} in this run; remove it or rerun with its "
                               "settings")


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_cpu(v) for v in obj]
    return obj
