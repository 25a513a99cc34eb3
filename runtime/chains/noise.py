"""Gaussian noise and the Langevin-time defaults shared by real and complex Langevin."""
from __future__ import annotations

import torch

from ..parallel.streams import randn

DEFAULT_STEP = 0.01      # the Langevin step eps
DEFAULT_EVERY = 20       # steps between kept configurations
DEFAULT_WARMUP = 1000    # warm-up steps


def gaussian_noise(shape, dtype: torch.dtype, device, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise. On the cpu float64 noise is drawn in float32 and cast: torch's float64
    normal sampler is ~6x slower there, and the float32 rounding of a Gaussian variate (1e-7
    relative) is far below any statistical error (MALA stays exact: it uses the actual move)."""
    device = torch.device(device)
    if dtype == torch.float64 and device.type == "cpu":
        return randn(shape, generator=generator, device=device,
                           dtype=torch.float32).to(torch.float64)
    return randn(shape, generator=generator, device=device, dtype=dtype)
