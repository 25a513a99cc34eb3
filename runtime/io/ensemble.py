"""Ensembles: what samplers return, and the HDF5 files they stream to (format in README, "Files").

A Markov-chain run streams: `EnsembleFile` creates OUT.tmp next to the output with every dataset
at its final size, chunked and allocated up front (no fill is written: the file is sparse until
filled), and the driver writes block after block into it. Writing a block then changes only raw
data, never HDF5 metadata, so a process killed at any moment leaves a file whose first `count`
configurations (the count its checkpoint records) are intact; a resumed run simply overwrites
what follows. `finish` writes the attributes and renames OUT.tmp onto OUT (io/atomic.py).
Memory is one block, whatever the run's length.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from .atomic import publish
from .validate import validate_ensemble
from .attrs import decode_attr, decode_params, to_jsonable, write_attrs  # noqa: F401 (re-exported)
from .provenance import as_text, fingerprint

CHUNK_BYTES = 1 << 20     # about 1 MB per chunk: fast appends and fast reads of one chain


@dataclass
class SamplerRun:
    """The output of any sampler.

    configs: (chains, n, *theory.shape) on the cpu; None when the run was streamed to a file
    (`path`). Generative samplers use chains = 1.
    stats: per-configuration sampler statistics, name -> (chains, n).
    observables: name -> (chains, n), or (chains, n, N) for a vector observable C(t), when the
    sampler measured them (chain samplers with an `observe` function), else None.
    summary: the sampler's own figures (acceptance, ess, log_z, ...), JSON-able; deterministic.
    settings: how it was run (step size, integrator, ...), JSON-able.
    timing: wall-clock figures (seconds per step, ...): the only part that differs between two
    identical runs, kept apart so that files can be compared.
    log_weights: optional (chains, n) log reweighting factors.
    """
    configs: torch.Tensor | None
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    log_weights: np.ndarray | None = None
    kind: str = "markov"   # or "independent"
    observables: dict[str, np.ndarray] | None = None
    timing: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def chains_and_n(self) -> tuple[int, int]:
        for series in (*self.stats.values(), *(self.observables or {}).values()):
            return tuple(np.shape(series)[:2])
        return tuple(self.configs.shape[:2])


@dataclass
class Ensemble:
    """An ensemble file read back: arrays as numpy, JSON attributes decoded.

    configs: (chains, n / save_every, *shape) or None when read with `configs=False`;
    observables / stats: name -> (chains, n) ((chains, n, N) for a vector observable); log_weights: (chains, n) or None;
    attrs: every file attribute, with params/settings/summary/timing as dicts (complex as [re, im]).
    """
    configs: np.ndarray | None
    observables: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    log_weights: np.ndarray | None
    attrs: dict

    @property
    def kind(self) -> str:
        return self.attrs.get("kind", "markov")

    @property
    def summary(self) -> dict:
        return self.attrs.get("summary", {})

    @property
    def settings(self) -> dict:
        return self.attrs.get("settings", {})

    @property
    def params(self) -> dict:
        return self.attrs.get("params", {})

    @property
    def save_every(self) -> int:
        """Configuration k * save_every - 1 of each chain is stored as configs[:, k]."""
        return int(self.attrs.get("save_every", 1))


def theory_attrs(theory) -> dict:
    """The file attributes that say which theory an ensemble samples: its name, source text and
    parameters, and its fingerprint (io/provenance.py), which files are checked by."""
    return {"theory_name": theory.name, "theory_source": getattr(theory, "source", "") or "",
            "params": dict(theory.params), "provenance": as_text(fingerprint(theory))}


def read_ensemble(path, configs: bool = True, observables: bool = True) -> Ensemble:
    """Read an ensemble file (skip the configurations with configs=False, the observables with
    observables=False). A file sampled with --no-configs has none: asking for them is a
    one-line error; so is a file that is not an ensemble theoryc wrote (io/validate.py)."""
    validate_ensemble(path)
    with h5py.File(path, "r") as f:
        if configs and "configs" not in f:
            raise ValueError(f"{path} holds no configurations (it was sampled with --no-configs)")
        cfg = f["configs"][()] if configs else None
        obs = ({k: v[()] for k, v in f.get("observables", {}).items()} if observables else {})
        stats = {k: v[()] for k, v in f.get("stats", {}).items()}
        log_w = f["log_weights"][()] if "log_weights" in f else None
        attrs = {k: decode_attr(k, v) for k, v in f.attrs.items()}
    return Ensemble(cfg, obs, stats, log_w, attrs)


def write_ensemble(path, run: SamplerRun, observables: dict[str, np.ndarray],
                   attrs: dict | None = None) -> None:
    """Write an in-memory `run` and its measured `observables` to an HDF5 file, atomically.

    `attrs` supplies theory_name, theory_source, params, sampler, seed (anything else is stored
    too); settings, summary, timing and kind default to the run's; theoryc_version and created are
    filled in. The file appears complete or not at all: a failure leaves no partial file (and
    leaves an existing file at `path` untouched).
    """
    chains, n = run.configs.shape[:2]
    series = {f"observables/{k}": _series(v, chains, n, f"observable {k!r}")
              for k, v in observables.items()}
    series.update({f"stats/{k}": _series(v, chains, n, f"stat {k!r}") for k, v in run.stats.items()})
    if run.log_weights is not None:
        series["log_weights"] = _series(run.log_weights, chains, n, "log_weights")
    configs = run.configs.detach().cpu().numpy()
    out = EnsembleFile(path, temporary=_scratch_name(path))
    try:
        out.create(chains, n, series_specs(series), (n, configs.shape[2:], configs.dtype))
        out.write(0, configs, series)
        out.finish(file_attrs(run, attrs or {}))
    except BaseException:
        out.discard()
        raise


def file_attrs(run: SamplerRun, attrs: dict) -> dict:
    from theoryc import __version__

    out = {"theoryc_version": __version__, "theory_name": "", "theory_source": "", "params": {},
           "sampler": run.settings.get("sampler", ""), "settings": run.settings,
           "seed": run.settings.get("seed", -1), "kind": run.kind, "summary": run.summary,
           "timing": run.timing,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out.update({k: v for k, v in attrs.items() if v is not None})
    return out


def _series(values, chains: int, n: int, what: str) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.shape[:2] != (chains, n) or a.ndim > 3:
        raise ValueError(f"{what} has shape {a.shape}, expected (chains, n) = {(chains, n)} "
                         "or (chains, n, components)")
    return series_array(a)


def series_array(a) -> np.ndarray:
    """Per-configuration series are stored as float64 or complex128."""
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def series_specs(series: dict[str, np.ndarray]) -> dict[str, tuple[np.dtype, tuple]]:
    """What `EnsembleFile.create` needs of a first block of each series (chains, b, ...): its
    dtype and the shape of one entry (() for a scalar series, (N,) for a vector observable)."""
    return {k: (v.dtype, tuple(v.shape[2:])) for k, v in series.items()}


def _scratch_name(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def streaming_name(path) -> Path:
    """Where a streamed run keeps its data until it is complete: OUT.tmp beside OUT."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


