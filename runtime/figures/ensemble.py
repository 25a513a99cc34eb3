"""Figures of an ensemble (matplotlib, Agg backend: works without a screen).

`plot_ensemble` takes plain data (a dict, an `Ensemble` read back from a file, or a `SamplerRun`),
never a file name, so it does not depend on the file reader:

- a 0-d complex ensemble (complex Langevin, one variable): the histogram P(x, y) of z = x + i y,
  and, given the drift, the CL drift field as streamlines beside it and as arrows on top of the
  histogram (the seed talk's Figure 1);
- otherwise, one row per observable (real and imaginary parts of a complex one separately):
  Monte Carlo history of a few chains, histogram over all chains, and the normalised
  autocorrelation function Gamma(t)/Gamma(0) with the Gamma method's tau_int (runtime/stats: the
  same number `theoryc measure` prints); and one row per vector observable C(t): the correlator
  on a log scale with error bars, the effective mass with its fitted plateau, tau_int per t.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from theoryc.runtime.figures.output import save_figure  # noqa: E402
from theoryc.runtime.stats.correlators import effective_mass, plateau  # noqa: E402
from theoryc.runtime.stats.estimates import observable_stats  # noqa: E402
from theoryc.runtime.stats.gamma import normalised_autocorrelation  # noqa: E402
from theoryc.runtime.stats.summary import format_tau, format_value_error  # noqa: E402

HISTORY_CHAINS = 4


def _get(obj, name, default=None):
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _numpy(a):
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def plot_ensemble(ensemble_like, path, *, drift: Callable | None = None,
                  observables: Mapping | None = None, max_lag: int | None = None,
                  bins: int = 100, title: str | None = None) -> str:
    """Write a PNG (or any format matplotlib infers from `path`) describing the ensemble.

    ensemble_like: anything with `configs` (chains, n, *shape) and/or `observables`
    {name: (chains, n)} (and optional `log_weights`) as attributes or keys. drift: the CL drift, a callable taking a complex
    tensor (batch, 1) (e.g. `theory.drift`) or an object with a `.drift`; used for 0-d complex
    ensembles. observables overrides those of the ensemble. Returns `path`.
    """
    configs = _numpy(_get(ensemble_like, "configs"))
    obs = dict(observables if observables is not None else (_get(ensemble_like, "observables")
                                                              or {}))
    if drift is not None and not callable(drift):
        drift = drift.drift
    if configs is not None and np.iscomplexobj(configs) and math.prod(configs.shape[2:]) == 1:
        fig = complex_plane_figure(configs.reshape(-1), drift, bins)
    else:
        vectors = {k: _numpy(v) for k, v in obs.items() if np.ndim(v) == 3}
        series = _series({k: v for k, v in obs.items() if k not in vectors}, configs)
        if not series and not vectors:
            raise ValueError("nothing to plot: the ensemble has neither observables nor configs")
        fig = observables_figure(series, max_lag, _numpy(_get(ensemble_like, "log_weights")),
                                 vectors)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


# ------------------------------------------------------------------------- complex 0-d: P(x, y)

def drift_on_grid(drift: Callable, xs: np.ndarray, ys: np.ndarray):
    """Re K and Im K of a holomorphic drift on the grid x + i y, each (len(ys), len(xs))."""
    gx, gy = np.meshgrid(xs, ys)
    z = torch.as_tensor((gx + 1j * gy).reshape(-1, 1), dtype=torch.complex128)
    k = _numpy(drift(z)).reshape(gx.shape)
    return k.real, k.imag


def complex_plane_figure(z: np.ndarray, drift: Callable | None, bins: int = 100):
    """Histogram P(x, y) of complex samples; with the drift, its streamlines beside it."""
    x, y = z.real, z.imag
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    xr = _padded_range(x)
    yr = _padded_range(y, minimum_half_width=0.25 * (xr[1] - xr[0]) / 2)
    panels = 2 if drift is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    axes = axes[0]
    if drift is not None:
        xs, ys = np.linspace(*xr, 60), np.linspace(*yr, 60)
        kx, ky = drift_on_grid(drift, xs, ys)
        speed = np.hypot(kx, ky)
        ax = axes[0]
        strm = ax.streamplot(xs, ys, kx, ky, color=np.log10(speed + 1e-12), cmap="viridis",
                             density=1.2, linewidth=0.8)
        fig.colorbar(strm.lines, ax=ax, label="log10 |K|")
        ax.set(xlabel="x = Re z", ylabel="y = Im z", title="CL drift K(z) = -dS/dz",
               xlim=xr, ylim=yr)
    ax = axes[-1]
    h = ax.hist2d(x, y, bins=bins, range=[xr, yr], density=True, cmap="magma")
    fig.colorbar(h[3], ax=ax, label="P(x, y)")
    if drift is not None:
        xs, ys = np.linspace(*xr, 16), np.linspace(*yr, 12)
        kx, ky = drift_on_grid(drift, xs, ys)
        norm = np.hypot(kx, ky) + 1e-300
        ax.quiver(*np.meshgrid(xs, ys), kx / norm, ky / norm, color="white", alpha=0.6,
                  width=0.003)
    ax.set(xlabel="x = Re z", ylabel="y = Im z", title=f"P(x, y) from {x.size} samples")
    fig.tight_layout()
    return fig


def _padded_range(v: np.ndarray, minimum_half_width: float = 0.0):
    lo, hi = np.quantile(v, [0.0005, 0.9995]) if v.size else (-1.0, 1.0)
    mid, half = (lo + hi) / 2, max((hi - lo) / 2 * 1.1, minimum_half_width, 1e-6)
    return (float(mid - half), float(mid + half))


# -------------------------------------------------------------- real ensembles: per observable

def _series(observables: Mapping, configs) -> dict[str, np.ndarray]:
    """name -> real (chains, n) arrays; complex observables become 'Re name' and 'Im name'."""
    series = {}
    if not observables and configs is not None and math.prod(configs.shape[2:]) <= 4:
        flat = configs.reshape(*configs.shape[:2], -1)
        observables = {f"phi[{i}]": flat[..., i] for i in range(flat.shape[-1])}
    for name, v in observables.items():
        v = _numpy(v)
        v = v.reshape(1, -1) if v.ndim == 1 else v
        if np.iscomplexobj(v):
            series[f"Re {name}"], series[f"Im {name}"] = v.real, v.imag
        else:
            series[name] = v.astype(np.float64)
    return series


def observables_figure(series: Mapping[str, np.ndarray], max_lag: int | None = None,
                       log_weights: np.ndarray | None = None,
                       vectors: Mapping[str, np.ndarray] | None = None):
    """History, histogram and autocorrelation of each real (chains, n) series; the tau_int in the
    title is the Gamma method's, the number `theoryc measure` prints (reweighted like it). Then
    one row per vector observable (chains, n, N): the correlator and its effective mass."""
    vectors = vectors or {}
    rows = len(series) + len(vectors)
    fig, axes = plt.subplots(rows, 3, figsize=(13, 2.6 * rows + 0.6 * len(vectors)),
                             squeeze=False)
    for row, (name, v) in zip(axes, series.items()):
        _scalar_row(row, name, v, max_lag, log_weights)
    for row, (name, v) in zip(axes[len(series):], vectors.items()):
        _correlator_row(row, name, v, log_weights)
    fig.tight_layout()
    return fig


def _scalar_row(row, name: str, v: np.ndarray, max_lag, log_weights) -> None:
    finite = np.isfinite(v).all(axis=1)
    if not finite.any():
        return _no_finite_chain(row, name)
    v = v[finite]
    chains, n = v.shape
    hist_ax, acf_ax = row[1], row[2]
    for c in range(min(chains, HISTORY_CHAINS)):
        row[0].plot(v[c], lw=0.6, alpha=0.8)
    row[0].set(xlabel="configuration", ylabel=name,
               title=f"history ({min(chains, HISTORY_CHAINS)} of {chains} chains)")
    hist_ax.hist(v.ravel(), bins=min(100, max(10, int(math.sqrt(v.size)))), density=True,
                 color="C0", alpha=0.8)
    hist_ax.set(xlabel=name, ylabel="density", title=f"mean {v.mean():.5g}")
    lag = max(1, min(max_lag or 100, n // 2))
    acf = normalised_autocorrelation(v, lag) if n > 1 else np.ones(1)
    acf_ax.plot(np.arange(acf.size), acf, marker=".", ms=3)
    acf_ax.axhline(0, color="k", lw=0.5)
    lw = None if log_weights is None else log_weights[finite]
    tau = observable_stats(v, lw).tau_int if n > 1 else 0.5
    acf_ax.set(xlabel="lag", ylabel="Gamma(t)/Gamma(0)",
               title=f"autocorrelation (tau_int = {format_tau(tau)})")


def _correlator_row(row, name: str, c: np.ndarray, log_weights) -> None:
    """C(t) on a log scale with Gamma-method error bars (negative values as |C|, open); the
    effective mass log(C(t)/C(t+1)) where its error is below its size, with its plateau (runtime/stats/correlators.py: the rule
    and the fit); tau_int of each component."""
    if np.iscomplexobj(c):
        c, name = c.real, f"Re {name}"
    finite = np.isfinite(c).all(axis=(1, 2))
    if not finite.any():
        return _no_finite_chain(row, name)
    c = c[finite]
    lw = None if log_weights is None else log_weights[finite]
    stats = [observable_stats(c[..., t], lw) for t in range(c.shape[-1])]
    t = np.arange(c.shape[-1])
    mean = np.array([s.mean for s in stats])
    err = np.array([s.error for s in stats])
    ax = row[0]
    pos = mean > 0
    ax.errorbar(t[pos], mean[pos], err[pos], fmt="o", ms=3, capsize=2, color="C0")
    if (~pos).any():
        ax.errorbar(t[~pos], -mean[~pos], err[~pos], fmt="o", ms=3, capsize=2, color="C0",
                    mfc="none", label="negative: |C| shown")
        ax.legend(fontsize=7)
    if pos.any():
        ax.set_yscale("log")
    ax.set(xlabel="t", ylabel=f"{name}(t)", title=f"correlator {name}(t)")
    masses = effective_mass(c, lw)
    ax = row[1]
    m = np.array([r.mean for r in masses])
    e = np.array([r.error for r in masses])
    shown = np.isfinite(m) & np.isfinite(e) & (e < np.abs(m))   # determined: signal over noise
    ax.errorbar(t[:-1][shown], m[shown], e[shown], fmt="o", ms=3, capsize=2, color="C1")
    if c.shape[-1] >= 4:      # the first half: a periodic correlator's second half mirrors it
        ax.set_xlim(-0.5, c.shape[-1] / 2)
    fit = plateau(c, lw, masses)
    title = "effective mass log(C(t)/C(t+1))"
    if fit is not None:
        span = np.array([fit.t_min - 0.3, fit.t_max + 0.3])
        ax.fill_between(span, fit.mass.mean - fit.mass.error, fit.mass.mean + fit.mass.error,
                        color="C3", alpha=0.3, lw=0)
        ax.plot(span, [fit.mass.mean] * 2, color="C3", lw=1)
        title += (f"\nplateau t = {fit.t_min}..{fit.t_max}: "
                  f"{format_value_error(fit.mass.mean, fit.mass.error)}")
        visible = m[fit.t_min:fit.t_max + 1]
        pad = max(5 * fit.mass.error, 0.5 * np.ptp(visible), 0.05 * abs(fit.mass.mean))
        ax.set_ylim(min(visible.min(), fit.mass.mean) - pad, max(visible.max(), fit.mass.mean) + pad)
    else:
        title += "\n(no plateau: see runtime/stats/correlators.py)"
    ax.set(xlabel="t", ylabel="m_eff(t)", title=title)
    ax = row[2]
    ax.plot(t, [s.tau_int for s in stats], marker=".", ms=4)
    ax.set(xlabel="t", ylabel="tau_int", title=f"tau_int of {name}(t)")


def _no_finite_chain(row, name: str) -> None:
    """A row whose every chain holds a NaN or inf (a run that ran away): said, not drawn."""
    for ax in row:
        ax.axis("off")
    row[1].text(0.5, 0.5, f"{name}: every chain holds NaN or inf values", ha="center",
                va="center", transform=row[1].transAxes)
