"""The `theoryc measure` summary: one JSON-able object per ensemble, and its text table."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Mapping, Sequence

import numpy as np

from ..io.provenance import format_param
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
    lines = format_run(summary.get("run"))
    observables = summary.get("observables") or {}
    scalars = {k: r for k, r in observables.items() if "index" not in r}
    cost = any("seconds_per_independent" in r for r in scalars.values())
    if scalars:
        lines.append(f"{'observable':<16} {'mean':>26} {'tau_int':>8}"
                     + (f" {'s/indep':>10}" if cost else ""))
        for name, r in scalars.items():
            extra = (f" {r['seconds_per_independent']:>10.3g}"
                     if "seconds_per_independent" in r else "")
            lines.append(f"{name:<16} {format_value_error(r['mean'], r['error']):>26} "
                         f"{format_tau(r['tau_int']):>8}{extra}")
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
            label = SAMPLER_LABELS.get(k)
            lines.append(f"  {k:<24} {_format_plain(v)}" + (f"   ({label})" if label else ""))
    if summary.get("warnings"):
        lines.append("")
        lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


# what the sampler figures mean, where two names look alike
SAMPLER_LABELS = {
    "acceptance": "mean Metropolis probability min(1, exp(-dH))",
    "acceptance_rate": "fraction of proposals accepted",
    "free_energy": "F_q = E_q[S + log q], the variational bound on -log Z",
    "log_z": "log Z = log mean of the weights",
}


def format_run(run: dict | None) -> list[str]:
    """The header of the table: what was measured."""
    if not run:
        return []
    params = ", ".join(f"{k}={format_param(v)}" for k, v in (run.get("params") or {}).items())
    what = f"{run['chains']} chains x {run['configurations']} configurations"
    cuts = [f"first {run['discard']} discarded" for _ in [0] if run.get("discard")]
    cuts += [f"bins of {run['bin']}" for _ in [0] if run.get("bin", 1) > 1]
    lines = [f"theory   {run.get('theory') or '?'}" + (f" ({params})" if params else ""),
             f"sampler  {run.get('sampler') or '?'}: {what}"
             + (f" ({', '.join(cuts)})" if cuts else "")
             + ("  [PARTIAL: interrupted run]" if run.get("partial") else "")]
    if run.get("seconds_per_configuration"):
        lines.append(f"cost     {run['seconds_per_configuration']:.3g} s per configuration; "
                     "s/indep = that x 2 tau_int")
    return lines + [""]


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


# ------------------------------------------------------------- what `measure` adds to a summary
# (runtime/measure.py measure_ensemble): the run it describes, --discard / --bin, the cost of an
# independent sample, and the warnings a physicist needs before trusting the numbers.

def declaration_order(ensemble, theory):
    """The observables in the order the theory declares them (a file stores them sorted)."""
    names = list(getattr(theory, "observable_names", ()) or ())
    obs = ensemble.observables
    order = [k for k in names if k in obs] + [k for k in obs if k not in names]
    return dataclasses.replace(ensemble, observables={k: obs[k] for k in order})


def _length(ensemble) -> int:
    for v in (*ensemble.observables.values(), *getattr(ensemble, "stats", {}).values()):
        return int(np.shape(v)[1])
    return 0


def discarded(ensemble, n: int):
    """The ensemble without each chain's first n configurations (--discard)."""
    if not n:
        return ensemble
    length = _length(ensemble)
    if n >= length:
        raise ValueError(f"--discard {n} leaves no configuration: the ensemble has {length} per "
                         "chain")
    lw = ensemble.log_weights
    return dataclasses.replace(ensemble, observables={k: v[:, n:] for k, v in ensemble.observables.items()},
                    stats={k: v[:, n:] for k, v in getattr(ensemble, "stats", {}).items()},
                    log_weights=None if lw is None else lw[:, n:])


def bins(series: np.ndarray, k: int) -> np.ndarray:
    """Means of k consecutive configurations along axis 1 (the remainder dropped)."""
    m = series.shape[1] // k
    return series[:, :m * k].reshape(series.shape[0], m, k, *series.shape[2:]).mean(axis=2)


def binned_ensemble(ensemble, inputs, k: int):
    """(ensemble, estimate inputs) averaged over bins of k configurations (--bin)."""
    if k <= 1:
        return ensemble, inputs
    if ensemble.log_weights is not None:
        raise ValueError("--bin applies to unweighted ensembles; this one carries log weights "
                         "(the Gamma method's tau_int already accounts for the correlations)")
    if _length(ensemble) // k < 2:
        raise ValueError(f"--bin {k} leaves fewer than 2 bins of the {_length(ensemble)} "
                         "configurations per chain")
    observables = {name: bins(v, k) for name, v in ensemble.observables.items()}
    return (dataclasses.replace(ensemble, observables=observables),
            None if inputs is None else {name: bins(v, k) for name, v in inputs.items()})


def only(ensemble, names, order: int):
    """The scalar observables `names` (all scalar ones when None), for --cumulants --of."""
    scalar = {k: v for k, v in ensemble.observables.items() if np.ndim(v) == 2}
    names = list(scalar) if not names else list(names)
    unknown = [k for k in names if k not in scalar]
    if unknown:
        raise ValueError(f"--of {', '.join(unknown)}: no such scalar observable; this ensemble "
                         f"has {', '.join(scalar) or 'none'}")
    return dataclasses.replace(ensemble, observables={k: scalar[k] for k in names})


