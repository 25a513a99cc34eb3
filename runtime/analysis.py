"""Error analysis of Monte Carlo series: pure functions on numpy arrays.

- `gamma_method`: U. Wolff, "Monte Carlo errors with less errors", Comput.Phys.Commun. 156 (2004)
  143 (hep-lat/0306017): autocorrelation function summed up to an automatically chosen window
  (parameter S = 1.5), several replicas (chains) combined, bias-corrected Gamma(t).
  Written by hand (~100 lines) rather than depending on pyerrors and its dependency tree.
- `derived`: a function of means with its error by the linearised Gamma method; the gradient of f
  at the means comes from torch autograd, so any `Estimate` of a compiled theory works unchanged.
  Complex primaries are split into real and imaginary parts; a complex result's error is
  [err_re, err_im]. Log-weights (reweighting) turn each mean into a ratio <w a>/<w>.
- `cumulants`: kappa_2..kappa_N from the raw moments about zero through the standard recursion
  kappa_n = mu_n - sum_{m=1}^{n-1} C(n-1, m-1) kappa_m mu_{n-m} (the full cumulants; for a
  zero-mean variable the m = 1 terms vanish and this is the seed's formula), with jackknife errors
  over blocks much longer than the autocorrelation time.
- `summarize` / `format_summary`: the `theoryc measure` JSON object and its text table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

DEFAULT_S = 1.5


# --------------------------------------------------------------------------- Gamma method

@dataclass(frozen=True)
class GammaResult:
    mean: float
    error: float
    tau_int: float
    tau_int_error: float
    window: int
    n: int


def _replicas(data) -> list[np.ndarray]:
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


def gamma_method(data, S: float = DEFAULT_S) -> GammaResult:
    """Mean, error and integrated autocorrelation time of a real series.

    `data`: (n,), (chains, n) or a list of replicas of any lengths. The window W is the first
    where g(W) = exp(-W/tau) - tau/sqrt(W N) < 0, tau = S / log((2 tau_int + 1)/(2 tau_int - 1))
    (Wolff eq. 52); tau_int's error is Wolff's eq. 42.
    """
    reps = _replicas(data)
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


# -------------------------------------------------------------------- derived quantities

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
    primaries = [np.asarray(a) for a in primaries]
    if log_weights is not None:
        w = np.exp(np.asarray(log_weights, dtype=np.float64) - np.max(log_weights))
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
    results = [_project(c, leaves, columns, S) for c in components]
    if value.is_complex():
        mean = complex(value.detach())
        return DerivedResult(mean, [r.error for r in results], max(r.tau_int for r in results))
    return DerivedResult(float(value.detach()), results[0].error, results[0].tau_int)


def _project(component: torch.Tensor, leaves, columns, S: float) -> GammaResult:
    if not component.requires_grad:   # f does not depend on the data: no fluctuation
        return gamma_method(np.zeros_like(columns[0]), S)
    grads = torch.autograd.grad(component, leaves, retain_graph=True, allow_unused=True)
    series = sum(float(g) * col for g, col in zip(grads, columns) if g is not None)
    if isinstance(series, int):       # f does not depend on the data at all
        series = np.zeros_like(columns[0])
    return gamma_method(series, S)


def observable_stats(series: np.ndarray, log_weights: np.ndarray | None = None,
                     S: float = DEFAULT_S) -> DerivedResult:
    """Mean, error and tau_int of one observable (complex: error [re, im])."""
    return derived(lambda m: m[0], [series], log_weights, S)


# ---------------------------------------------------------------------------- cumulants

def cumulants_from_moments(mu: Sequence, zero_mean: bool = False) -> list:
    """kappa_0..kappa_N from raw moments mu_0 = 1, mu_1..mu_N (numbers or arrays, complex ok).

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


