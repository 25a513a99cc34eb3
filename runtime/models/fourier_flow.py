"""Fourier flows: a flow whose first layer is the exact map of the action's free part.

After S. Chen, O. Savchuk, S. Zheng, B. Chen, H. Stoecker, L. Wang, K. Zhou, PRD 107, 056001
(2023), who generate Feynman paths of quantum mechanics on a periodic time lattice this way.

For S = 1/2 sum_xy phi(x) H(y - x) phi(y) + interactions, the compiler gives the stencil H per
field (the compiled theory's `quadratic_stencil`, the same one Fourier-accelerated HMC uses; its
momentum kernel K(p) = sum_d H(d) cos(p . d) is chains/fourier.py's `fourier_mass`). The layers:

1. `FreeField` (exact, no parameters): white noise z -> phi = F^-1 [K(p)^(-1/2) F z], F the
   unitary FFT over the sites. phi is then distributed exactly as exp(-S_2)/Z_2, with
   log|det dphi/dz| = -1/2 sum_p log K(p). For a free theory this layer alone is exact: every
   log weight -S - log q equals log Z, so ESS and independent-Metropolis acceptance are 1.
2. `ModeScale` (learned, momentum space): phi -> F^-1 [exp(s(p)) F phi], s(p) = s(-p) so that
   phi stays real; it moves the Gaussian's width mode by mode (log det = sum_p s(p)).
3. The coupling layers of the RealNVP flow (flow.py, learned, position space), which carry the
   non-Gaussian part (x^4) that is local in time.

Every learned layer starts as the identity, so the untrained flow is the free-field sampler, and
reverse-KL training (variational.py, the one trainer) only has to learn the interaction. K(p)
is stored as a buffer: a model file rebuilds the flow without the theory.

A theory whose K(p) is not positive everywhere (a broken phase, K(0) < 0) gets fourier_mass's
default lift K(p) + m^2; the first layer is then a Gaussian approximation, not exact.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..chains.fourier import fourier_mass
from ..errors import SamplerError
from .flow import Flow, build_flow

Tensor = torch.Tensor


def _site_dims(ndim: int) -> tuple[int, ...]:
    """The lattice axes of a (batch, n_fields, *lattice) tensor."""
    return tuple(range(2, ndim))


def _filter(x: Tensor, factor: Tensor) -> Tensor:
    """F^-1 [factor(p) F x]: real when factor(p) = factor(-p), as the kernels here are."""
    dims = _site_dims(x.dim())
    return torch.fft.ifftn(factor * torch.fft.fftn(x, dim=dims), dim=dims).real


def _reflected(v: Tensor) -> Tensor:
    """v(-p) for v of shape (n_fields, *lattice): index k -> -k mod L on every axis."""
    dims = tuple(range(1, v.dim()))
    return torch.roll(torch.flip(v, dims), shifts=(1,) * len(dims), dims=dims)


class FreeField(nn.Module):
    """White noise -> the free field of curvature K(p) (shape (n_fields, *lattice)), exactly."""

    def __init__(self, curvature: Tensor):
        super().__init__()
        self.register_buffer("curvature", curvature)

    def _log_det(self, x: Tensor) -> Tensor:
        """log|det dphi/dz| = -1/2 sum_p log K(p), the same for every sample."""
        return (-0.5 * self.curvature.log().sum()).expand(x.shape[0])

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return _filter(z, self.curvature.rsqrt()), self._log_det(z)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _filter(x, self.curvature.sqrt()), -self._log_det(x)


class ModeScale(nn.Module):
    """phi -> F^-1 [exp(s(p)) F phi] with s symmetric under p -> -p (zero: the identity)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def _s(self) -> Tensor:
        return 0.5 * (self.log_scale + _reflected(self.log_scale))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self._s()
        return _filter(x, s.exp()), s.sum().expand(x.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self._s()
        return _filter(x, (-s).exp()), (-s.sum()).expand(x.shape[0])


class FourierFlow(Flow):
    """FreeField, ModeScale, then coupling layers (see the module docstring)."""

    def _dev(self):
        return self.layers[0].curvature


def curvature_of(theory) -> Tensor:
    """K_f(p) per field from the compiled quadratic part (positive; lifted where it is not)."""
    stencil = getattr(theory, "quadratic_stencil", None)
    if stencil is None or not theory.lattice or set(theory.field_kinds) != {"real"}:
        raise SamplerError(
            f"theory '{theory.name}' has no quadratic, translation-invariant part for a Fourier "
            "flow's first layer (it needs real site fields on a lattice and a local action); "
            "train the default flow (--flow realnvp)")
    try:
        return fourier_mass(theory, mass2=0.0)     # the free part itself: the first layer is exact
    except SamplerError:                           # K(p) <= 0 somewhere: the default lift
        return fourier_mass(theory)


def build_fourier_flow(shape: tuple[int, ...], curvature: Tensor, *, n_layers: int = 16,
                       hidden: int = 16, depth: int = 2, kernel: int = 3,
                       scale_bound: float = 1.0, device=None, dtype=None) -> FourierFlow:
    """The Fourier flow for configurations of shape (n_fields, *lattice) and curvature K(p);
    n_layers .. scale_bound are those of the coupling layers (flow.build_flow)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or tuple(curvature.shape) != shape:
        raise ValueError(f"a Fourier flow needs a lattice and K(p) of shape {shape}, "
                         f"not {tuple(curvature.shape)}")
    dtype = dtype or torch.get_default_dtype()
    couplings = list(build_flow(shape, n_layers=n_layers, hidden=hidden, depth=depth,
                                kernel=kernel, scale_bound=scale_bound, dtype=dtype).layers)
    settings = dict(arch="fourier", shape=list(shape), n_layers=n_layers, hidden=hidden,
                    depth=depth, kernel=kernel, scale_bound=scale_bound)
    layers = [FreeField(curvature.to(dtype)), ModeScale(shape), *couplings]
    return FourierFlow(layers, shape, settings).to(device=device, dtype=dtype)


def fourier_flow(theory, *, n_layers=16, hidden=16, depth=2, kernel=3, scale_bound=1.0,
                 device=None, dtype=None) -> FourierFlow:
    """The untrained Fourier flow of a theory (refused in one line without a quadratic part)."""
    return build_fourier_flow(tuple(theory.shape), curvature_of(theory), n_layers=n_layers,
                              hidden=hidden, depth=depth, kernel=kernel, scale_bound=scale_bound,
                              device=device, dtype=dtype)


def fourier_flow_from_settings(settings: dict, device=None, dtype=None) -> FourierFlow:
    """Rebuild an (untrained) Fourier flow from a model file's settings; K(p) is a placeholder
    until the file's state dict (which holds it) is loaded."""
    shape = tuple(settings["shape"])
    keys = ("n_layers", "hidden", "depth", "kernel", "scale_bound")
    return build_fourier_flow(shape, torch.ones(shape), **{k: settings[k] for k in keys},
                              device=device, dtype=dtype)


def free_log_z(curvature: Tensor) -> float:
    """log Z of the free part, log of the integral of exp(-S_2): V/2 log 2 pi - 1/2 sum log K."""
    log_det = float(curvature.double().log().sum())
    return 0.5 * curvature.numel() * math.log(2 * math.pi) - 0.5 * log_det