# --------------------------------------------------------------------------- streamed files

class EnsembleFile:
    """An ensemble being written: datasets of their final shape in `temporary`, renamed onto
    `path` by `finish`.

    Datasets are named by their place in the file ("configs", "observables/M", "stats/dH",
    "log_weights"); every one has shape (chains, length, ...) and is written along axis 1.
    """

    def __init__(self, path, temporary=None):
        self.path = Path(path)
        self.temporary = Path(temporary) if temporary is not None else streaming_name(path)
        self.file: h5py.File | None = None

    def create(self, chains: int, n: int, series: dict[str, np.dtype | tuple[np.dtype, tuple]],
               configs: tuple[int, tuple, np.dtype] | None) -> None:
        """A fresh temporary file (an old one is replaced) with `series` datasets by name: a dtype
        gives (chains, n), (dtype, entry shape) from `series_specs` gives (chains, n, *shape);
        and unless `configs` is None a "configs" dataset of
        (chains, n_stored, *shape) with (n_stored, shape, dtype) = configs."""
        self.file = h5py.File(self.temporary, "w")
        if configs is not None:
            n_stored, shape, dtype = configs
            _allocate(self.file, "configs", (chains, n_stored, *shape), dtype)
        for name, spec in series.items():
            dtype, entry = spec if isinstance(spec, tuple) else (spec, ())
            _allocate(self.file, name, (chains, n, *entry), dtype)
        self.file.flush()

    def reopen(self) -> bool:
        """Open an existing temporary file to continue it; False if there is none or it does not
        read (a kill while it was being created or finished: the run starts over)."""
        if not self.temporary.exists():
            return False
        try:
            self.file = h5py.File(self.temporary, "r+")
            return True
        except OSError:
            self.temporary.unlink()
            return False

    @property
    def names(self) -> list[str]:
        out = []
        self.file.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset)
                             else None)
        return out

    def write(self, start: int, configs: np.ndarray | None, series: dict[str, np.ndarray],
              configs_start: int | None = None) -> None:
        """Write a block: configs (chains, b', ...) at `configs_start` and each series (chains, b,
        ...) at `start` along axis 1. Raw data only: HDF5 metadata is not touched."""
        if configs is not None and configs.shape[1]:
            at = start if configs_start is None else configs_start
            self.file["configs"][:, at:at + configs.shape[1]] = configs
        for name, values in series.items():
            self.file[name][:, start:start + values.shape[1]] = values

    def flush(self) -> None:
        """Push what was written to the OS (so that a checkpoint written next never runs ahead
        of the data it counts)."""
        self.file.flush()

    def read(self, name: str) -> np.ndarray:
        return self.file[name][()]

    def keep(self, good_chains: np.ndarray, lengths: dict[str, int]) -> None:
        """Cut the datasets down to the good chains and to `lengths[name]` along axis 1 (a run
        that stopped early or dropped chains); chains are moved down in place, block by block."""
        good = np.flatnonzero(good_chains)
        for name in self.names:
            d = self.file[name]
            length = lengths.get(name, d.shape[1])
            if len(good) < d.shape[0]:
                step = max(1, CHUNK_BYTES // max(1, d.dtype.itemsize * int(np.prod(d.shape[2:]))))
                for new, old in enumerate(good):
                    if new != old:
                        for s in range(0, length, step):
                            d[new, s:min(s + step, length)] = d[old, s:min(s + step, length)]
            d.resize((len(good), length, *d.shape[2:]))

    def finish(self, attrs: dict) -> None:
        """Write the file attributes, close, and rename the temporary file onto the output."""
        write_attrs(self.file, attrs)
        self.file.close()
        self.file = None
        publish(self.temporary, self.path)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def discard(self) -> None:
        self.close()
        self.temporary.unlink(missing_ok=True)


def _allocate(f: h5py.File, name: str, shape: tuple, dtype) -> None:
    """A chunked dataset of its final `shape`, every chunk allocated now and never filled: later
    writes only change raw data. One chunk is one chain's next ~1 MB along axis 1."""
    dtype = np.dtype(dtype)
    per_row = dtype.itemsize * int(np.prod(shape[2:], dtype=np.int64))
    rows = int(max(1, min(shape[1], CHUNK_BYTES // max(1, per_row))))
    chunks = (1, rows, *shape[2:]) if shape[0] and shape[1] else None
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    if chunks is None:        # an empty dataset cannot be chunked (nothing to stream into)
        f.create_dataset(name, shape=shape, dtype=dtype, track_times=False)
        return
    # no modification times in the object headers: writing data then never touches metadata
    f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, maxshape=shape, dcpl=dcpl,
                     track_times=False)
