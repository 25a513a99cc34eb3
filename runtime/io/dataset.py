"""External data sets for conditional diffusion: arrays read from any HDF5 file.

An HDF5 file holds named datasets, each with the events along its first axis. `--x NAME` names
the arrays to learn, (N, *shape) with shape the theory's configuration shape (a single field may
leave out its channel axis); each `--condition NAME` names what they are conditioned on, read as
- scalars: (N,) or (N, k) with k scalars per event (labels, e.g. a mass or eta/s), or
- arrays: (N, *lattice) or (N, c, *lattice) on the theory's lattice, one or c channels.
Only the datasets' numbers are read (h5py): nothing in a data file is run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SamplerError


@dataclass(frozen=True)
class ConditionSpec:
    """One condition: its dataset name, 'scalar' or 'array', and how many scalars or channels."""
    name: str
    kind: str
    width: int

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "width": self.width}


def read_dataset(path, name: str) -> np.ndarray:
    """The numbers of dataset `name` of the HDF5 file `path` (float64), or a one-line error."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise SamplerError(f"no such data file: {path}") from None
    except OSError:
        raise SamplerError(f"{path} is not an HDF5 file (conditional diffusion reads arrays from "
                           "HDF5 datasets)") from None
    with f:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            names = []
            f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
            raise SamplerError(f"{path} has no dataset '{name}'; it has: "
                               f"{', '.join(names) or 'none'}")
        values = f[name][()]
    if not np.issubdtype(np.asarray(values).dtype, np.number):
        raise SamplerError(f"dataset '{name}' of {path} does not hold numbers")
    return np.asarray(values, dtype=np.float64)


def as_configurations(values: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """(N, *shape) from (N, *shape), or (N, *shape[1:]) for a single field."""
    if tuple(values.shape[1:]) == tuple(shape):
        return values
    if shape[0] == 1 and tuple(values.shape[1:]) == tuple(shape[1:]):
        return values[:, None]
    raise SamplerError(f"{where} holds arrays of shape {tuple(values.shape[1:])}; the theory's "
                       f"configurations are {tuple(shape)}")


def condition_spec(name: str, values: np.ndarray, lattice: tuple[int, ...]) -> ConditionSpec:
    """Whether a condition's per-event values are scalars or arrays on the lattice."""
    rest = tuple(values.shape[1:])
    if lattice and rest[-len(lattice):] == tuple(lattice) and len(rest) in (len(lattice),
                                                                          len(lattice) + 1):
        return ConditionSpec(name, "array", 1 if len(rest) == len(lattice) else rest[0])
    if len(rest) <= 1:
        return ConditionSpec(name, "scalar", rest[0] if rest else 1)
    raise SamplerError(f"condition '{name}' holds arrays of shape {rest}: give scalars (N,) or "
                       f"(N, k), or arrays on the lattice {tuple(lattice)}")


def condition_tensor(spec: ConditionSpec, values: np.ndarray, lattice) -> torch.Tensor:
    """(N, width) for scalars, (N, channels, *lattice) for arrays."""
    t = torch.as_tensor(values)
    if spec.kind == "scalar":
        return t.reshape(t.shape[0], spec.width)
    return t.reshape(t.shape[0], spec.width, *lattice)


def read_training_set(path, x: str, conditions, shape: tuple[int, ...]):
    """(configurations (N, *shape), [condition tensors], [ConditionSpec]) from one HDF5 file;
    every dataset must have the same number of events."""
    configs = as_configurations(read_dataset(path, x), shape, f"dataset '{x}' of {path}")
    lattice = tuple(shape[1:])
    tensors, specs = [], []
    for name in conditions:
        values = read_dataset(path, name)
        if values.shape[0] != configs.shape[0]:
            raise SamplerError(f"condition '{name}' of {path} has {values.shape[0]} events; "
                               f"'{x}' has {configs.shape[0]}")
        spec = condition_spec(name, values, lattice)
        specs.append(spec)
        tensors.append(condition_tensor(spec, values, lattice))
    return torch.as_tensor(configs), tensors, specs
