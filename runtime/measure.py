"""Measure a theory's observables on configurations, in batches; summarise an ensemble
(`theoryc measure`); re-measure stored configurations with another theory (`measure --theory`,
`theoryc observe`)."""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
from dataclasses import dataclass
from typing import Mapping

import h5py
import numpy as np
import torch

from theoryc.runtime.errors import SamplerError
from theoryc.runtime.io.ensemble import EnsembleFile, read_ensemble, series_specs, theory_attrs
from theoryc.runtime.stats.summary import (add_costs, binned_ensemble, declaration_order,
                                           discarded, format_summary, only, run_header,
                                           run_warnings, seconds_per_configuration,
                                           summarize)


def measure_observables(theory, configs, batch_size: int = 4096, device=None
                        ) -> dict[str, np.ndarray]:
    """Evaluate `theory.observables` on configs (chains, n, *shape) -> {name: (chains, n)}, or
    (chains, n, N) for a vector observable C(t) (the theory returns it as (batch, N)).

    Real observables come back as float64, complex ones (complex configurations, or a complex
    expression) as complex128. `device` defaults to the configs' own; batches bound the memory.
    """
    configs = torch.as_tensor(configs)
    chains, n = configs.shape[:2]
    flat = configs.reshape(chains * n, *configs.shape[2:])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in theory.observable_names}
    with torch.no_grad():
        for start in range(0, flat.shape[0], batch_size):
            batch = flat[start:start + batch_size]
            if device is not None:
                batch = batch.to(device)
            for name, value in theory.observables(batch).items():
                parts.setdefault(name, []).append(_to_numpy(value, batch.shape[0]))
    return {name: np.concatenate(p).reshape(chains, n, *p[0].shape[1:])
            for name, p in parts.items() if p}


