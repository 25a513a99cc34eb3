"""Figures of what a diffusion model has learnt (seed: toy-model flow of the effective action;
complex quartic Figures 2-4).

- one real variable: the learnt effective action S_DM(phi, tau) = -int_0^phi s_theta(phi', tau) dphi'
  at several diffusion times tau (the flow from the Gaussian prior at tau = 1 to the action at
  tau -> 0), against the theory's action S(phi) - S(0) when given;
- two real variables (a complex ensemble's (x, y), or two fields): the learnt score field at the end
  of the backward process, its curl d_x s_y - d_y s_x (the non-conservative part a score-based model
  may learn; an energy-based model's is zero by construction) and, for an energy-based model, the
  energy E(x, y) and the density exp(-E) / Z;
- lattices: the training loss (the learnt objects live in too many dimensions to draw).
The helpers return numpy arrays so they can be tested and reused; `plot_model` draws them.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from theoryc.runtime.figures.output import save_figure  # noqa: E402
from theoryc.runtime.models.diffusion import DiffusionModel  # noqa: E402

DEFAULT_TAUS = (None, 0.05, 0.1, 0.2, 0.4, 1.0)     # None: the model's t_eps (end of generation)


def _t(model: DiffusionModel, tau, n: int) -> torch.Tensor:
    tau = model.t_eps if tau is None else float(tau)
    return torch.full((n,), tau, dtype=model.dtype, device=model.device)


def effective_action(model: DiffusionModel, phi: np.ndarray, tau=None) -> np.ndarray:
    """S_DM(phi, tau) = -int_0^phi s dphi' (trapezoid on the given increasing grid, which must
    contain 0 or the integral is anchored at its first point) for a one-variable model."""
    if model.feature_shape != (1,):
        raise ValueError("the effective action is drawn for one-variable (0-d, one real field) models")
    x = torch.as_tensor(phi, dtype=model.dtype, device=model.device)[:, None]
    s = model.score(x, _t(model, tau, len(phi)))[:, 0].detach().cpu().double().numpy()
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (s[1:] + s[:-1]) * np.diff(phi))])
    anchor = np.interp(0.0, phi, integral) if phi[0] <= 0 <= phi[-1] else integral[0]
    return -(integral - anchor)


def score_field(model: DiffusionModel, xs: np.ndarray, ys: np.ndarray, tau=None):
    """(s_x, s_y) on the grid (len(ys), len(xs)) for a two-variable model."""
    if model.feature_shape != (2,):
        raise ValueError("the score field is drawn for two-variable models (complex 0-d, 2 fields)")
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=model.dtype, device=model.device)
    s = model.score(pts, _t(model, tau, len(pts))).detach().cpu().double().numpy()
    return s[:, 0].reshape(gx.shape), s[:, 1].reshape(gx.shape)


def curl_of_score(model: DiffusionModel, xs, ys, tau=None) -> np.ndarray:
    """d_x s_y - d_y s_x on the grid by central differences (zero for a conservative score)."""
    sx, sy = score_field(model, xs, ys, tau)
    return np.gradient(sy, xs, axis=1) - np.gradient(sx, ys, axis=0)


def energy_surface(model: DiffusionModel, xs, ys, tau=None):
    """(E, p) on the grid: the learnt energy shifted to min 0, and exp(-E) normalised on the grid."""
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=model.dtype, device=model.device)
    with torch.no_grad():
        e = model.energy(pts, _t(model, tau, len(pts))).cpu().double().numpy().reshape(gx.shape)
    e = e - e.min()
    p = np.exp(-e)
    p /= np.trapezoid(np.trapezoid(p, xs, axis=1), ys)
    return e, p


def plot_model(model: DiffusionModel, path: str, *, theory=None, taus=DEFAULT_TAUS,
               extent: float | None = None, n_grid: int = 81) -> str:
    """Draw the model's figure (see module doc) to `path`; returns path."""
    if model.feature_shape == (1,):
        fig = _plot_1d(model, theory, taus, extent)
    elif model.feature_shape == (2,):
        fig = _plot_2d(model, extent, n_grid)
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        _plot_loss(ax, model)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _default_extent(model: DiffusionModel) -> float:
    return float(3.5 * model.data_var.max().sqrt() + model.data_mean.abs().max())


def _plot_loss(ax, model):
    hist = model.history or {}
    if hist.get("loss"):
        ax.plot(hist["step"], hist["loss"])
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (xi-weighted)")
    ax.set_title(f"{model.flavour} model, schedule {model.schedule.name}")


def _plot_1d(model, theory, taus, extent):
    extent = extent or _default_extent(model)
    phi = np.linspace(-extent, extent, 401)
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for tau in taus:
        label = f"tau = {model.t_eps if tau is None else tau:g}"
        ax.plot(phi, effective_action(model, phi, tau), label=label)
    if theory is not None and not getattr(theory, "is_complex", False):
        x = torch.tensor(phi, dtype=torch.float64)[:, None]
        s = theory.action(x).detach().double().numpy()
        ax.plot(phi, s - np.interp(0.0, phi, s), "k--", label="S(phi) - S(0)")
    ax.set_xlabel("phi")
    ax.set_ylabel("S_DM(phi, tau)")
    ax.set_title("flow of the learnt effective action")
    ax.legend(fontsize=8)
    _plot_loss(ax_loss, model)
    return fig


def _plot_2d(model, extent, n_grid):
    """SBM: score field, its curl, loss. EBM: score field, energy, density (its curl is zero by
    construction; finite differences would only show grid artefacts at sharp features)."""
    extent = extent or _default_extent(model)
    xs = ys = np.linspace(-extent, extent, n_grid)
    box = (xs[0], xs[-1], ys[0], ys[-1])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    sx, sy = score_field(model, xs, ys)
    axes[0].streamplot(xs, ys, sx, sy, density=1.0, color=np.hypot(sx, sy), cmap="viridis")
    axes[0].set_title("learnt score at the end of the backward process")
    if model.flavour == "energy":
        e, p = energy_surface(model, xs, ys)
        im = axes[1].imshow(e, origin="lower", extent=box, cmap="magma", vmax=min(e.max(), 20.0))
        fig.colorbar(im, ax=axes[1])
        axes[1].set_title("energy E(x, y) - min E (colour clipped at 20)")
        im = axes[2].imshow(p, origin="lower", extent=box, cmap="magma")
        fig.colorbar(im, ax=axes[2])
        axes[2].set_title("density exp(-E) / Z")
    else:
        curl = curl_of_score(model, xs, ys)
        lim = np.abs(curl).max() or 1.0
        im = axes[1].imshow(curl, origin="lower", extent=box, cmap="RdBu", vmin=-lim, vmax=lim)
        fig.colorbar(im, ax=axes[1])
        axes[1].set_title("curl of the score (non-conservative part)")
        _plot_loss(axes[2], model)
    names = (("x = Re z", "y = Im z") if model.is_complex
             else tuple(model.settings.get("field_names") or ("phi0", "phi1")))
    for ax in axes[:3 if model.flavour == "energy" else 2]:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    return fig
