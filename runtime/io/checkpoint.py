"""Atomic checkpoints shared by every long-running sampler (HMC, Langevin, ...).

A checkpoint is a plain dict of tensors and primitives (int, float, str, bool, None, lists, dicts)
written with `torch.save` and read back with `torch.load(weights_only=True)`: nothing in a checkpoint
file is ever unpickled as arbitrary Python. Writes go to a temporary file in the same folder that
is then renamed over the target, so a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

CHECKPOINT_FORMAT = 1


def atomic_replace(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)` on a temporary file next to `path`, then rename it onto `path`.

    The temporary file lives in the same folder so that `os.replace` is an atomic rename on one
    filesystem; on any exception it is removed and the exception propagates (no partial file).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:   # the data must be on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically write `state` (tensors moved to the cpu) to `path`."""
    payload = {"checkpoint_format": CHECKPOINT_FORMAT, **_to_cpu(state)}
    atomic_replace(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors on the cpu, weights_only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    fmt = state.pop("checkpoint_format", None)
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a theoryc checkpoint (format {fmt!r})")
    return state


def load_run_checkpoint(path: str | os.PathLike, sampler: str, settings: dict) -> dict | None:
    """The checkpoint of an interrupted run to resume, or None when there is none. A checkpoint
    made by another sampler or with other settings is refused: resuming it would silently mix
    two different runs."""
    if not os.path.exists(path):
        return None
    snap = load_checkpoint(path)
    if snap.get("sampler") != sampler or snap.get("settings") != settings:
        from .errors import SamplerError
        raise SamplerError(f"checkpoint {path} was made by a different run "
                           f"({snap.get('settings')}); remove it or rerun with its settings")
    return snap


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_cpu(v) for v in obj]
    return obj