def run_header(ensemble, theory, discard: int, bin_size: int) -> dict:
    """What the numbers are of: theory, parameters, chains x configurations, sampler."""
    attrs = getattr(ensemble, "attrs", {}) or {}
    chains = next((int(np.shape(v)[0]) for v in ensemble.observables.values()), 0)
    return {"theory": getattr(theory, "name", None) or attrs.get("theory_name", ""),
            "params": ({k: json_number(v) for k, v in theory.params.items()}
                       if getattr(theory, "params", None) is not None
                       else dict(attrs.get("params") or {})), "chains": chains,
            "configurations": _length(ensemble), "sampler": attrs.get("sampler", ""),
            "kind": attrs.get("kind", "markov"), "discard": int(discard), "bin": int(bin_size),
            "partial": bool(attrs.get("partial", False))}


def seconds_per_configuration(ensemble) -> float | None:
    """Production wall time per configuration (all chains' configurations counted) of a Markov
    chain ensemble, from the run's timing; None for independent samples or without timing."""
    attrs = getattr(ensemble, "attrs", {}) or {}
    seconds = (attrs.get("timing") or {}).get("seconds")
    chains_n = next((np.shape(v)[:2] for v in ensemble.observables.values()), None)
    if attrs.get("kind", "markov") != "markov" or not seconds or chains_n is None:
        return None
    count = int(chains_n[0]) * int(chains_n[1])
    return float(seconds) / count if count else None


def add_costs(summary: dict, per_config: float | None, bin_size: int) -> None:
    """Seconds per independent sample of each scalar observable: per configuration x 2 tau_int
    (tau_int counted in bins of bin_size configurations)."""
    if not per_config:
        return
    summary["run"]["seconds_per_configuration"] = per_config
    for r in summary["observables"].values():
        if "index" not in r and isinstance(r.get("tau_int"), float) and math.isfinite(r["tau_int"]):
            r["seconds_per_independent"] = per_config * bin_size * 2 * r["tau_int"]


THERMALISATION_SIGMA = 4.0      # a first-block drift larger than this many sigma is reported
RUNAWAY_GROWTH = 10.0           # ... and a last quarter this many times the first quarter's size


def run_warnings(ensemble) -> list[str]:
    """Warnings printed after a run and by `measure`: runaway fields, a model used away from its
    training parameters, approximate (unreweighted) diffusion samples, thermalisation not
    reached, an interrupted run."""
    attrs = getattr(ensemble, "attrs", {}) or {}
    sampler = dict(getattr(ensemble, "summary", {}) or {})
    out = []
    if attrs.get("partial"):
        out.append(f"partial ensemble of an interrupted run ({attrs.get('partial_note', '')}); "
                   "continue it with 'theoryc sample ... --resume'")
    if sampler.get("n_bad_chains"):
        out.append(f"{sampler['n_bad_chains']} chain(s) ran away (non-finite or diverging fields) "
                   "and were reset or dropped: the action may be unbounded below along the "
                   "direction they wandered into")
    differ = attrs.get("model_params_differ")
    if isinstance(differ, str) and differ.startswith("["):
        try:
            differ = json.loads(differ)
        except ValueError:
            pass
    if differ:
        figures = ", ".join(f"{k} {_format_plain(sampler[k])}" for k in ("acceptance", "ess",
                                                                         "ess_per_sample")
                            if k in sampler)
        out.append(f"the model was trained at other parameters ({'; '.join(differ) if isinstance(differ, list) else differ}); "
                   f"exact here through the Metropolis test / weights, at a cost: {figures or 'see the sampler figures'}")
    if str(attrs.get("sampler", "")).startswith("diffusion") and ensemble.log_weights is None:
        out.append("configurations drawn from a diffusion model are approximate samples (no "
                   "reweighting to the action): the estimates carry the model's bias")
    for name, series in ensemble.observables.items():
        if np.ndim(series) != 2 or np.iscomplexobj(series):
            continue
        note = _runaway(name, series) or (_drift(name, series, ensemble.log_weights)
                                          if attrs.get("kind", "markov") == "markov" else None)
        if note:
            out.append(note)
    return out


def _runaway(name: str, series: np.ndarray) -> str | None:
    if not np.all(np.isfinite(series)):
        return f"{name} is not finite in some configurations: a chain ran away"
    n = series.shape[1]
    if n < 8:
        return None
    first, last = (float(np.median(np.abs(series[:, s]))) for s in (slice(0, n // 4),
                                                                    slice(n - n // 4, n)))
    if last > RUNAWAY_GROWTH * first and last > 1.0:
        return (f"{name} grew from about {first:.3g} to {last:.3g} over the run: the field may be "
                "running away along a direction in which the action is unbounded below")
    return None


def _drift(name: str, series: np.ndarray, log_weights) -> str | None:
    """The first tenth of every chain against the rest (each with its Gamma-method error)."""
    n = series.shape[1]
    if n < 100 or log_weights is not None:
        return None
    head, rest = series[:, :n // 10], series[:, n // 10:]
    a, b = observable_stats(head, None, DEFAULT_S), observable_stats(rest, None, DEFAULT_S)
    error = math.hypot(a.error, b.error)
    if not (error > 0 and math.isfinite(error)):
        return None
    sigma = abs(a.mean - b.mean) / error
    if sigma > THERMALISATION_SIGMA:
        return (f"{name}: the first {n // 10} configurations of each chain differ from the rest "
                f"by {sigma:.1f} sigma: thermalisation may not be reached (use --discard "
                f"{n // 10} or a longer --warmup)")
    return None
