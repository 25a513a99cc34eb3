"""Training curves of a flow or VAN (matplotlib, Agg backend: works without a screen)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from theoryc.runtime.figures.output import save_figure  # noqa: E402


def plot_training(model, path) -> str:
    """A flow's or VAN's training curves (from the model file's history): the variational free
    energy F_q (an upper bound on -log Z), the effective sample size per sample and the expected
    independent-Metropolis acceptance, against the training step."""
    history = (getattr(model, "meta", {}) or {}).get("history", {}) or {}
    steps = np.asarray(history.get("step", []))
    curves = [(k, label) for k, label in (("free_energy", "F_q = E_q[S + log q]"), ("ess", "ESS per sample"),
                                          ("acceptance", "Metropolis acceptance")) if len(history.get(k, []))]
    if not curves or not len(steps):
        raise ValueError("the model file holds no training history to plot")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], curves):
        ax.plot(steps, np.asarray(history[key], dtype=float), lw=1)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{getattr(model, 'kind', 'model')} training", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
