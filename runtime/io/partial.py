"""What an interrupted Markov-chain run has so far (`theoryc measure --partial OUT`).

A streamed run keeps its data in OUT.tmp and its checkpoint in OUT.ckpt (io/ensemble.py,
chains/driver.py): the checkpoint counts the configurations whose data are complete and records
the file's attributes. The partial ensemble is that prefix of every series, labelled partial; it
is never written anywhere, so nothing can mistake it for a finished file.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py

from ..errors import SamplerError
from .checkpoint import RUN_KEYS, load_checkpoint
from .ensemble import Ensemble, streaming_name
from .validate import check_datasets, require


def partial_ensemble(path) -> Ensemble:
    """The first `written` configurations' observables and stats of the run behind `path` (the
    run's output OUT, or OUT.ckpt)."""
    path = str(path)
    out = path[:-len(".ckpt")] if path.endswith(".ckpt") else path
    checkpoint, stream = Path(f"{out}.ckpt"), streaming_name(out)
    if not checkpoint.exists():
        done = " (the run finished: measure it without --partial)" if Path(out).exists() else ""
        raise SamplerError(f"{checkpoint}: no such checkpoint; --partial measures an "
                           f"interrupted run{done}")
    snap = load_checkpoint(checkpoint)
    if snap.get("kind") == "training":
        raise SamplerError(f"{checkpoint} is a training checkpoint: there is no ensemble to "
                           "measure (continue the training with 'theoryc train ... --resume')")
    require(checkpoint, snap, RUN_KEYS, "sampler checkpoint")
    written = int(snap["written"])
    if written == 0:
        raise SamplerError(f"{checkpoint}: the run was interrupted during its warm-up; it has "
                           "no configurations yet (continue it with --resume)")
    if not stream.exists():
        raise SamplerError(f"{checkpoint}: its data file {stream} is missing (an in-memory run "
                           "checkpoints no data); nothing to measure")
    try:
        attrs = json.loads(snap.get("attrs", "{}"))
    except ValueError:
        raise SamplerError(f"{checkpoint}: a damaged checkpoint (attributes not JSON)") from None
    return read_prefix(stream, written, attrs, snap)


def read_prefix(stream: Path, written: int, attrs: dict, snap: dict) -> Ensemble:
    try:
        with h5py.File(stream, "r") as f:
            check_datasets(stream, f)
            obs = {k: v[:, :written] for k, v in f.get("observables", {}).items()}
            stats = {k: v[:, :written] for k, v in f.get("stats", {}).items()}
            lw = f["log_weights"][:, :written] if "log_weights" in f else None
    except OSError as err:
        raise SamplerError(f"{stream}: does not read ({err})") from None
    settings = snap.get("settings") or {}
    total = settings.get("n", "?")
    attrs = {**attrs, "kind": "markov", "partial": True,
             "partial_note": f"{written} of {total} configurations per chain",
             "settings": settings, "summary": {"status": f"partial: {written} of {total}"},
             "timing": {"seconds": float(snap.get("seconds", 0.0))}}
    if isinstance(attrs.get("params"), str):
        attrs["params"] = json.loads(attrs["params"])
    return Ensemble(None, obs, stats, lw, attrs)
