"""Measurement and re-measurement (`theoryc measure [--theory]`, `theoryc observe`, `theoryc.measure`).

The ensemble is a stored set of configurations with autocorrelated fluctuations (an AR(1) in the
configuration index), written with the ensemble writer: re-measurement does not care how the
configurations were made. Every check is exact up to rounding: a new observable evaluated by
--theory equals the same expression evaluated on the configurations by hand, and its error and
tau_int are the Gamma method's on that series.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import theoryc
from theoryc.cli import main
from theoryc.runtime import measure as measure_module
from theoryc.runtime.figures.ensemble import observables_figure
from theoryc.runtime.io.ensemble import SamplerRun, read_ensemble, theory_attrs, write_ensemble
from theoryc.runtime.measure import measure_observables, stored_series
from theoryc.runtime.stats.estimates import derived
from theoryc.runtime.stats.gamma import gamma_method
from theoryc.runtime.stats.summary import format_tau

CHAINS, N, L = 3, 400, 4

OTHER = """
theory phi4_other
param L = 16
lattice L x L
field phi : real
param kappa = 0.5
action = sum(x)[ -2*kappa * sum(mu)[ phi(x) * phi(x + mu) ] + phi(x)^2 ]
observable phi4 = mean(x)[ phi(x)^4 ]
observable link = mean(x)[ phi(x) * phi(x + e0) ]
observable hop = kappa * mean(x)[ phi(x) * phi(x + e0) ]
estimate ratio = <phi4> / <link>^2
"""

OTHER_FIELD = OTHER.replace("field phi", "field chi").replace("phi(", "chi(")


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THEORYC_CACHE", str(tmp_path_factory.mktemp("theoryc_cache")))
        yield


def cli(*args, expect: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, f"theoryc {' '.join(map(str, args))}\n{result.output}"
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An ensemble of phi4_2d at L = 4, kappa = 0.25 (the file records both) and OTHER.theory."""
    folder = tmp_path_factory.mktemp("measure")
    theory = theoryc.load("phi4_2d", L=L, kappa=0.25)
    rng = np.random.default_rng(0)
    x = np.empty((CHAINS, N, *theory.shape))
    x[:, 0] = rng.standard_normal((CHAINS, *theory.shape))
    for t in range(1, N):                       # autocorrelated: tau_int of phi ~ 2.3
        x[:, t] = 0.8 * x[:, t - 1] + 0.6 * rng.standard_normal((CHAINS, *theory.shape))
    x += 0.3                                    # <M> != 0: the estimates are not degenerate
    configs = torch.from_numpy(x)
    run = SamplerRun(configs=configs, stats={"dH": rng.standard_normal((CHAINS, N))},
                     summary={"acceptance": 0.9}, settings={"sampler": "test", "seed": 0})
    path = folder / "ens.h5"
    write_ensemble(path, run, measure_observables(theory, configs),
                   {**theory_attrs(theory), "sampler": "test", "seed": 0})
    other = folder / "other.theory"
    other.write_text(OTHER)
    return folder, path, other, x


def by_hand(x: np.ndarray, kappa: float = 0.25) -> dict[str, np.ndarray]:
    """OTHER's observables evaluated directly on configurations (chains, n, 1, L, L)."""
    phi = x[:, :, 0]
    link = (phi * np.roll(phi, -1, axis=2)).mean(axis=(2, 3))
    return {"phi4": (phi**4).mean(axis=(2, 3)), "link": link, "hop": kappa * link}


def test_remeasurement_equals_direct_measurement(work):
    folder, path, other, x = work
    summary = json.loads(cli("measure", path, "--theory", other, "--json").stdout)
    direct = by_hand(x)
    assert set(summary["observables"]) == set(direct)
    for name, series in direct.items():
        r = gamma_method(series)
        got = summary["observables"][name]
        assert got["mean"] == pytest.approx(r.mean, rel=1e-12, abs=1e-14), name
        assert got["error"] == pytest.approx(r.error, rel=1e-9), name
        assert got["tau_int"] == pytest.approx(r.tau_int, rel=1e-9), name
    # kappa is the ensemble's 0.25, not OTHER's default 0.5: the shared parameter is taken over
    assert summary["observables"]["hop"]["mean"] == pytest.approx(0.25 * direct["link"].mean())
    ratio = derived(lambda m: m[0] / m[1] ** 2, [direct["phi4"], direct["link"]])
    assert summary["estimates"]["ratio"]["mean"] == pytest.approx(ratio.mean, rel=1e-12)
    assert summary["estimates"]["ratio"]["error"] == pytest.approx(ratio.error, rel=1e-9)
    assert summary["sampler"] == {"acceptance": 0.9}
    # --set overrides the inherited value
    summary = json.loads(cli("measure", path, "--theory", other, "--set", "kappa=2", "--json").stdout)
    assert summary["observables"]["hop"]["mean"] == pytest.approx(2 * direct["link"].mean())


