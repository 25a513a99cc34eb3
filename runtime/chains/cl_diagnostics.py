"""Is this complex Langevin run trustworthy? Pure functions on arrays (numpy), no sampling.

CL converges to the right answer when the distribution P(x, y) it samples decays fast enough that
the integrations by parts behind the formal proof have no boundary terms (Aarts, Seiler,
Stamatescu 2010; Scherzer, Seiler, Sexty, Stamatescu 2019). Three practical checks:

1. The drift magnitude u = sqrt(mean |K|^2) at the sampled configurations must fall off
   exponentially or faster; a power law P(u) ~ u^-p with p <~ 3 signals boundary terms
   (Nagata, Nishimura, Shimasaki, PRD 94 (2016) 114515). `drift_tail_exponent` estimates p with
   the Hill estimator on the largest values; an exponential tail gives a large p.
2. The spread of the imaginary parts y: a wide or slowly decaying |y| distribution is the origin of
   boundary terms (`y_spread`).
3. The Langevin operator L_c = sum_i (d_i + K_i) d_i applied to a holomorphic O has <L_c O> = 0 for
   a correct CL (for O = mean z^2 this is the Schwinger-Dyson equation <1 + z K> = 0).
   `boundary_term` gives B(Y) = <L_c O Theta(Y - y_max)> as a function of the cutoff Y; a nonzero
   value as Y grows is the boundary term (Scherzer et al.'s B_1).

Errors are the Gamma method's (runtime/stats/gamma.py, chains as replicas): honest for Markov data.
"""
from __future__ import annotations

import math

import numpy as np

from theoryc.runtime.stats.gamma import gamma_method

DEFAULT_TAIL_FRACTION = 0.01
POWER_LAW_LIMIT = 3.0


def drift_tail_exponent(u: np.ndarray, tail_fraction: float = DEFAULT_TAIL_FRACTION,
                        min_tail: int = 30) -> dict:
    """Hill estimate of p in P(u) ~ u^-p for the largest `tail_fraction` of the drift magnitudes.

    The Hill estimator gives the tail index a of the survival function, P(U > u) ~ u^-a; the
    density exponent is p = a + 1, with error ~ a / sqrt(k) for k tail points (independent samples;
    correlated samples make the true error larger).
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    u = np.sort(u[np.isfinite(u) & (u > 0)])[::-1]
    if u.size < 2 * min_tail:
        return {"exponent": None, "error": None, "n_tail": 0, "threshold": None}
    k = int(min(max(min_tail, tail_fraction * u.size), u.size - 1))
    threshold = u[k]
    xi = float(np.mean(np.log(u[:k] / threshold)))
    if xi <= 0:   # all tail values equal: no measurable decay law
        return {"exponent": None, "error": None, "n_tail": k, "threshold": float(threshold)}
    a = 1.0 / xi
    return {"exponent": a + 1.0, "error": a / math.sqrt(k), "n_tail": k,
            "threshold": float(threshold)}


def y_spread(y_max: np.ndarray, y_rms: np.ndarray) -> dict:
    """Spread of the imaginary parts, from per-configuration figures (chains, n): the rms of Im z
    over all sites and configurations, and quantiles of each configuration's largest |Im z|
    (a streamed run never holds all configurations at once)."""
    y_max = np.asarray(y_max).ravel()
    if y_max.size == 0:
        return {}
    q = np.quantile(y_max, [0.5, 0.99, 0.999])
    return {"rms": float(np.sqrt(np.mean(np.square(y_rms)))), "median_max": float(q[0]),
            "q99_max": float(q[1]), "q999_max": float(q[2]), "max_abs": float(y_max.max())}


def boundary_term(lc_values: np.ndarray, y_max: np.ndarray, cutoffs=None) -> dict:
    """B(Y) = <L_c O * Theta(Y - y_max)> at cutoffs Y, with Gamma-method errors.

    lc_values: L_c O per configuration (chains, n), complex; y_max: the largest |Im z| of each
    configuration (chains, n). Default cutoffs: the 50, 90, 99, 99.9 and 100% quantiles of y_max.
    The last entry (all configurations) is the Schwinger-Dyson residual <L_c O>: zero if CL is
    right.
    """
    lc = np.asarray(lc_values)
    ym = np.asarray(y_max)
    if cutoffs is None:
        cutoffs = np.quantile(ym, [0.5, 0.9, 0.99, 0.999, 1.0])
    rows = []
    for cut in cutoffs:
        inside = ym <= cut
        re, im = gamma_method(np.real(lc) * inside), gamma_method(np.imag(lc) * inside)
        rows.append({"Y": float(cut), "B": [re.mean, im.mean], "error": [re.error, im.error]})
    return {"cutoffs": rows, "residual": rows[-1]}


def summarize(stats: dict) -> dict:
    """The CL trust figures of a run from its per-configuration statistics (run_complex_langevin)."""
    out: dict = {}
    warnings = []
    if "drift_magnitude" in stats:
        tail = drift_tail_exponent(stats["drift_magnitude"])
        out["drift_tail"] = tail
        p, err = tail["exponent"], tail["error"]
        if p is not None and p - 2 * err < POWER_LAW_LIMIT:
            warnings.append(
                f"the drift magnitude distribution decays like a power |K|^-{p:.2f} (+- {err:.2f}),"
                f" not faster than |K|^-{POWER_LAW_LIMIT:g}: boundary terms likely, results "
                "may be wrong")
    if "y_max" in stats and "y_rms" in stats:
        out["y_spread"] = y_spread(stats["y_max"], stats["y_rms"])
    if "sd_re" in stats and "y_max" in stats:
        lc = np.asarray(stats["sd_re"]) + 1j * np.asarray(stats["sd_im"])
        bt = boundary_term(lc, stats["y_max"])
        out["boundary_term"] = bt
        res = bt["residual"]
        for part, m, e in zip(("Re", "Im"), res["B"], res["error"]):
            if e == e and e > 0 and abs(m) > 4 * e:
                warnings.append(
                    f"Schwinger-Dyson check failed: {part} <L_c mean(z^2)> = {m:.4g} +- {e:.2g} "
                    "(should be 0): boundary terms or a too large step")
    out["warnings"] = warnings
    out["trustworthy"] = not warnings
    return out