def cumulants(series, order: int = 4, log_weights: np.ndarray | None = None,
              block_size: int | None = None, min_blocks: int = 50, zero_mean: bool = False,
              S: float = DEFAULT_S) -> dict[str, dict]:
    """{"kappa2": {"mean", "error"}, ..., "kappaN": ...} of a (chains, n) series (complex ok).

    Errors from a delete-one-block jackknife with blocks inside each chain of `block_size`
    (default: 10 tau_int, shortened if needed to keep at least `min_blocks` blocks in all).
    The reported mean is the full-sample estimate; complex means/errors are complex / [re, im].
    """
    x = np.atleast_2d(np.asarray(series))
    w = None if log_weights is None else np.exp(np.atleast_2d(log_weights) - np.max(log_weights))
    b = block_size or block_length(x, S)
    b = max(1, min(b, sum(x.shape[1] for _ in x) // min_blocks))
    sums = _block_sums(x, w, b, order)                      # (order + 1, blocks)
    total = sums.sum(axis=1, keepdims=True)
    full = cumulants_from_moments(list(total[:, 0] / total[0, 0]), zero_mean)
    loo = total - sums                                      # leave-one-block-out sums
    jack = cumulants_from_moments(list(loo / loo[0]), zero_mean)
    k = sums.shape[1]
    out = {}
    for n in range(2, order + 1):
        dev = jack[n] - jack[n].mean()
        err_re = math.sqrt((k - 1) / k * np.sum(dev.real ** 2))
        if np.iscomplexobj(x):
            err_im = math.sqrt((k - 1) / k * np.sum(dev.imag ** 2))
            out[f"kappa{n}"] = {"mean": complex(full[n]), "error": [err_re, err_im]}
        else:
            out[f"kappa{n}"] = {"mean": float(np.real(full[n])), "error": err_re}
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


_cumulants_of = cumulants   # `summarize` has a parameter of the same name


# ---------------------------------------------------------------------------- summaries

def _json_number(v):
    if isinstance(v, complex):
        return [v.real, v.imag]
    return v


def summarize(ensemble, estimates: Mapping | None = None,
              estimate_inputs: Mapping[str, np.ndarray] | None = None,
              cumulants: int | Mapping[str, int] | None = None, S: float = DEFAULT_S) -> dict:
    """The `theoryc measure --json` object (DESIGN.md) for an `Ensemble` (runtime/ensemble.py).

    estimates: name -> `Estimate`; estimate_inputs: their input series {name: (chains, n)}
    (runtime.measure.estimate_input_series); cumulants: a maximum order for every observable, or
    {observable: order}. The ensemble's log_weights, when present, reweight every mean.
    """
    lw = getattr(ensemble, "log_weights", None)
    out = {"observables": {}, "estimates": {}, "cumulants": {},
           "sampler": dict(getattr(ensemble, "summary", {}) or {})}
    for name, series in ensemble.observables.items():
        r = observable_stats(series, lw, S)
        out["observables"][name] = {"mean": _json_number(r.mean), "error": r.error,
                                    "tau_int": r.tau_int}
    for name, est in (estimates or {}).items():
        missing = [i for i in est.inputs if i not in (estimate_inputs or {})]
        if missing:
            raise ValueError(f"estimate {name!r} needs the input series {missing}")
        r = derived(est.fn, [estimate_inputs[i] for i in est.inputs], lw, S)
        out["estimates"][name] = {"mean": _json_number(r.mean), "error": r.error}
    if cumulants:
        orders = (cumulants if isinstance(cumulants, Mapping)
                  else {k: int(cumulants) for k in ensemble.observables})
        for name, order in orders.items():
            res = _cumulants_of(ensemble.observables[name], order, lw, S=S)
            out["cumulants"][name] = {k: {"mean": _json_number(v["mean"]), "error": v["error"]}
                                      for k, v in res.items()}
    return out


def format_value_error(mean, error) -> str:
    """value(error) notation: 0.42814, 0.00052 -> '0.4281(5)'; complex as 'a(e) + b(e)i'.

    One significant digit of the error, two when it starts with 1; scientific notation for
    very large or very small values.
    """
    if isinstance(mean, (list, tuple)):
        re, im = mean
        er, ei = error if isinstance(error, (list, tuple)) else (error, error)
        sign = "-" if im < 0 else "+"
        return f"{format_value_error(re, er)} {sign} {format_value_error(abs(im), ei)}i"
    if not (error is not None and math.isfinite(error) and error > 0):
        return f"{mean:.6g}"
    size = max(abs(mean), error)
    if size >= 1e5 or size < 1e-4:
        scale = math.floor(math.log10(size))
        return f"{format_value_error(mean / 10**scale, error / 10**scale)}e{scale:+03d}"
    decimals = _error_decimals(error)
    error = math.floor(error * 10.0**decimals + 0.5) / 10.0**decimals   # round half up
    decimals = _error_decimals(error)                # 0.0096 -> 0.010 may change the digits
    if decimals > 0:
        return f"{mean:.{decimals}f}({math.floor(error * 10**decimals + 0.5):d})"
    q = 10 ** (-decimals)
    return f"{round(mean / q) * q:d}({math.floor(error / q + 0.5) * q:d})"


def _error_decimals(error: float) -> int:
    """Decimal places that keep one significant digit of the error (two if it starts with 1)."""
    exponent = math.floor(math.log10(error))
    digits = 2 if error / 10**exponent < 2 else 1
    return digits - 1 - exponent


def format_summary(summary: dict) -> str:
    """The `summarize` object as a readable text table."""
    lines = []
    if summary.get("observables"):
        lines.append(f"{'observable':<16} {'mean':>26} {'tau_int':>8}")
        for name, r in summary["observables"].items():
            lines.append(f"{name:<16} {format_value_error(r['mean'], r['error']):>26} "
                         f"{r['tau_int']:8.2f}")
    if summary.get("estimates"):
        lines.append("")
        lines.append(f"{'estimate':<16} {'value':>26}")
        for name, r in summary["estimates"].items():
            lines.append(f"{name:<16} {format_value_error(r['mean'], r['error']):>26}")
    for name, ks in (summary.get("cumulants") or {}).items():
        lines.append("")
        lines.append(f"cumulants of {name}")
        for k, r in ks.items():
            lines.append(f"  {k:<14} {format_value_error(r['mean'], r['error']):>26}")
    if summary.get("sampler"):
        lines.append("")
        lines.append("sampler")
        for k, v in summary["sampler"].items():
            lines.append(f"  {k:<24} {_format_plain(v)}")
    return "\n".join(lines)


def _format_plain(v) -> str:
    if isinstance(v, dict) and set(v) == {"mean", "error"}:
        return format_value_error(v["mean"], v["error"])
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
