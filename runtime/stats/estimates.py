"""Functions of means with their errors by the linearised Gamma method (error propagation).

The gradient of f at the means comes from torch autograd, so any `Estimate` of a compiled theory
works unchanged. Complex primaries are split into real and imaginary parts; a complex result's
error is [err_re, err_im]. Log-weights (reweighting) turn each mean into a ratio <w a>/<w>.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .gamma import DEFAULT_S, gamma_method
from .reweighting import weights


@dataclass(frozen=True)
class DerivedResult:
    mean: float | complex
    error: float | list[float]      # [err_re, err_im] for a complex result
    tau_int: float                  # of the projected series (the larger of re/im)


def derived(fn: Callable[[Sequence[torch.Tensor]], torch.Tensor], primaries: Sequence[np.ndarray],
            log_weights: np.ndarray | None = None, S: float = DEFAULT_S) -> DerivedResult:
    """f(<a_1>, ..., <a_k>) and its error by the linearised Gamma method.

    Each primary is a (chains, n) series (real or complex); `fn` takes the sequence of means as
    torch scalars (complex where the primary is) and must be differentiable. The fluctuations
    are projected on the autograd gradient of f at the means and the projected series is
    Gamma-analysed. With `log_weights` every mean is the reweighted <w a>/<w>.
    """
    return derived_from(*linearised(fn, primaries, log_weights), S)


def derived_from(value: float | complex, projected: Sequence[np.ndarray],
                 S: float = DEFAULT_S) -> DerivedResult:
    """`derived` of an estimate already linearised (`linearised`)."""
    results = [gamma_method(p, S) for p in projected]
    if isinstance(value, complex):
        return DerivedResult(value, [r.error for r in results], max(r.tau_int for r in results))
    return DerivedResult(value, results[0].error, results[0].tau_int)


def linearised(fn: Callable[[Sequence[torch.Tensor]], torch.Tensor], primaries: Sequence[np.ndarray],
               log_weights: np.ndarray | None = None) -> tuple[float | complex, list[np.ndarray]]:
    """f at the means and its projected series sum_a (df/d<a>) a, one (chains, n) series per
    real component of f (re and im for a complex f): what `derived`
    Gamma-analyses, and what the covariance of several estimates is made of."""
    primaries = [np.asarray(a) for a in primaries]
    if log_weights is not None:
        w = weights(log_weights)
        inner = fn

        def fn(m):
            return inner([mi / m[-1] for mi in m[:-1]])
        primaries = [w * a for a in primaries] + [w]
    columns, leaves, inputs = [], [], []
    for a in primaries:
        parts = [a.real, a.imag] if np.iscomplexobj(a) else [a]
        new = [torch.tensor(float(np.mean(p)), dtype=torch.float64, requires_grad=True)
               for p in parts]
        columns += [np.asarray(p, dtype=np.float64) for p in parts]
        leaves += new
        inputs.append(torch.complex(*new) if len(new) == 2 else new[0])
    value = torch.as_tensor(fn(inputs))
    components = [value.real, value.imag] if value.is_complex() else [value]
    projected = [_project(c, leaves, columns) for c in components]
    mean = complex(value.detach()) if value.is_complex() else float(value.detach())
    return mean, projected


def _project(component: torch.Tensor, leaves, columns) -> np.ndarray:
    if not component.requires_grad:   # f does not depend on the data: no fluctuation
        return np.zeros_like(columns[0])
    grads = torch.autograd.grad(component, leaves, retain_graph=True, allow_unused=True)
    series = sum(float(g) * col for g, col in zip(grads, columns) if g is not None)
    if isinstance(series, int):       # f does not depend on the data at all
        series = np.zeros_like(columns[0])
    return series


def covariance(projected: Sequence[np.ndarray], errors: Sequence[float]) -> np.ndarray:
    """The covariance matrix of several real estimates from their projected series (`linearised`)
    and their Gamma-method errors: the correlation matrix of the series at equal times, rescaled
    by the errors, cov_ij = rho_ij err_i err_j (as pyerrors' `covariance` does). Its diagonal is
    exactly err_i^2, and it is positive semi-definite whatever the windows of the single
    components (a matrix of windowed cross-autocorrelations need not be)."""
    rows = np.stack([np.asarray(p, dtype=np.float64).ravel() for p in projected])
    rows = rows - rows.mean(axis=1, keepdims=True)
    gram = rows @ rows.T
    norm = np.sqrt(np.diag(gram))
    safe = np.where(norm > 0, norm, 1.0)
    rho = gram / np.outer(safe, safe)
    rho[norm == 0, :] = 0.0
    rho[:, norm == 0] = 0.0
    np.fill_diagonal(rho, 1.0)
    err = np.asarray(errors, dtype=np.float64)
    return rho * np.outer(err, err)


def observable_stats(series: np.ndarray, log_weights: np.ndarray | None = None,
                     S: float = DEFAULT_S) -> DerivedResult:
    """Mean, error and tau_int of one observable (complex: error [re, im]).

    This is the tau_int `theoryc measure` prints and the ensemble figures show.
    """
    return derived(lambda m: m[0], [series], log_weights, S)
