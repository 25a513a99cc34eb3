"""Ensembles: what samplers return, and the HDF5 files they are written to (format in README)."""
from __future__ import annotations

from dataclasses import dataclass, field

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