def test_observe_writes_the_same_ensemble_with_the_new_observables(work, monkeypatch):
    folder, path, other, x = work
    monkeypatch.setattr(measure_module, "BLOCK_BYTES", 7 * CHAINS * 8 * L * L)   # 7 configs a block
    out = folder / "observed.h5"
    assert "(3, 400)" in cli("observe", path, "--theory", other, "-o", out).stdout
    old, new = read_ensemble(path), read_ensemble(out)
    assert np.array_equal(new.configs, old.configs)
    assert new.stats.keys() == old.stats.keys()
    assert all(np.array_equal(new.stats[k], old.stats[k]) for k in old.stats)
    for name, series in by_hand(x).items():
        np.testing.assert_allclose(new.observables[name], series, rtol=1e-12, atol=1e-15)
    assert new.attrs["theory_name"] == "phi4_other" and new.attrs["theory_source"] == OTHER
    assert new.params["kappa"] == 0.25 and new.params["L"] == L
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    # measuring the new file is measuring the old one with --theory
    direct = json.loads(cli("measure", path, "--theory", other, "--json").stdout)
    assert json.loads(cli("measure", out, "--json").stdout) == direct


def test_mismatched_lattice_or_fields_are_refused_in_one_line(work):
    folder, path, other, _ = work
    result = cli("measure", path, "--theory", other, "--set", "L=8", expect=1)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "lattice 4 x 4 in the ensemble, 8 x 8 in the theory" in result.output
    chi = folder / "chi.theory"
    chi.write_text(OTHER_FIELD)
    result = cli("observe", path, "--theory", chi, "-o", folder / "no.h5", expect=1)
    assert result.output.count("\n") == 1
    assert "field names phi in the ensemble, chi in the theory" in result.output
    assert not (folder / "no.h5").exists()
    assert "--theory" in cli("measure", path, "--set", "L=8", expect=1).output


def test_an_ensemble_without_configurations_cannot_be_remeasured(work):
    folder, path, other, _ = work
    bare = folder / "bare.h5"
    bare.write_bytes(path.read_bytes())
    with h5py.File(bare, "r+") as f:
        del f["configs"]
    cli("measure", bare)                                     # its own observables still measure
    cli("plot", bare, "-o", folder / "bare.png")             # and plot: neither reads configs
    for args in (("measure", bare, "--theory", other), ("observe", bare, "--theory", other,
                                                        "-o", folder / "x.h5")):
        result = cli(*args, expect=1)
        assert "no configurations" in result.output and "--no-configs" in result.output
        assert result.output.count("\n") == 1


def test_plot_title_tau_is_the_tau_measure_prints(work):
    _, path, _, _ = work
    summary = json.loads(cli("measure", path, "--json").stdout)
    ens = read_ensemble(path, configs=False)
    scalars = {k: v for k, v in ens.observables.items() if v.ndim == 2}   # C(t) has its own row
    fig = observables_figure(scalars)
    titles = [ax.get_title() for ax in fig.axes[2::3]]
    assert len(titles) == len(scalars) >= 4
    for name, title in zip(scalars, titles):
        tau = summary["observables"][name]["tau_int"]
        assert tau > 1.0                                   # the series are autocorrelated
        assert title == f"autocorrelation (tau_int = {format_tau(tau)})", name
    assert format_tau(summary["observables"]["M"]["tau_int"]) in cli("measure", path).stdout


