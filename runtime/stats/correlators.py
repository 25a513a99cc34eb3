"""Effective mass of a correlator and its plateau, with Gamma-method errors (what `theoryc plot`
draws for a vector observable C(t)).

m_eff(t) = log(<C(t)> / <C(t+1)>) from consecutive components (no wrap-around). The plateau is
chosen by a rule stated once here (PLATEAU_RULE) and fitted by a constant with inverse-variance
weights; the constant is a function of the <C(t)>, so its error comes from the same linearised
Gamma method as every estimate and includes the correlations between the t.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .estimates import DerivedResult, derived

PLATEAU_RULE = ("t in the first half (t + 1 < N/2: where a periodic correlator turns back is "
                "left out) with m_eff(t) > 0 and a relative error under MAX_RELATIVE_ERROR; the "
                "first run of such t in which each m_eff agrees with the next within AGREEMENT "
                "times the error of their difference (propagated from the <C(t)>, correlations "
                "included): it starts where excited states have decayed below "
                "the noise and ends where the noise, or the turn of a periodic correlator, takes "
                "over")
AGREEMENT = 2.0
MAX_RELATIVE_ERROR = 0.1


@dataclass(frozen=True)
class Plateau:
    t_min: int
    t_max: int                 # inclusive
    mass: DerivedResult        # the fitted constant


def effective_mass(correlator: np.ndarray, log_weights: np.ndarray | None = None
                   ) -> list[DerivedResult]:
    """m_eff(t), t = 0 .. N-2, of a real (chains, n, N) correlator, each with its error."""
    return [derived(lambda m: torch.log(m[0] / m[1]), [correlator[..., t], correlator[..., t + 1]],
                    log_weights) for t in range(correlator.shape[-1] - 1)]


def plateau(correlator: np.ndarray, log_weights: np.ndarray | None = None,
            masses: list[DerivedResult] | None = None) -> Plateau | None:
    """The plateau of m_eff by PLATEAU_RULE and its fitted constant, or None when there is no
    run of at least two t that qualifies."""
    masses = masses if masses is not None else effective_mass(correlator, log_weights)
    n = correlator.shape[-1]
    good = [t + 1 < n / 2 and np.isfinite(m.mean) and m.mean > 0 and np.isfinite(m.error)
            and m.error < MAX_RELATIVE_ERROR * m.mean for t, m in enumerate(masses)]

    def agree(t):
        if not (good[t] and good[t + 1]):
            return False
        step = derived(lambda m: torch.log(m[0] * m[2] / m[1] ** 2),
                       [correlator[..., t + k] for k in range(3)], log_weights)
        return abs(step.mean) <= AGREEMENT * step.error
    for t_min in range(len(masses) - 1):
        if agree(t_min):
            t_max = t_min + 1
            while t_max + 1 < len(masses) and agree(t_max):
                t_max += 1
            return Plateau(t_min, t_max, fit_constant(correlator, t_min, t_max, masses,
                                                      log_weights))
    return None


def fit_constant(correlator: np.ndarray, t_min: int, t_max: int, masses: list[DerivedResult],
                 log_weights: np.ndarray | None = None) -> DerivedResult:
    """sum_t w_t m_eff(t) over t_min..t_max, w_t proportional to 1/err_t^2 (fixed weights), as a
    function of <C(t_min)> .. <C(t_max + 1)>: its error includes the correlations between t."""
    w = np.array([1.0 / masses[t].error ** 2 for t in range(t_min, t_max + 1)])
    w = w / w.sum()

    def fn(m):
        return sum(float(wk) * torch.log(m[k] / m[k + 1]) for k, wk in enumerate(w))
    return derived(fn, [correlator[..., t] for t in range(t_min, t_max + 2)], log_weights)
