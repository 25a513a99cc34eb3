"""Ensembles: what samplers return, and the HDF5 files they are written to (format in README)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch


@dataclass
class SamplerRun:
    """The output of any sampler, before observables are measured and the file is written.

    configs: (chains, n, *theory.shape) on the cpu; generative samplers use chains = 1.
    stats: per-configuration sampler statistics, name -> (chains, n).
    summary: the sampler's own figures (acceptance, ess, log_z, ...), JSON-able.
    settings: how it was run (step size, integrator, ...), JSON-able.
    log_weights: optional (chains, n) log reweighting factors.
    """
    configs: torch.Tensor
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    log_weights: np.ndarray | None = None
    kind: str = "markov"   # or "independent"


from .errors import SamplerError  # noqa: E402,F401  (re-exported: samplers raise it from here)


# ------------------------------------------------------------------------------- HDF5 files

JSON_ATTRS = ("params", "settings", "summary")


@dataclass
class Ensemble:
    """An ensemble file read back: arrays as numpy, JSON attributes decoded.

    configs: (chains, n, *shape) or None when read with `configs=False`;
    observables / stats: name -> (chains, n); log_weights: (chains, n) or None;
    attrs: every file attribute, with params/settings/summary as dicts (complex as [re, im]).
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


def to_jsonable(obj):
    """Numbers and containers as plain JSON: complex -> [re, im], numpy/torch scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (complex, np.complexfloating)):
        return [float(obj.real), float(obj.imag)]
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def theory_attrs(theory) -> dict:
    """The file attributes that say which theory an ensemble samples (for `write_ensemble`)."""
    return {"theory_name": theory.name, "theory_source": getattr(theory, "source", "") or "",
            "params": dict(theory.params)}


def decode_params(params: dict) -> dict:
    """Params read from a file back to numbers: [re, im] -> complex (params are scalars)."""
    return {k: complex(v[0], v[1]) if isinstance(v, list) and len(v) == 2 else v
            for k, v in params.items()}


def write_ensemble(path, run: SamplerRun, observables: dict[str, np.ndarray],
                   attrs: dict | None = None) -> None:
    """Write `run` and its measured `observables` to an HDF5 file, atomically.

    `attrs` supplies theory_name, theory_source, params, sampler, seed (anything else is stored
    too); settings, summary and kind default to the run's; theoryc_version and created are filled
    in. The file appears complete or not at all: a failure leaves no partial file (and leaves an
    existing file at `path` untouched).
    """
    from .checkpoint import atomic_replace   # local: checkpoint imports nothing from here

    attrs = _file_attrs(run, attrs or {})
    chains, n = run.configs.shape[:2]
    arrays = {k: _series(v, chains, n, f"observable {k!r}") for k, v in observables.items()}
    stats = {k: _series(v, chains, n, f"stat {k!r}") for k, v in run.stats.items()}
    log_w = None if run.log_weights is None else _series(run.log_weights, chains, n, "log_weights")

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            _write_arrays(f, run.configs, arrays, stats, log_w)
            _write_attrs(f, attrs)

    atomic_replace(path, write)


def read_ensemble(path, configs: bool = True) -> Ensemble:
    """Read a file written by `write_ensemble` (skip the configurations with configs=False)."""
    with h5py.File(path, "r") as f:
        cfg = f["configs"][()] if configs else None
        obs = {k: v[()] for k, v in f.get("observables", {}).items()}
        stats = {k: v[()] for k, v in f.get("stats", {}).items()}
        log_w = f["log_weights"][()] if "log_weights" in f else None
        attrs = {k: _decode_attr(k, v) for k, v in f.attrs.items()}
    return Ensemble(cfg, obs, stats, log_w, attrs)


def _file_attrs(run: SamplerRun, attrs: dict) -> dict:
    import datetime
    from theoryc import __version__

    out = {"theoryc_version": __version__, "theory_name": "", "theory_source": "", "params": {},
           "sampler": run.settings.get("sampler", ""), "settings": run.settings,
           "seed": run.settings.get("seed", -1), "kind": run.kind, "summary": run.summary,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out.update({k: v for k, v in attrs.items() if v is not None})
    return out


def _series(values, chains: int, n: int, what: str) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.shape != (chains, n):
        raise ValueError(f"{what} has shape {a.shape}, expected (chains, n) = {(chains, n)}")
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _write_arrays(f, configs, observables, stats, log_weights) -> None:
    cfg = configs.detach().cpu().numpy() if isinstance(configs, torch.Tensor) else configs
    f.create_dataset("configs", data=cfg)
    group = f.create_group("observables")
    for name, a in observables.items():
        group.create_dataset(name, data=a)
    group = f.create_group("stats")
    for name, a in stats.items():
        group.create_dataset(name, data=a)
    if log_weights is not None:
        f.create_dataset("log_weights", data=log_weights)


def _write_attrs(f, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is None:          # HDF5 attributes cannot hold None: absent means unknown
            continue
        if key in JSON_ATTRS:
            f.attrs[key] = json.dumps(to_jsonable(value))
        elif isinstance(value, (dict, list, tuple)):
            f.attrs[key] = json.dumps(to_jsonable(value))
        else:
            f.attrs[key] = to_jsonable(value)


def _decode_attr(key: str, value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if key in JSON_ATTRS and isinstance(value, str):
        return json.loads(value)
    return value
