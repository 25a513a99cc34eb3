"""Cumulants of a Monte Carlo series with blocked-jackknife errors (the one cumulant routine).

kappa_n from the raw moments about zero through the standard recursion
kappa_n = mu_n - sum_{m=1}^{n-1} C(n-1, m-1) kappa_m mu_{n-m} (the full cumulants; for a zero-mean
variable the m = 1 terms vanish and this is the seed's formula). Errors come from a delete-one-block
jackknife (cumulants are nonlinear in the moments) over blocks much longer than the
autocorrelation time, so Markov data get honest errors too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .gamma import DEFAULT_S, gamma_method
from .reweighting import weights


@dataclass(frozen=True)
class CumulantTable:
    """kappa_1..kappa_N (index n - 1 holds kappa_n) and their jackknife errors.

    For complex data `error` is complex: err_re + 1j err_im, the errors of the real and the
    imaginary part separately.
    """
    mean: np.ndarray
    error: np.ndarray
    blocks: int


def cumulants_from_moments(mu: Sequence, zero_mean: bool = False) -> list:
    """kappa_0..kappa_N from raw moments mu_0 = 1, mu_1..mu_N (numbers, arrays or tensors).

    kappa_n = mu_n - sum_{m=1}^{n-1} C(n-1, m-1) kappa_m mu_{n-m}. With zero_mean=True mu_1 is
    taken as exactly 0 (the seed's formula for a variable that is symmetric by construction).
    """
    mu = list(mu)
    if zero_mean:
        mu[1] = 0 * mu[1]
    kappa = [0 * mu[0], mu[1]]
    for n in range(2, len(mu)):
        kappa.append(mu[n] - sum(math.comb(n - 1, m - 1) * kappa[m] * mu[n - m]
                                 for m in range(1, n)))
    return kappa


def block_length(series: np.ndarray, S: float = DEFAULT_S, factor: float = 10.0) -> int:
    """A jackknife block length of ~`factor` x tau_int of x and x^2 (re and im parts)."""
    parts = [series.real, series.imag] if np.iscomplexobj(series) else [series]
    tau = max(gamma_method(p ** k, S).tau_int for p in parts for k in (1, 2))
    return max(1, math.ceil(factor * tau))


def cumulant_table(series, order: int = 4, log_weights: np.ndarray | None = None,
                   block_size: int | None = None, min_blocks: int = 50, zero_mean: bool = False,
                   S: float = DEFAULT_S) -> CumulantTable:
    """kappa_1..kappa_order of a (chains, n) or (n,) series (real or complex), with errors.

    Blocks lie inside each chain and are `block_size` long (default: 10 tau_int, shortened if
    needed to keep at least `min_blocks` blocks in all); the last < block points of each chain
    are dropped. The mean is the full-sample estimate of the kept points. `log_weights`
    reweight every moment.
    """
    x = np.atleast_2d(np.asarray(series))
    x = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64, copy=False)
    w = None if log_weights is None else np.atleast_2d(weights(log_weights))
    b = block_size or block_length(x, S)
    b = max(1, min(b, x.size // min_blocks))
    sums = _block_sums(x, w, b, order)                      # (order + 1, blocks)
    total = sums.sum(axis=1, keepdims=True)
    full = cumulants_from_moments(list(total[:, 0] / total[0, 0]), zero_mean)
    loo = total - sums                                      # leave-one-block-out sums
    jack = cumulants_from_moments(list(loo / loo[0]), zero_mean)
    k = sums.shape[1]
    errors = []
    for n in range(1, order + 1):
        dev = jack[n] - jack[n].mean()
        err = math.sqrt((k - 1) / k * np.sum(dev.real ** 2))
        if np.iscomplexobj(x):
            err = complex(err, math.sqrt((k - 1) / k * np.sum(dev.imag ** 2)))
        errors.append(err)
    return CumulantTable(np.array(full[1:]), np.array(errors), k)


def cumulants(series, order: int = 4, log_weights: np.ndarray | None = None,
              block_size: int | None = None, min_blocks: int = 50, zero_mean: bool = False,
              S: float = DEFAULT_S) -> dict[str, dict]:
    """{"kappa2": {"mean", "error"}, ..., "kappaN": ...}: `cumulant_table` as a summary entry.

    Complex means are complex, their errors [re, im].
    """
    table = cumulant_table(series, order, log_weights, block_size, min_blocks, zero_mean, S)
    out = {}
    for n in range(2, order + 1):
        mean, err = table.mean[n - 1], table.error[n - 1]
        if np.iscomplexobj(table.mean):
            out[f"kappa{n}"] = {"mean": complex(mean), "error": [float(err.real), float(err.imag)]}
        else:
            out[f"kappa{n}"] = {"mean": float(np.real(mean)), "error": float(err)}
    return out


def _block_sums(x: np.ndarray, w: np.ndarray | None, b: int, order: int) -> np.ndarray:
    """Per-block sums of w x^k, k = 0..order; the last < b points of each chain are dropped."""
    per_chain = []
    for c in range(x.shape[0]):
        nb = x.shape[1] // b
        if nb == 0:
            continue
        xc = x[c, :nb * b].reshape(nb, b)
        wc = np.ones_like(xc, dtype=np.float64) if w is None else w[c, :nb * b].reshape(nb, b)
        powers = xc[None] ** np.arange(order + 1).reshape(-1, 1, 1)
        per_chain.append((wc[None] * powers).sum(axis=2))
    if not per_chain or sum(p.shape[1] for p in per_chain) < 2:
        raise ValueError("too few data for a jackknife (fewer than two blocks)")
    return np.concatenate(per_chain, axis=1)