def estimate_input_series(theory, observables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-configuration series whose averages feed the estimates: {name: (chains, n)}.

    `theory.estimate_inputs` maps observable tensors ((batch,) or, for a vector observable,
    (batch, N)) to e.g. `<M^2>` -> M**2 or `<C(3)>` -> C[:, 3], configuration by configuration.
    """
    if not observables:
        return {}
    missing = [k for k in getattr(theory, "observable_names", ()) if k not in observables]
    if missing and getattr(theory, "estimates", None):
        raise SamplerError(f"the ensemble stores no observable {', '.join(map(repr, missing))} of "
                           f"theory '{theory.name}', which its estimates may need; re-measure it "
                           f"with 'theoryc measure FILE --theory THEORY'")
    chains, n = np.shape(next(iter(observables.values())))[:2]
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v).reshape(chains * n, *v.shape[2:]))
               for k, v in observables.items()}
    with torch.no_grad():
        out = theory.estimate_inputs(tensors)
    return {k: _to_numpy(v, chains * n).reshape(chains, n) for k, v in out.items()}


def _to_numpy(value, batch: int) -> np.ndarray:
    """(batch,) or, for a vector observable, (batch, N); a constant is broadcast to (batch,)."""
    value = torch.as_tensor(value).detach().to("cpu")
    if value.dim() == 0:
        value = value.expand(batch)
    a = value.reshape(batch, *value.shape[1:]).numpy()
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


# --------------------------------------------------------------------------- re-measurement
# Stan's "standalone generated quantities": another theory's observables on stored
# configurations. The configurations are read block by block (BLOCK_BYTES at a time), so memory
# stays bounded whatever the ensemble's length.

BLOCK_BYTES = 64 << 20


@dataclass
class Measurement:
    """What `theoryc measure` computes, for a notebook: the observables as (chains, n) arrays,
    the summary dict the CLI prints as JSON, the sampler's settings and the theory measured."""
    observables: dict[str, np.ndarray]
    summary: dict
    settings: dict
    theory_name: str
    log_weights: np.ndarray | None = None

    def table(self) -> str:
        """The summary as the text table `theoryc measure` prints."""
        return format_summary(self.summary)


def measure_ensemble(ensemble, theory=None, cumulants=None, *, discard: int = 0,
                     bin_size: int = 1, of=None) -> Measurement:
    """Summarise an ensemble read without its configurations (`read_ensemble(configs=False)`):
    its stored observables (in the theory's declaration order), the estimates of `theory` (the
    theory it records, or None) and, if asked, cumulants up to that order (of the observables
    in `of`, default all). A theory's vector observables and estimates (its
    `observable_indices`, `estimate_vectors`) are summarised as vectors.

    discard: drop each chain's first N configurations (thermalisation); bin_size: average K
    consecutive configurations before the error analysis (means, errors and estimates; the
    cumulants are of the unbinned values, binning would change them). The summary also carries
    "run" (theory, parameters, chains, configurations, sampler) and "warnings"."""
    per_config = seconds_per_configuration(ensemble)
    ensemble = discarded(declaration_order(ensemble, theory), discard)
    inputs = (estimate_input_series(theory, ensemble.observables)
              if theory is not None and theory.estimates else None)
    binned, inputs = binned_ensemble(ensemble, inputs, bin_size)
    summary = {"run": run_header(ensemble, theory, discard, bin_size),
               **summarize(binned, theory.estimates if theory is not None else None, inputs,
                           None, observable_indices=getattr(theory, "observable_indices", None),
                           estimate_vectors=getattr(theory, "estimate_vectors", None))}
    if cumulants:
        summary["cumulants"] = summarize(only(ensemble, of, cumulants), cumulants=cumulants
                                         )["cumulants"]
    add_costs(summary, per_config, bin_size)
    summary["warnings"] = run_warnings(ensemble)
    name = theory.name if theory is not None else ensemble.attrs.get("theory_name", "")
    return Measurement(dict(ensemble.observables), summary, dict(ensemble.settings), name,
                       ensemble.log_weights)


def remeasure(path, ensemble, theory, recorded=None, cumulants=None,
              batch_size: int = 4096, **cuts) -> Measurement:
    """`measure_ensemble` with the observables and estimates of another `theory`, evaluated on
    the configurations stored in `path` (`ensemble` is that file read with configs=False;
    `recorded` its own theory, compiled, when the file records one)."""
    observables = observe_stored(path, theory, recorded, batch_size)
    lw = ensemble.log_weights
    if lw is not None:
        lw = stored_series(lw, ensemble.save_every, next(iter(observables.values())).shape[1])
    other = dataclasses.replace(ensemble, observables=observables, log_weights=lw)
    return measure_ensemble(other, theory, cumulants, **cuts)


def check_compatible(path, theory, recorded, config_shape) -> None:
    """Refuse, in one line naming what differs, a theory whose fields or lattice are not those
    of the stored configurations (shape (*fields, *lattice) per configuration)."""
    ours = f"theory '{theory.name}'"
    if recorded is not None:
        for what in ("field_names", "field_kinds"):
            a, b = getattr(recorded, what), getattr(theory, what)
            if tuple(a) != tuple(b):
                raise SamplerError(f"{path} and {ours} differ: {what.replace('_', ' ')} "
                                   f"{', '.join(a)} in the ensemble, {', '.join(b)} in the theory")
    lattice = tuple(config_shape[1:])
    if lattice != tuple(theory.lattice):
        raise SamplerError(f"{path} and {ours} differ: lattice {_lattice(lattice)} in the "
                           f"ensemble, {_lattice(theory.lattice)} in the theory")
    if config_shape[0] != theory.n_fields:
        raise SamplerError(f"{path} and {ours} differ: {config_shape[0]} field(s) in the "
                           f"ensemble, {theory.n_fields} in the theory")


def _lattice(shape) -> str:
    return " x ".join(map(str, shape)) or "0-d"


def stored_series(series: np.ndarray, save_every: int, n_stored: int) -> np.ndarray:
    """The entries of a (chains, n) series that belong to the stored configurations
    (configuration k * save_every - 1 of each chain is stored)."""
    return series[:, save_every - 1::save_every][:, :n_stored]


def observe_stored(path, theory, recorded=None, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """{name: (chains, n_stored)} of `theory`'s observables on the configurations in `path`."""
    parts: dict[str, list[np.ndarray]] = {}
    for _, block in stored_config_blocks(path, theory, recorded):
        for name, values in measure_observables(theory, block, batch_size).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(p, axis=1) for name, p in parts.items()}


def stored_config_blocks(path, theory, recorded=None):
    """(start, configs[:, start:start + b]) over the configurations in `path`, about
    BLOCK_BYTES at a time, after `check_compatible`."""
    with h5py.File(path, "r") as f:
        data = stored_configs(f, path)
        check_compatible(path, theory, recorded, data.shape[2:])
        chains, n = data.shape[:2]
        per = max(1, data.dtype.itemsize * math.prod(data.shape[2:]) * chains)
        step = max(1, BLOCK_BYTES // per)
        for start in range(0, n, step):
            yield start, data[:, start:start + step]


def stored_configs(f: h5py.File, path) -> h5py.Dataset:
    """The configurations dataset of an open ensemble file; a file sampled with --no-configs has
    none, which is a one-line error."""
    if "configs" not in f:
        raise SamplerError(f"{path} holds no configurations (it was sampled with "
                           "--no-configs): there is nothing to re-measure")
    return f["configs"]


def write_observed(path, output, theory, recorded=None, batch_size: int = 4096) -> tuple[int, int]:
    """`theoryc observe`: a new ensemble at `output` with the configurations, stats and log
    weights of `path` (those of the stored configurations) and `theory`'s observables, attributes
    and source; streamed block by block into OUTPUT.tmp and renamed onto OUTPUT when complete.
    Returns (chains, n)."""
    src = read_ensemble(path, configs=False, observables=False)   # replaced: never read
    with h5py.File(path, "r") as f:
        chains, n = stored_configs(f, path).shape[:2]
    kept = {f"stats/{k}": stored_series(v, src.save_every, n) for k, v in src.stats.items()}
    if src.log_weights is not None:
        kept["log_weights"] = stored_series(src.log_weights, src.save_every, n)
    out = EnsembleFile(output)
    try:
        for start, block in stored_config_blocks(path, theory, recorded):
            series = {f"observables/{k}": v
                      for k, v in measure_observables(theory, block, batch_size).items()}
            stop = start + block.shape[1]
            series.update({k: v[:, start:stop] for k, v in kept.items()})
            if start == 0:
                out.create(chains, n, series_specs(series), (n, block.shape[2:], block.dtype))
            out.write(start, block, series)
        out.finish(observed_attrs(src.attrs, theory, path))
    except BaseException:
        out.discard()
        raise
    return chains, n


def observed_attrs(attrs: dict, theory, path) -> dict:
    """The source's attributes with the new theory's name, source and parameters."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**attrs, **theory_attrs(theory), "save_every": 1,
            "observed_from": os.path.basename(os.fspath(path)), "created": created}
