"""Ensemble figures: PNGs are written for a complex 0-d CL ensemble (with the drift field) and for
real lattice ensembles; the autocorrelation estimate is checked against an AR(1) process."""
import numpy as np
import pytest
import torch

from fakes_langevin import phi4_fast, quartic_fast
from theoryc.runtime.chains.complex_langevin import run_complex_langevin
from theoryc.runtime.chains.langevin import run_langevin
from theoryc.runtime.figures.ensemble import drift_on_grid, plot_ensemble
from theoryc.runtime.stats.gamma import normalised_autocorrelation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_MAGIC


def test_complex_quartic_histogram_with_drift(tmp_path):
    theory = quartic_fast()
    run = run_complex_langevin(theory, n=20, chains=500, warmup=100, every=20, seed=1,
                               progress=False)
    path = plot_ensemble(run, tmp_path / "cl.png", drift=theory)
    assert _is_png(path)
    # and from a plain dict, without the drift panel
    assert _is_png(plot_ensemble({"configs": run.configs.numpy()}, tmp_path / "hist.png"))


def test_real_ensemble_rows_per_observable(tmp_path):
    theory = phi4_fast((8, 8), 0.2)
    run = run_langevin(theory, n=40, chains=4, warmup=100, every=10, seed=2, progress=False)
    flat = run.configs.reshape(-1, *theory.shape)
    obs = {k: v.reshape(4, 40).numpy() for k, v in theory.observables(flat).items()}
    obs["complex_one"] = obs["M"] + 1j * obs["phi2"]
    path = plot_ensemble({"configs": run.configs, "observables": obs}, tmp_path / "sub" / "r.png")
    assert _is_png(path)
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_ensemble({}, tmp_path / "empty.png")


def test_autocorrelation_of_ar1_is_geometric():
    rng = np.random.default_rng(0)
    a, chains, n = 0.8, 200, 2000
    x = np.zeros((chains, n))
    noise = rng.normal(size=(chains, n))
    for t in range(1, n):
        x[:, t] = a * x[:, t - 1] + noise[:, t]
    acf = normalised_autocorrelation(x[:, 100:], 5)
    np.testing.assert_allclose(acf, a ** np.arange(6), atol=0.01)


def test_drift_on_grid_is_the_holomorphic_drift():
    theory = quartic_fast()
    kx, ky = drift_on_grid(theory.drift, np.array([0.5, 1.0]), np.array([-0.2, 0.3]))
    z = 1.0 + 0.3j
    k = -((1 + 1j) * z + z**3)
    assert np.isclose(kx[1, 1], k.real) and np.isclose(ky[1, 1], k.imag)
    assert kx.shape == (2, 2)
    assert torch.is_tensor(theory.drift(torch.zeros(1, 1, dtype=torch.complex128)))
