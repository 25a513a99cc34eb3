"""Vector observables and estimates in the runtime: stored as (chains, n, N), summarised per
component by `measure` (text tables, JSON lists, the covariance of a vector estimate), drawn by
`plot` (correlator, effective mass, plateau)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import theoryc
from theoryc.cli import main
from theoryc.runtime.io.ensemble import read_ensemble
from theoryc.runtime.measure import estimate_input_series, measure_observables
from theoryc.runtime.stats.correlators import effective_mass, plateau
from theoryc.runtime.stats.estimates import derived, linearised

L = 6


@pytest.fixture(scope="module")
def theory():
    return theoryc.load("phi4_2d", L=L)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, theory):
    path = tmp_path_factory.mktemp("vec") / "phi4.h5"
    theoryc.sample(theory, "hmc", n=300, chains=4, seed=2, output=path)
    return path


def test_streamed_ensemble_stores_a_vector_observable_per_component(ensemble, theory):
    ens = read_ensemble(ensemble)
    assert ens.observables["C"].shape == (4, 300, L)
    assert ens.observables["M"].shape == (4, 300)
    with h5py.File(ensemble) as f:
        assert f["observables/C"].shape == (4, 300, L)
    again = measure_observables(theory, ens.configs, batch_size=77)
    np.testing.assert_allclose(again["C"], ens.observables["C"], rtol=1e-12, atol=1e-14)
    assert theory.observable_indices == {"C": (0, L - 1)}
    assert theory.estimate_vectors["m_eff"] == tuple(f"m_eff({t})" for t in range(L))


def test_in_memory_write_and_observe_keep_the_vector(tmp_path, ensemble, theory):
    run = theoryc.sample(theory, "hmc", n=20, chains=2, seed=1)
    assert run.observables["C"].shape == (2, 20, L)
    out = tmp_path / "observed.h5"
    theoryc.api.observe(ensemble, "phi4_2d", out)
    np.testing.assert_allclose(read_ensemble(out, configs=False).observables["C"],
                               read_ensemble(ensemble, configs=False).observables["C"])


def test_measure_json_gives_lists_and_the_scalar_propagation_per_component(ensemble, theory):
    result = CliRunner().invoke(main, ["measure", str(ensemble), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    ens = read_ensemble(ensemble, configs=False)
    C = s["observables"]["C"]
    assert C["index"] == list(range(L)) and len(C["mean"]) == len(C["tau_int"]) == L
    for t in range(L):
        r = derived(lambda m: m[0], [ens.observables["C"][..., t]])
        assert (C["mean"][t], C["error"][t], C["tau_int"][t]) == (r.mean, r.error, r.tau_int)
    # each component of m_eff exactly as the scalar estimate m_eff(t) would be propagated
    inputs = estimate_input_series(theory, ens.observables)
    m = s["estimates"]["m_eff"]
    assert "m_eff(0)" not in s["estimates"] and m["index"] == list(range(L))
    projected = []
    for t in range(L):
        est = theory.estimates[f"m_eff({t})"]
        r = derived(est.fn, [inputs[i] for i in est.inputs])
        assert (m["mean"][t], m["error"][t], m["tau_int"][t]) == (r.mean, r.error, r.tau_int)
        projected.append(linearised(est.fn, [inputs[i] for i in est.inputs])[1][0].ravel())
    cov = np.array(m["covariance"])
    err = np.array(m["error"])
    np.testing.assert_allclose(np.diag(cov), err**2, rtol=1e-12)
    np.testing.assert_allclose(cov, np.corrcoef(projected) * np.outer(err, err), rtol=1e-10,
                               atol=1e-15)
    assert np.linalg.eigvalsh(cov).min() > -1e-12 * np.abs(cov).max()
    # the scalar estimates keep their form
    assert set(s["estimates"]["chi2"]) == {"mean", "error"}


def test_measure_prints_vectors_as_tables(ensemble):
    result = CliRunner().invoke(main, ["measure", str(ensemble)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for header in ("observable C", "estimate m_eff"):
        at = lines.index(header)
        assert lines[at + 1].split() == ["index", "value", "error", "tau_int"]
        assert [int(line.split()[0]) for line in lines[at + 2:at + 2 + L]] == list(range(L))
    assert any(line.startswith("chi2 ") for line in lines)


def test_plot_of_an_ensemble_with_a_correlator(tmp_path, ensemble):
    out = tmp_path / "fig.png"
    result = CliRunner().invoke(main, ["plot", str(ensemble), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


def test_plateau_of_a_single_exponential():
    """C(t) = exp(-m t) + exp(-m (N - t)) with independent Gaussian noise of 2% per
    configuration: the plateau starts at t = 0 (one state), ends before the periodic turn is
    resolved (t + 1 < N/2), and the fitted constant is m within 3 sigma (its error is the Gamma
    method's on the weighted mean)."""
    m, N = 0.4, 48
    t = np.arange(N)
    exact = np.exp(-m * t) + np.exp(-m * (N - t))
    rng = np.random.default_rng(0)
    C = exact * (1 + 0.02 * rng.standard_normal((4, 2000, N)))
    fit = plateau(C)
    assert fit.t_min == 0 and 5 <= fit.t_max and fit.t_max + 1 < N / 2
    assert abs(fit.mass.mean - m) < 3 * fit.mass.error
    masses = effective_mass(C)
    assert len(masses) == N - 1
    exact_m = np.log(exact[:-1] / exact[1:])
    assert all(abs(r.mean - e) < 4 * r.error for r, e in zip(masses, exact_m))


def test_vector_of_wrong_shape_is_refused(tmp_path, theory):
    from theoryc.runtime.io.ensemble import write_ensemble
    run = theoryc.sample(theory, "hmc", n=5, chains=2, seed=1)
    with pytest.raises(ValueError, match="expected"):
        write_ensemble(tmp_path / "x.h5", run, {"C": torch.zeros(2, 4, L)})


def test_plot_of_observables_whose_every_chain_ran_away(tmp_path, ensemble):
    """A row whose every chain holds a NaN or inf says so instead of failing the whole figure."""
    from theoryc.runtime.figures.ensemble import plot_ensemble
    obs = dict(read_ensemble(ensemble, configs=False).observables)
    obs["C"] = obs["C"].copy()
    obs["C"][:, 5, 0] = np.nan
    obs["M"] = obs["M"].copy()
    obs["M"][:, 3] = np.inf
    out = plot_ensemble({"observables": obs}, tmp_path / "ran_away.png")
    assert (tmp_path / "ran_away.png").stat().st_size > 10_000 and out.endswith("ran_away.png")
