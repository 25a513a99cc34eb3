"""The Gamma method: mean, error and integrated autocorrelation time of a Monte Carlo series.

U. Wolff, "Monte Carlo errors with less errors", Comput.Phys.Commun. 156 (2004) 143
(hep-lat/0306017): the autocorrelation function summed up to an automatically chosen window
(parameter S = 1.5), several replicas (chains) combined, bias-corrected Gamma(t). Written by hand
(~100 lines) rather than depending on pyerrors and its dependency tree. This is the one
autocorrelation estimator of theoryc: `measure`, the figures and the flow/VAN summaries use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_S = 1.5


@dataclass(frozen=True)
class GammaResult:
    mean: float
    error: float
    tau_int: float
    tau_int_error: float
    window: int
    n: int


def replicas(data) -> list[np.ndarray]:
    """(n,), (chains, n) or a list of series of any lengths -> a list of float64 series."""
    if isinstance(data, np.ndarray) and data.ndim == 2:
        reps = list(data)
    elif isinstance(data, np.ndarray) and data.ndim == 1:
        reps = [data]
    else:
        reps = [np.asarray(r) for r in data]
    if any(np.iscomplexobj(r) for r in reps):
        raise TypeError("gamma_method takes real series: split complex data into re and im")
    reps = [np.asarray(r, dtype=np.float64).ravel() for r in reps if np.size(r) > 0]
    if not reps:
        raise ValueError("no data")
    return reps


def autocorrelation(replicas: Sequence[np.ndarray], mean: float, w_max: int) -> np.ndarray:
    """Gamma(t), t = 0..w_max, summed over replicas, each with its own t-range (Wolff eq. 31)."""
    num = np.zeros(w_max + 1)
    den = np.zeros(w_max + 1)
    for r in replicas:
        d = r - mean
        size = len(d)
        f = np.fft.rfft(d, 2 * size)
        acf = np.fft.irfft(np.abs(f) ** 2, 2 * size)[: min(size, w_max + 1)]
        num[: len(acf)] += acf
        den[: len(acf)] += size - np.arange(len(acf))
    return num / np.where(den > 0, den, 1)


def normalised_autocorrelation(data, max_lag: int) -> np.ndarray:
    """Gamma(t) / Gamma(0), t = 0..max_lag, of the data as `gamma_method` sees it (for figures)."""
    reps = replicas(data)
    mean = float(sum(r.sum() for r in reps) / sum(len(r) for r in reps))
    gamma = autocorrelation(reps, mean, max_lag)
    return gamma / gamma[0] if gamma[0] > 0 else np.zeros_like(gamma)


def gamma_method(data, S: float = DEFAULT_S) -> GammaResult:
    """Mean, error and integrated autocorrelation time of a real series.

    `data`: (n,), (chains, n) or a list of replicas of any lengths. The window W is the first
    where g(W) = exp(-W/tau) - tau/sqrt(W N) < 0, tau = S / log((2 tau_int + 1)/(2 tau_int - 1))
    (Wolff eq. 52); tau_int's error is Wolff's eq. 42.
    """
    reps = replicas(data)
    n = sum(len(r) for r in reps)
    mean = float(sum(r.sum() for r in reps) / n)
    w_max = max(1, min(len(r) for r in reps) // 2)
    gamma = autocorrelation(reps, mean, w_max)
    if not gamma[0] > 0:
        return GammaResult(mean, 0.0, 0.5, 0.0, 0, n)
    window = _window(gamma, n, S)
    c_w = gamma[0] + 2 * gamma[1:window + 1].sum()
    gamma = gamma + c_w / n      # bias correction of Gamma(t) (Wolff eq. 49)
    c_w = gamma[0] + 2 * gamma[1:window + 1].sum()
    if c_w <= 0:                 # noise-dominated: fall back to the naive error
        c_w = gamma[0]
    tau = c_w / (2 * gamma[0])
    tau_err = tau * math.sqrt(max(0.0, 4 * (window + 0.5 - tau) / n))
    return GammaResult(mean, math.sqrt(c_w / n), float(tau), float(tau_err), int(window), n)


def _window(gamma: np.ndarray, n: int, S: float) -> int:
    w_max = len(gamma) - 1
    partial = 0.5 + np.cumsum(gamma[1:]) / gamma[0]      # tau_int(W), W = 1..w_max
    for w in range(1, w_max + 1):
        t = partial[w - 1]
        tau = S / math.log((2 * t + 1) / (2 * t - 1)) if t > 0.5 else 1e-300
        if math.exp(-w / tau) - tau / math.sqrt(w * n) < 0:
            return w
    return w_max
