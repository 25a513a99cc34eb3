"""Ensemble files, checkpoints and measurement."""
import os

import h5py
import numpy as np
import pytest
import torch

import fakes
from theoryc.runtime.io import ensemble as ensemble_module
from theoryc.runtime.io.checkpoint import load_checkpoint, save_checkpoint
from theoryc.runtime.io.ensemble import (SamplerRun, decode_params, read_ensemble, theory_attrs,
                                      write_ensemble)
from theoryc.runtime.measure import estimate_input_series, measure_observables


def make_run(dtype=torch.float32, chains=2, n=5, shape=(1, 4, 4), log_weights=False):
    g = torch.Generator().manual_seed(0)
    configs = torch.randn((chains, n, *shape), generator=g, dtype=torch.float64)
    if dtype.is_complex:
        configs = configs + 1j * torch.randn(configs.shape, generator=g, dtype=torch.float64)
    stats = {"accept": np.random.default_rng(1).uniform(size=(chains, n)),
             "dH": np.random.default_rng(2).normal(size=(chains, n))}
    lw = np.random.default_rng(3).normal(size=(chains, n)) if log_weights else None
    return SamplerRun(configs=configs.to(dtype), stats=stats,
                      summary={"acceptance": 0.8, "log_z": {"mean": 1.5, "error": 0.1}},
                      settings={"sampler": "hmc", "seed": 7, "step_size": 0.25}, log_weights=lw)


ATTRS = {"theory_name": "complex_quartic", "theory_source": "theory complex_quartic\n",
         "params": {"sigma0": 1 + 1j, "lambda": 1.0}}


def test_round_trip_real(tmp_path):
    run = make_run(torch.float32, log_weights=True)
    obs = {"M": np.arange(10.0).reshape(2, 5), "phi2": np.ones((2, 5))}
    path = tmp_path / "ens.h5"
    write_ensemble(path, run, obs, ATTRS)
    ens = read_ensemble(path)
    assert ens.configs.dtype == np.float32
    assert np.array_equal(ens.configs, run.configs.numpy())
    assert np.array_equal(ens.observables["M"], obs["M"]) and ens.observables["M"].dtype == np.float64
    assert np.array_equal(ens.stats["dH"], run.stats["dH"])
    assert np.array_equal(ens.log_weights, run.log_weights)
    assert ens.params == {"sigma0": [1.0, 1.0], "lambda": 1.0}     # complex as [re, im]
    assert decode_params(ens.params) == ATTRS["params"]
    assert ens.settings == run.settings and ens.summary == run.summary
    assert ens.attrs["seed"] == 7 and ens.kind == "markov" and ens.attrs["sampler"] == "hmc"
    assert ens.attrs["theory_source"] == ATTRS["theory_source"]
    assert ens.attrs["theoryc_version"] and ens.attrs["created"].startswith("20")
    assert read_ensemble(path, configs=False).configs is None


def test_round_trip_complex(tmp_path):
    run = make_run(torch.complex64)
    z = run.configs.to(torch.complex128).flatten(2).mean(2).numpy()
    path = tmp_path / "cl.h5"
    write_ensemble(path, run, {"x1": z}, ATTRS)
    ens = read_ensemble(path)
    assert ens.configs.dtype == np.complex64
    assert np.array_equal(ens.configs, run.configs.numpy())
    assert ens.observables["x1"].dtype == np.complex128
    assert np.array_equal(ens.observables["x1"], z)
    assert ens.log_weights is None
    with h5py.File(path) as f:      # the layout other tools rely on
        assert set(f) == {"configs", "observables", "stats"}


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    run = make_run()
    path = tmp_path / "ens.h5"

    def explode(f, attrs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ensemble_module, "write_attrs", explode)    # fails after the arrays
    with pytest.raises(RuntimeError, match="disk full"):
        write_ensemble(path, run, {"M": np.zeros((2, 5))}, ATTRS)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path):
    run = make_run()
    path = tmp_path / "ens.h5"
    write_ensemble(path, run, {"M": np.zeros((2, 5))}, ATTRS)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="shape"):
        write_ensemble(path, run, {"M": np.zeros((3, 5))}, ATTRS)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ens.h5"]


def test_checkpoint_round_trip_and_refusal(tmp_path):
    state = {"phi": torch.randn(3, 2), "generator": torch.Generator().get_state(),
             "settings": {"n": 3, "step_size_given": None, "shape": [1, 2]}, "eps": 0.125}
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert torch.equal(back["phi"], state["phi"]) and back["settings"] == state["settings"]
    assert torch.equal(back["generator"], state["generator"]) and back["eps"] == 0.125
    torch.save({"phi": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a theoryc checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_measure_observables_in_batches():
    theory = fakes.phi4_lattice((4, 4), kappa=0.2)
    configs = torch.randn(3, 7, 1, 4, 4, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    obs = measure_observables(theory, configs, batch_size=5)
    assert set(obs) == {"M", "phi2"} and obs["M"].shape == (3, 7)
    expected = configs.flatten(2).mean(2).numpy()
    assert np.allclose(obs["M"], expected, rtol=0, atol=1e-15)
    inputs = estimate_input_series(theory, obs)
    assert np.allclose(inputs["<M^2>"], expected**2) and inputs["<abs(M)>"].shape == (3, 7)


def test_measure_complex_configs_gives_complex_observables():
    theory = fakes.quartic_0d()
    z = torch.tensor([[[0.5 + 0.1j], [1.0 - 1.0j]]], dtype=torch.complex128)   # (1, 2, 1)
    obs = measure_observables(theory, z)
    assert obs["x2"].dtype == np.complex128
    assert np.allclose(obs["x2"], (z[..., 0] ** 2).numpy())


def test_theory_attrs_of_a_theory():
    attrs = theory_attrs(fakes.quartic_0d())
    assert attrs["theory_name"] == "complex_quartic" and attrs["params"]["sigma0"] == 1 + 1j
