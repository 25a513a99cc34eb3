"""The `theoryc measure` summary: one JSON-able object per ensemble, and its text table."""
from __future__ import annotations

import math
from typing import Mapping

from .cumulants import cumulants as cumulants_of
from .estimates import derived, observable_stats
from .gamma import DEFAULT_S


def json_number(v):
    """A complex number as [re, im] (JSON has no complex numbers); anything else unchanged."""
    if isinstance(v, complex):
        return [v.real, v.imag]
    return v


def summarize(ensemble, estimates: Mapping | None = None,
              estimate_inputs: Mapping | None = None,
              cumulants: int | Mapping[str, int] | None = None, S: float = DEFAULT_S) -> dict:
    """The `theoryc measure --json` object (DESIGN.md) of anything with `observables`
    {name: (chains, n)}, optional `log_weights` and `summary` (an `Ensemble`, a measurement).

    estimates: name -> `Estimate`; estimate_inputs: their input series {name: (chains, n)}
    (runtime.measure.estimate_input_series); cumulants: a maximum order for every observable, or
    {observable: order}. The ensemble's log_weights, when present, reweight every mean.
    """
    lw = getattr(ensemble, "log_weights", None)
    out = {"observables": {}, "estimates": {}, "cumulants": {},
           "sampler": dict(getattr(ensemble, "summary", {}) or {})}
    for name, series in ensemble.observables.items():
        r = observable_stats(series, lw, S)
        out["observables"][name] = {"mean": json_number(r.mean), "error": r.error,
                                    "tau_int": r.tau_int}
    for name, est in (estimates or {}).items():
        missing = [i for i in est.inputs if i not in (estimate_inputs or {})]
        if missing:
            raise ValueError(f"estimate {name!r} needs the input series {missing}")
        r = derived(est.fn, [estimate_inputs[i] for i in est.inputs], lw, S)
        out["estimates"][name] = {"mean": json_number(r.mean), "error": r.error}
    if cumulants:
        orders = (cumulants if isinstance(cumulants, Mapping)
                  else {k: int(cumulants) for k in ensemble.observables})
        for name, order in orders.items():
            res = cumulants_of(ensemble.observables[name], order, lw, S=S)
            out["cumulants"][name] = {k: {"mean": json_number(v["mean"]), "error": v["error"]}
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


def format_tau(tau: float) -> str:
    """tau_int as the table prints it (and the ensemble figures' titles show it)."""
    return f"{tau:.2f}"


def format_summary(summary: dict) -> str:
    """The `summarize` object as a readable text table."""
    lines = []
    if summary.get("observables"):
        lines.append(f"{'observable':<16} {'mean':>26} {'tau_int':>8}")
        for name, r in summary["observables"].items():
            lines.append(f"{name:<16} {format_value_error(r['mean'], r['error']):>26} "
                         f"{format_tau(r['tau_int']):>8}")
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
