"""Measure a theory's observables on stored configurations, in batches."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def measure_observables(theory, configs, batch_size: int = 4096, device=None
                        ) -> dict[str, np.ndarray]:
    """Evaluate `theory.observables` on configs (chains, n, *shape) -> {name: (chains, n)}.

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
    return {name: np.concatenate(p).reshape(chains, n) for name, p in parts.items() if p}


def estimate_input_series(theory, observables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-configuration series whose averages feed the estimates: {name: (chains, n)}.

    `theory.estimate_inputs` maps observable tensors to e.g. `<M^2>` -> M**2, elementwise.
    """
    if not observables:
        return {}
    shape = np.shape(next(iter(observables.values())))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in observables.items()}
    with torch.no_grad():
        out = theory.estimate_inputs(tensors)
    return {k: _to_numpy(v, int(np.prod(shape))).reshape(shape) for k, v in out.items()}


def _to_numpy(value, batch: int) -> np.ndarray:
    value = torch.as_tensor(value).detach().to("cpu")
    if value.dim() == 0:
        value = value.expand(batch)
    a = value.reshape(batch).numpy()
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)
