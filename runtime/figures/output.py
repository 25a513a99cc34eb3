"""Writing a figure: atomically (the one atomic writer, io/atomic.py), in the format its name says."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from theoryc.runtime.io.atomic import atomic_replace  # noqa: E402


def save_figure(fig, path, **savefig_options) -> str:
    """Write `fig` to `path` (its folder is created), complete or not at all, and close it.

    The temporary file's name does not end in the target's, so the format is passed explicitly.
    """
    path = Path(path)
    if str(path.parent):
        os.makedirs(path.parent, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        atomic_replace(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_options))
    finally:
        plt.close(fig)
    return os.fspath(path)
