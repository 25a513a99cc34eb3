"""Which theory a file belongs to: one fingerprint, recorded by every file theoryc writes for a
theory (ensembles, run and training checkpoints, model files) and compared wherever a file meets
a theory again (`--resume`, `--model`, `--data`).

A fingerprint is plain JSON: the theory's name, a sha256 of its source text, its parameters after
`--set` (complex values as [re, im]), its configuration shape (fields, *lattice) and the kinds of
its fields. `mismatch` names the first thing that differs in words a user can act on.
"""
from __future__ import annotations

import hashlib
import json
import math

from .attrs import to_jsonable


def fingerprint(theory) -> dict:
    """The fingerprint of a loaded theory (anything with name, source, params, shape)."""
    source = str(getattr(theory, "source", "") or "")
    return {"theory_name": str(getattr(theory, "name", "") or ""),
            "source_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
            "params": to_jsonable(dict(getattr(theory, "params", {}) or {})),
            "shape": [int(s) for s in getattr(theory, "shape", ())],
            "field_kinds": [str(k) for k in getattr(theory, "field_kinds", ())]}


def as_text(print_: dict) -> str:
    return json.dumps(print_, sort_keys=True)


def from_text(text) -> dict | None:
    """A fingerprint read back from a file attribute (None when absent or not one)."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def lattice_text(shape) -> str:
    """(fields, *lattice) -> '8 x 8' (the lattice part; '0-d' for none)."""
    return " x ".join(str(s) for s in list(shape)[1:]) or "0-d"


def shape_mismatch(saved: dict, current: dict) -> tuple | None:
    """(what differs in fields or lattice, as 'lattice 8 x 8; this theory is 16 x 16', a --set
    hint or None), or None."""
    a, b = list(saved.get("shape") or []), list(current.get("shape") or [])
    if a and b and a[1:] != b[1:]:
        return (f"lattice {lattice_text(a)}; this theory is {lattice_text(b)}",
                set_hint(saved, current, "L"))
    if a and b and a[0] != b[0]:
        return f"{a[0]} field component(s); this theory has {b[0]}", None
    ka, kb = saved.get("field_kinds"), current.get("field_kinds")
    if ka and kb and list(ka) != list(kb):
        return f"fields of kind {', '.join(ka)}; this theory's are {', '.join(kb)}", None
    return None


def set_hint(saved: dict, current: dict, fallback: str) -> str:
    """'--set L=8' for the lattice parameters that differ, if the fingerprint shows them."""
    pa, pb = saved.get("params") or {}, current.get("params") or {}
    names = [k for k in pb if k in pa and pa[k] != pb[k] and k in ("L", "T", "Lx", "Ly", "Lt", "N")]
    return " ".join(f"--set {k}={format_param(pa[k])}" for k in names) or None


def params_mismatch(saved: dict, current: dict) -> list[str]:
    """The parameters whose values differ, as 'kappa=0.2 there, 0.3 here'."""
    pa, pb = saved.get("params") or {}, current.get("params") or {}
    out = []
    for k in sorted(set(pa) | set(pb)):
        if not same_value(pa.get(k), pb.get(k)):
            out.append(f"{k}={format_param(pa.get(k))} there, {format_param(pb.get(k))} here")
    return out


def same_value(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def format_param(v) -> str:
    if isinstance(v, list) and len(v) == 2:
        return f"{v[0]:g}{v[1]:+g}i"
    if isinstance(v, float):
        return f"{v:g}"
    return "(unset)" if v is None else str(v)


def mismatch(saved: dict | None, current: dict, *, allow_params: bool = False) -> tuple | None:
    """(kind, message, hint or None) of the first difference between two fingerprints, or None when they agree:
    kind 'theory' (another name or source), 'shape' (lattice, fields) or 'params' (only
    parameter values; None when `allow_params`). A file that records no fingerprint (written
    before there was one) is compared by name only."""
    if not saved:
        return None
    if saved.get("theory_name") and saved["theory_name"] != current["theory_name"]:
        return "theory", (f"theory '{saved['theory_name']}'; this theory is "
                          f"'{current['theory_name']}'"), None
    shape = shape_mismatch(saved, current)
    if shape:
        return ("shape", *shape)
    if saved.get("source_sha256") and saved["source_sha256"] != current["source_sha256"]:
        return ("theory", f"another version of theory '{current['theory_name']}' (its source "
                "text differs)", None)
    differs = params_mismatch(saved, current)
    if differs and not allow_params:
        return "params", "other parameters: " + "; ".join(differs), None
    return None


def refuse_mismatch(path, made: str, saved: dict | None, current: dict, advice: str, *,
                    allow_params: bool = False) -> None:
    """One line, raised as a SamplerError, when the file at `path` (`made`: 'was trained for',
    'was sampled for', ...) belongs to another theory than `current`: `model.pt was trained for
    lattice 8 x 8; this theory is 16 x 16 (use --set L=8, or retrain)`."""
    from ..errors import SamplerError
    found = mismatch(saved, current, allow_params=allow_params)
    if found is None:
        return
    _, message, hint = found
    todo = f"use {hint}, or {advice}" if hint else advice
    raise SamplerError(f"{path} {made} {message} ({todo})")


def from_recorded(name, source, params, shape) -> dict:
    """A fingerprint rebuilt from what a file records of its theory (name, source text,
    parameters, shape) when it holds no fingerprint of its own."""
    return {"theory_name": str(name or ""),
            "source_sha256": (hashlib.sha256(source.encode("utf-8")).hexdigest()
                              if isinstance(source, str) and source else ""),
            "params": to_jsonable(dict(params or {})),
            "shape": [int(s) for s in (shape or ())]}


def model_fingerprint(meta: dict) -> dict:
    """The fingerprint of the theory a model was trained for, from its `.meta` (or what a model
    file records): the one recorded, or for a file written before it was, one rebuilt from the
    name, source, parameters and shape it holds."""
    recorded = from_text(meta.get("provenance"))
    rebuilt = from_recorded(meta.get("theory_name"), meta.get("theory_source"), meta.get("params"),
                            meta.get("shape"))
    return {**rebuilt, **(recorded or {})}


def ensemble_fingerprint(ens) -> dict:
    """The fingerprint an ensemble records; its configurations' shape where they were read."""
    recorded = from_text(ens.attrs.get("provenance"))
    shape = None if ens.configs is None else ens.configs.shape[2:]
    rebuilt = from_recorded(ens.attrs.get("theory_name"), ens.attrs.get("theory_source"),
                            ens.params, shape)
    return {**rebuilt, **(recorded or {}), **({"shape": rebuilt["shape"]} if shape is not None else {})}
