"""The one model-file format, for flows, VANs and diffusion models alike.

A model file is a `torch.save` dict of tensors, numbers, strings, lists and dicts, read back with
`torch.load(weights_only=True)`: nothing in it is ever run. Its keys:

  kind             'flow', 'van' or 'diffusion' (what rebuilds the network)
  format_version   FORMAT_VERSION when written; a newer file is refused, not misread
  theoryc_version  the package that wrote it (informative only)
  theory_name, theory_source, params (JSON), shape   the theory it was trained for
  provenance       JSON: that theory's fingerprint (runtime/io/provenance.py), which a file is
                   checked by; a file written before it was recorded is checked by one rebuilt
                   from the four above
  settings         JSON: architecture and training settings
  state_dict       the weights (for a diffusion model: the EMA weights)
  history          the training curves (lists of numbers) and totals
  ...              kind-specific tensors (a diffusion model's data statistics, schedule table)
"""
from __future__ import annotations

import json
import os

import torch

from theoryc.runtime.io.atomic import atomic_replace
from theoryc.runtime.io.attrs import decode_params, to_jsonable
from theoryc.runtime.io.provenance import as_text, fingerprint, from_text, model_fingerprint
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.io.validate import load_plain, scalar

FORMAT_VERSION = 1
KINDS = ("flow", "van", "diffusion")
_RESERVED = ("kind", "format_version", "theoryc_version", "theory_name", "theory_source",
             "params", "shape", "provenance", "settings", "state_dict", "history")


def json_params(params) -> str:
    """A theory's parameters as JSON text (a complex value becomes [re, im])."""
    return json.dumps(to_jsonable(dict(params or {})), sort_keys=True)


def theory_record(theory) -> dict:
    """What a model keeps of the theory it is trained for (its `.meta`, then its file): name,
    source text, parameters, shape and the theory's one fingerprint (runtime/io/provenance.py)."""
    return {"theory_name": str(getattr(theory, "name", "") or ""),
            "theory_source": str(getattr(theory, "source", "") or ""),
            "params": dict(getattr(theory, "params", {}) or {}),
            "shape": [int(s) for s in getattr(theory, "shape", ())],
            "provenance": fingerprint(theory)}


def write_model_file(path: str | os.PathLike, *, kind: str, theory: dict, settings: dict,
                     state_dict: dict, history: dict, extra: dict | None = None) -> None:
    """Write a model file atomically. theory: a `theory_record` (or a loaded model's `.meta`,
    which holds the same keys); extra: kind-specific tensors and plain values (their keys must
    not shadow the common ones)."""
    from theoryc import __version__
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    clash = set(extra or {}) & set(_RESERVED)
    if clash:
        raise ValueError(f"model-file extras may not redefine {sorted(clash)}")
    payload = {"kind": kind, "format_version": FORMAT_VERSION, "theoryc_version": __version__,
               "theory_name": str(theory.get("theory_name") or ""),
               "theory_source": str(theory.get("theory_source") or ""),
               "params": json_params(theory.get("params")),
               "shape": [int(s) for s in theory.get("shape") or ()],
               "provenance": as_text(model_fingerprint(theory)),
               "settings": json.dumps(settings, sort_keys=True),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "history": to_jsonable(history or {}), **(extra or {})}
    atomic_replace(path, lambda tmp: torch.save(payload, tmp))


def load_model_file(path: str | os.PathLike) -> tuple[str, dict]:
    """(kind, payload) of a model file; a foreign, corrupt or newer file is a one-line error."""
    payload = load_plain(path, "model file")
    if not isinstance(payload, dict) or payload.get("kind") not in KINDS:
        raise SamplerError(f"{path} is not a model file theoryc wrote (no model kind in it)")
    if not isinstance(payload.get("format_version"), int):
        raise SamplerError(f"{path} was written by an older theoryc, before model files had a "
                           f"format version; train it again")
    if payload["format_version"] > FORMAT_VERSION:
        raise SamplerError(f"{path} was written by a newer theoryc (model format "
                           f"{payload['format_version']}; this one reads up to {FORMAT_VERSION})")
    try:
        payload["settings"] = json.loads(payload["settings"])
        params = json.loads(payload["params"])
        if not isinstance(payload["settings"], dict) or not isinstance(payload["state_dict"], dict):
            raise TypeError("settings and state_dict must be dictionaries")
        if not isinstance(params, dict) or not all(scalar(v) for v in params.values()):
            raise TypeError("params must map names to numbers or [re, im]")
        if not isinstance(payload["shape"], list) or not all(isinstance(s, int) for s in payload["shape"]):
            raise TypeError("shape must be a list of whole numbers")
        if not isinstance(payload["theory_name"], str) or not isinstance(payload["theory_source"], str):
            raise TypeError("theory_name and theory_source must be text")
        if "provenance" in payload and from_text(payload["provenance"]) is None:
            raise TypeError("provenance must be a fingerprint's JSON text")
    except (KeyError, TypeError, ValueError) as err:
        raise SamplerError(f"{path} is a damaged model file ({type(err).__name__}: {err})") from None
    return payload["kind"], payload


def model_meta(payload: dict) -> dict:
    """The theory a loaded model belongs to, with its parameters decoded."""
    return {"theory_name": payload["theory_name"], "theory_source": payload["theory_source"],
            "params": decode_params(json.loads(payload["params"])), "shape": list(payload["shape"]),
            "provenance": from_text(payload.get("provenance")),    # None: an older file
            "theoryc_version": payload.get("theoryc_version")}
