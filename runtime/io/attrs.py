"""JSON-able file attributes: what HDF5 attributes and model/checkpoint metadata can hold.

Numbers, strings and containers only: complex numbers become [re, im], numpy and torch scalars
become Python numbers, dicts/lists are stored as JSON text. Nothing read back is ever evaluated.
"""
from __future__ import annotations

import json

import numpy as np
import torch

# attributes that are always JSON text (dicts), even when empty
JSON_ATTRS = ("params", "settings", "summary", "timing")


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


def decode_params(params: dict) -> dict:
    """Params read from a file back to numbers: [re, im] -> complex (params are scalars)."""
    return {k: complex(v[0], v[1]) if isinstance(v, list) and len(v) == 2 else v
            for k, v in params.items()}


def write_attrs(target, attrs: dict) -> None:
    """Store `attrs` on an HDF5 object (None is skipped: absent means unknown)."""
    for key, value in attrs.items():
        if value is None:
            continue
        if key in JSON_ATTRS or isinstance(value, (dict, list, tuple)):
            target.attrs[key] = json.dumps(to_jsonable(value))
        else:
            target.attrs[key] = to_jsonable(value)


def decode_attr(key: str, value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if key in JSON_ATTRS and isinstance(value, str):
        return json.loads(value)
    return value
