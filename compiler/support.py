"""The few helpers that generated modules import. Only torch: no SymPy at run time."""
from __future__ import annotations

import math

import torch


def per_config(value, cfg: torch.Tensor) -> torch.Tensor:
    """A per-configuration result as shape (batch,): squeezes kept site dimensions, broadcasts
    constants (an action or observable that does not depend on the fields, or only on
    coordinates)."""
    batch = cfg.shape[0]
    if isinstance(value, torch.Tensor):
        if value.dim() > 1:
            value = value.reshape(value.shape[0], -1)[:, 0]
        return value.expand(batch)
    return torch.full((batch,), value, dtype=result_dtype(value, cfg), device=cfg.device)


def wrap(a):
    """The representative of an angle in [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def coordinate(cfg: torch.Tensor, axis: int) -> torch.Tensor:
    """pos(x, axis) at every site: 0 .. N_axis - 1 along the axis, shaped to broadcast against a
    field cfg[:, f] (batch, *lattice)."""
    extent = cfg.shape[2 + axis]
    shape = [1] * (cfg.dim() - 1)
    shape[1 + axis] = extent
    dtype = cfg.real.dtype if cfg.is_complex() else cfg.dtype
    return torch.arange(extent, dtype=dtype, device=cfg.device).reshape(shape)


def fill(value, like: torch.Tensor) -> torch.Tensor:
    """A lattice-shaped result: broadcasts per-configuration factors and constants to `like`."""
    if isinstance(value, torch.Tensor) and value.shape == like.shape:
        return value
    return torch.zeros(like.shape, dtype=result_dtype(value, like), device=like.device) + value


def result_dtype(value, like: torch.Tensor) -> torch.dtype:
    if isinstance(value, torch.Tensor):
        return torch.promote_types(value.dtype, like.dtype)
    if isinstance(value, complex) and not like.is_complex():
        return torch.complex128 if like.dtype == torch.float64 else torch.complex64
    return like.dtype


def real(v):
    return v.real if isinstance(v, torch.Tensor) and v.is_complex() else v


def imag(v):
    if isinstance(v, torch.Tensor):
        return v.imag if v.is_complex() else torch.zeros_like(v)
    return complex(v).imag


def conj(v):
    return v.conj() if isinstance(v, torch.Tensor) else complex(v).conjugate()


class Tabulated:
    """f(t) and Xi(t) of a schedule tabulated at import time, for drifts SymPy cannot integrate:
    cumulative trapezoid on a fine float64 grid, then linear interpolation (error ~ 1e-8)."""

    def __init__(self, k, g, points: int = 20001):
        t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
        K = cumulative_trapezoid(k(t) + torch.zeros_like(t), t)          # int_0^t k
        integrand = (g(t) + torch.zeros_like(t)) ** 2 * torch.exp(K)      # g(s)^2 / f(s)^2
        self.t, self.f_table = t, torch.exp(-K / 2)
        self.xi_table = torch.exp(-K) * cumulative_trapezoid(integrand, t)

    def f(self, t):
        return interpolate(t, self.t, self.f_table)

    def xi(self, t):
        return interpolate(t, self.t, self.xi_table)


def cumulative_trapezoid(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    steps = (y[1:] + y[:-1]) / 2 * (x[1:] - x[:-1])
    return torch.cat([torch.zeros(1, dtype=y.dtype), torch.cumsum(steps, 0)])


def interpolate(t, grid: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t)
    tt = t.to(torch.float64).clamp(0.0, 1.0)
    pos = tt * (len(grid) - 1)
    i = pos.floor().long().clamp(max=len(grid) - 2)
    w = pos - i
    table = table.to(tt.device)
    out = table[i] * (1 - w) + table[i + 1] * w
    return out.to(t.dtype) if t.is_floating_point() else out
