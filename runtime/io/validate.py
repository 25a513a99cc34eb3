"""Format checks of the files theoryc reads, before anything in them is used.

Every reader calls one of these first; a file that is not what it claims to be (a foreign HDF5
file, attributes of the wrong type, datasets of the wrong rank or dtype, a pickled object where
tensors belong) is refused with one line naming the file and what is wrong, never a traceback
from deep inside h5py, numpy or torch.
"""
from __future__ import annotations

import json
import pickle

import h5py
import numpy as np

from ..errors import SamplerError

MAX_SOURCE_CHARS = 1_000_000      # api.MAX_FILE_BYTES: a stored theory source is a short text
MAX_ATTR_CHARS = 10_000_000
JSON_DICT_ATTRS = ("params", "settings", "summary", "timing")
KINDS = ("markov", "independent")


class FormatError(SamplerError, ValueError):
    """A file that is not what it claims to be (one line: the file and what is wrong)."""


def bad(path, what: str) -> FormatError:
    return FormatError(f"{path}: {what}")


# ---------------------------------------------------------------------------------- ensembles
def validate_ensemble(path) -> None:
    """Refuse a file that is not an ensemble file theoryc wrote, naming what is wrong."""
    if not h5py.is_hdf5(path):
        hint = (" (a run's checkpoint: measure it with 'theoryc measure --partial')"
                if str(path).endswith(".ckpt") else "")
        raise bad(path, f"not an ensemble file (not HDF5){hint}")
    try:
        with h5py.File(path, "r") as f:
            check_datasets(path, f)
            check_attrs(path, f.attrs)
    except OSError as err:
        raise bad(path, f"the HDF5 file does not read ({err}); is it complete?") from None


def check_datasets(path, f: h5py.File) -> None:
    series = {}
    for group in ("observables", "stats"):
        if group in f:
            if not isinstance(f[group], h5py.Group):
                raise bad(path, f"'{group}' is not a group of datasets")
            for name, d in f[group].items():
                series[f"{group}/{name}"] = d
    if "log_weights" in f:
        series["log_weights"] = f["log_weights"]
    if not series and "configs" not in f:
        raise bad(path, "holds no configurations, observables or statistics: not an ensemble "
                        "file theoryc wrote")
    first = None
    for name, d in series.items():
        numeric(path, name, d)
        top = 3 if name.startswith("observables/") else 2
        if d.ndim < 2 or d.ndim > top:
            expect = "(chains, n) or (chains, n, N)" if top == 3 else "(chains, n)"
            raise bad(path, f"dataset '{name}' has shape {d.shape}; expected {expect}")
        if name == "log_weights" and np.iscomplexobj(np.empty(0, d.dtype)):
            raise bad(path, "log_weights are complex; they must be real")
        first = first or (name, d.shape[:2])
        if d.shape[:2] != first[1]:
            raise bad(path, f"dataset '{name}' has (chains, n) = {d.shape[:2]}, "
                            f"'{first[0]}' has {first[1]}")
    if "configs" in f:
        d = f["configs"]
        numeric(path, "configs", d)
        if d.ndim < 3 or (first and d.shape[0] != first[1][0]):
            raise bad(path, f"dataset 'configs' has shape {d.shape}; expected (chains, n, "
                            "fields, *lattice) with the chains of the observables")


def numeric(path, name: str, d) -> None:
    if not isinstance(d, h5py.Dataset):
        raise bad(path, f"'{name}' is not a dataset")
    if d.dtype.kind not in "biufc":
        raise bad(path, f"dataset '{name}' holds {d.dtype}, not numbers")


def check_attrs(path, attrs) -> None:
    for key in attrs:
        value = attrs[key]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str) and len(value) > MAX_ATTR_CHARS:
            raise bad(path, f"attribute '{key}' is {len(value)} characters long")
        if key in JSON_DICT_ATTRS:
            json_dict(path, key, value)
    params = json_dict(path, "params", attrs.get("params", "{}"))
    for name, v in params.items():
        if not scalar(v):
            raise bad(path, f"parameter {name!r} is {json.dumps(v)[:60]}; a parameter is a number "
                            "or [re, im]")
    source = attrs.get("theory_source", "")
    if not isinstance(source, (str, bytes)):
        raise bad(path, "attribute 'theory_source' is not text")
    if len(source) > MAX_SOURCE_CHARS:
        raise bad(path, f"the stored theory source is {len(source)} characters; a theory is a "
                        "short text")
    for key in ("theory_name", "sampler"):
        if key in attrs and not isinstance(attrs[key], (str, bytes)):
            raise bad(path, f"attribute '{key}' is not text")
    every = attrs.get("save_every", 1)
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise bad(path, f"attribute 'save_every' is {every!r}; it must be a whole number >= 1")
    kind = attrs.get("kind", "markov")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind not in KINDS:
        raise bad(path, f"attribute 'kind' is {kind!r}; one of {', '.join(KINDS)}")


def json_dict(path, key: str, value) -> dict:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise bad(path, f"attribute '{key}' is not JSON text")
    try:
        out = json.loads(value)
    except (ValueError, RecursionError):
        raise bad(path, f"attribute '{key}' is not valid JSON") from None
    if not isinstance(out, dict):
        raise bad(path, f"attribute '{key}' is a {type(out).__name__}; it must be a JSON object")
    return out


def scalar(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return (isinstance(v, list) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


# ------------------------------------------------------------------ torch files (weights only)
def load_plain(path, what: str):
    """torch.load(weights_only=True) of a checkpoint or model file; a file that holds pickled
    objects (anything but tensors and plain values) is refused and never unpickled."""
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):     # torch refused a pickled object (a class, a function)
            raise bad(path, f"holds code-like content (pickled Python objects) and was not "
                            f"loaded; a {what} theoryc wrote holds only tensors and numbers"
                      ) from None
        raise bad(path, f"not a {what} theoryc wrote (it does not load as tensors and "
                        "numbers; is it complete?)") from None
    except Exception:          # zip or pickle damage: the loader raises many types
        raise bad(path, f"not a {what} theoryc wrote (it does not load as tensors and "
                        "numbers; is it complete?)") from None


def require(path, payload, keys: dict, what: str) -> None:
    """Each key of `keys` present with a value of its type(s)."""
    if not isinstance(payload, dict):
        raise bad(path, f"not a {what} theoryc wrote (it holds a {type(payload).__name__})")
    for key, types in keys.items():
        if key not in payload:
            raise bad(path, f"a damaged {what}: no '{key}' in it")
        if not isinstance(payload[key], types):
            raise bad(path, f"a damaged {what}: '{key}' is a {type(payload[key]).__name__}")