def test_api_measure_returns_arrays_summary_and_settings(work):
    _, path, other, x = work
    m = theoryc.measure(path)
    ens = read_ensemble(path, configs=False)
    assert m.observables.keys() == ens.observables.keys()
    assert all(np.array_equal(m.observables[k], ens.observables[k]) for k in ens.observables)
    assert m.summary == json.loads(cli("measure", path, "--json").stdout)
    assert m.table() == cli("measure", path).stdout.rstrip("\n")
    assert m.settings == {"sampler": "test", "seed": 0} and m.theory_name == "phi4_2d"
    re = theoryc.measure(str(path), theory=str(other), cumulants=4)
    np.testing.assert_allclose(re.observables["phi4"], by_hand(x)["phi4"], rtol=1e-12)
    assert list(re.summary["cumulants"]["link"]) == ["kappa2", "kappa3", "kappa4"]
    # a run in memory, measured with a loaded theory
    theory = theoryc.load("phi4_2d", L=L, kappa=0.25)
    run = SamplerRun(configs=torch.from_numpy(x), summary={"acceptance": 0.9})
    in_memory = theoryc.measure(run, theory=theory)
    assert in_memory.summary["observables"] == m.summary["observables"]
    assert in_memory.summary["estimates"] == m.summary["estimates"]


def test_stored_series_picks_the_stored_configurations():
    series = np.arange(20.0).reshape(2, 10)
    assert stored_series(series, 1, 10).tolist() == series.tolist()
    # save_every 3: configurations 2, 5, 8 of each chain are stored
    assert stored_series(series, 3, 3).tolist() == [[2, 5, 8], [12, 15, 18]]


def test_api_measure_takes_what_sample_returns(tmp_path):
    theory = theoryc.load("phi4_2d", L=L)
    run = theoryc.sample(theory, "hmc", n=60, chains=2, seed=1, progress=False)
    m = theoryc.measure(run, theory=theory)
    assert all(np.allclose(m.observables[k], run.observables[k], rtol=1e-12) for k in run.observables)
    # every estimate, the components m_eff(0), m_eff(1), ... of a vector estimate as one entry
    components = {c for cs in theory.estimate_vectors.values() for c in cs}
    assert set(m.summary["estimates"]) == (set(theory.estimates) - components
                                           | set(theory.estimate_vectors))
    assert len(m.summary["estimates"]["m_eff"]["mean"]) == len(theory.estimate_vectors["m_eff"])
    streamed = theoryc.sample(theory, "hmc", n=60, chains=2, seed=1, progress=False,
                              output=tmp_path / "s.h5")
    assert streamed.configs is None
    assert theoryc.measure(streamed).summary == json.loads(cli("measure", tmp_path / "s.h5",
                                                               "--json").stdout)


def test_observe_and_remeasure_memory_is_one_block_not_the_ensemble(tmp_path, monkeypatch):
    """12 MB of configurations, 1 MB blocks: numpy's peak (tracemalloc) stays a few blocks.
    The theories are loaded first: compiling or loading one is not what is measured here."""
    import tracemalloc
    theory = theoryc.load("phi4_2d", L=16)
    configs = torch.randn(3, 2000, *theory.shape, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    path = tmp_path / "big.h5"
    write_ensemble(path, SamplerRun(configs=configs), measure_observables(theory, configs),
                   theory_attrs(theory))
    total = configs.numel() * 8
    del configs
    other = (tmp_path / "other.theory")
    other.write_text(OTHER)
    other = theoryc.load(str(other), L=16)
    ens = read_ensemble(path, configs=False)
    monkeypatch.setattr(measure_module, "BLOCK_BYTES", 1 << 20)
    for act in (lambda: measure_module.write_observed(path, tmp_path / "new.h5", other, theory),
                lambda: measure_module.remeasure(path, ens, other, theory)):
        tracemalloc.start()
        act()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < total / 4, (peak, total)


def test_observe_keeps_the_stats_of_the_stored_configurations(tmp_path):
    """--save-every 3 stores configurations 2, 5, 8, ... of each chain: the new file's phi2 (the
    same expression as the sampled theory's) is the old phi2 at those indices, and so are stats."""
    theory = theoryc.load("phi4_2d", L=L)
    path = tmp_path / "every3.h5"
    theoryc.sample(theory, "hmc", n=60, chains=2, seed=2, save_every=3, progress=False, output=path)
    other = tmp_path / "phi2.theory"
    other.write_text(OTHER.replace("observable phi4 =", "observable phi2 = mean(x)[ phi(x)^2 ]\n"
                                   "observable phi4 ="))
    assert theoryc.observe(path, str(other), tmp_path / "new.h5") == (2, 20)
    old, new = read_ensemble(path, configs=False), read_ensemble(tmp_path / "new.h5", configs=False)
    np.testing.assert_allclose(new.observables["phi2"], old.observables["phi2"][:, 2::3], rtol=1e-12)
    assert all(np.array_equal(new.stats[k], old.stats[k][:, 2::3]) for k in old.stats)
    assert new.save_every == 1
