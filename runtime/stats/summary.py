"""The `theoryc measure` summary: one JSON-able object per ensemble, and its text table."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .cumulants import cumulants as cumulants_of
from .estimates import covariance, derived, derived_from, linearised, observable_stats
from .gamma import DEFAULT_S


def json_number(v):
    """A complex number as [re, im] (JSON has no complex numbers); anything else unchanged."""
    if isinstance(v, complex):
        return [v.real, v.imag]
    return v


def summarize(ensemble, estimates: Mapping | None = None,
              estimate_inputs: Mapping | None = None,
              cumulants: int | Mapping[str, int] | None = None, S: float = DEFAULT_S,
              observable_indices: Mapping[str, tuple[int, int]] | None = None,
              estimate_vectors: Mapping[str, Sequence[str]] | None = None) -> dict:
    """The `theoryc measure --json` object (DESIGN.md) of anything with `observables`
    {name: (chains, n) or (chains, n, N)}, optional `log_weights` and `summary` (an `Ensemble`, a
    measurement).

    estimates: name -> `Estimate`; estimate_inputs: their input series {name: (chains, n)}
    (runtime.measure.estimate_input_series); cumulants: a maximum order for every scalar
    observable, or {observable: order}. The ensemble's log_weights, when present, reweight every
    mean. A vector observable C(t) (indices lo..hi in `observable_indices`, else 0..N-1) and a
    vector estimate (its component estimates by name in `estimate_vectors`) give lists per
    component, {"index", "mean", "error", "tau_int"}; a real vector estimate also gives the
    "covariance" of its components (`estimates.covariance`).
    """
    lw = getattr(ensemble, "log_weights", None)
    out = {"observables": {}, "estimates": {}, "cumulants": {},
           "sampler": dict(getattr(ensemble, "summary", {}) or {})}
    for name, series in ensemble.observables.items():
        if np.ndim(series) == 3:
            lo = (observable_indices or {}).get(name, (0, 0))[0]
            out["observables"][name] = _vector([observable_stats(series[..., k], lw, S)
                                                for k in range(series.shape[2])],
                                               list(range(lo, lo + series.shape[2])))
            continue
        r = observable_stats(series, lw, S)
        out["observables"][name] = {"mean": json_number(r.mean), "error": r.error,
                                    "tau_int": r.tau_int}
    grouped = {c: v for v, cs in (estimate_vectors or {}).items() for c in cs}
    for name, est in (estimates or {}).items():
        missing = [i for i in est.inputs if i not in (estimate_inputs or {})]
        if missing:
            raise ValueError(f"estimate {name!r} needs the input series {missing}")
        if name in grouped:
            continue
        r = derived(est.fn, [estimate_inputs[i] for i in est.inputs], lw, S)
        out["estimates"][name] = {"mean": json_number(r.mean), "error": r.error}
    for name, components in (estimate_vectors or {}).items():
        out["estimates"][name] = vector_estimate([estimates[c] for c in components],
                                                 estimate_inputs, lw, S)
    if cumulants:
        orders = (cumulants if isinstance(cumulants, Mapping)
                  else {k: int(cumulants) for k, v in ensemble.observables.items()
                        if np.ndim(v) == 2})
        for name, order in orders.items():
            res = cumulants_of(ensemble.observables[name], order, lw, S=S)
            out["cumulants"][name] = {k: {"mean": json_number(v["mean"]), "error": v["error"]}
                                      for k, v in res.items()}
    return out


def vector_estimate(components: Sequence, estimate_inputs: Mapping, log_weights=None,
                    S: float = DEFAULT_S) -> dict:
    """A vector estimate m_eff(t): each component exactly as a scalar estimate (`derived`), and,
    when every component is real, the covariance of the components from the same projected
    series."""
    values, projected = [], []
    for est in components:
        value, series = linearised(est.fn, [estimate_inputs[i] for i in est.inputs], log_weights)
        values.append(value)
        projected.append(series)
    results = [derived_from(v, p, S) for v, p in zip(values, projected)]
    out = _vector(results, [_index_of(est.name) for est in components])
    if not any(isinstance(v, complex) for v in values):
        out["covariance"] = covariance([p[0] for p in projected],
                                       [r.error for r in results]).tolist()
    return out


def _vector(results: Sequence, index: list) -> dict:
    return {"index": index, "mean": [json_number(r.mean) for r in results],
            "error": [r.error for r in results], "tau_int": [r.tau_int for r in results]}


def _index_of(component: str):
    """'m_eff(3)' -> 3: the component's index, as the compiler names it."""
    inner = component[component.rindex("(") + 1:-1] if component.endswith(")") else component
    try:
        return int(inner)
    except ValueError:
        return inner


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


def format_tau(tau: float) -> str:
    """tau_int as the table prints it (and the ensemble figures' titles show it)."""
    return f"{tau:.2f}"


def format_summary(summary: dict) -> str:
    """The `summarize` object as a readable text table; vector observables and estimates as
    tables of their components (index, value, error, tau_int)."""
    lines = []
    observables = summary.get("observables") or {}
    scalars = {k: r for k, r in observables.items() if "index" not in r}
    if scalars:
        lines.append(f"{'observable':<16} {'mean':>26} {'tau_int':>8}")
        for name, r in scalars.items():
            lines.append(f"{name:<16} {format_value_error(r['mean'], r['error']):>26} "
                         f"{format_tau(r['tau_int']):>8}")
    for name, r in observables.items():
        if "index" in r:
            lines += ["", f"observable {name}", *format_components(r)]
    estimates = summary.get("estimates") or {}
    scalars = {k: r for k, r in estimates.items() if "index" not in r}
    if scalars:
        lines.append("")
        lines.append(f"{'estimate':<16} {'value':>26}")
        for name, r in scalars.items():
            lines.append(f"{name:<16} {format_value_error(r['mean'], r['error']):>26}")
    for name, r in estimates.items():
        if "index" in r:
            lines += ["", f"estimate {name}", *format_components(r)]
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


def format_components(r: dict) -> list[str]:
    """The rows of a vector's table: index, value (to its error's digits), error, tau_int."""
    rows = [f"  {'index':>6} {'value':>22} {'error':>16} {'tau_int':>8}"]
    for i, mean, error, tau in zip(r["index"], r["mean"], r["error"], r["tau_int"]):
        rows.append(f"  {i!s:>6} {_plain_value(mean, error):>22} {_plain_error(error):>16} "
                    f"{format_tau(tau):>8}")
    return rows


def _plain_value(mean, error) -> str:
    if isinstance(mean, (list, tuple)):
        er, ei = error if isinstance(error, (list, tuple)) else (error, error)
        return f"{_plain_value(mean[0], er)}{'-' if mean[1] < 0 else '+'}{_plain_value(abs(mean[1]), ei)}i"
    if not (math.isfinite(mean) and error is not None and math.isfinite(error) and error > 0
            and 1e-4 <= max(abs(mean), error) < 1e5):
        return f"{mean:.6g}"
    return f"{mean:.{max(0, _error_decimals(error))}f}"


def _plain_error(error) -> str:
    if isinstance(error, (list, tuple)):
        return "[" + ", ".join(_plain_error(e) for e in error) + "]"
    return f"{error:.2g}"


def _format_plain(v) -> str:
    if isinstance(v, dict) and set(v) == {"mean", "error"}:
        return format_value_error(v["mean"], v["error"])
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
