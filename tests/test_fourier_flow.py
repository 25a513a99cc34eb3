"""Fourier flows (runtime/models/fourier_flow.py): the first layer is the exact free field of the
compiler's quadratic part (ESS 1, acceptance 1, log Z of the Gaussian integral), the learned
layers are bijections with exact log-dets, model files rebuild them, theories without a
quadratic part are refused in one line; slow: on the anharmonic oscillator the Fourier flow
beats the RealNVP flow of the same size and training, and its <x^2> agrees with HMC."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import theoryc
from theoryc.cli import main
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.measure import measure_observables
from theoryc.runtime.models import load_model, save_model
from theoryc.runtime.models.fourier_flow import FreeField, fourier_flow, free_log_z
from theoryc.runtime.models.sampling import sample_flow
from theoryc.runtime.models.variational import train_flow
from theoryc.runtime.stats.gamma import gamma_method


def harmonic_oscillator(N=64):
    return theoryc.load("anharmonic_oscillator", N=N, **{"lambda": 0})


def gaussian_log_z(theory) -> float:
    """log of the integral of exp(-S) for a quadratic S, from the autograd Hessian (no FFT)."""
    n = theory.volume * theory.n_fields
    H = torch.autograd.functional.hessian(
        lambda v: theory.action(v.reshape(1, *theory.shape)).sum(),
        torch.zeros(n, dtype=torch.float64))
    return 0.5 * n * math.log(2 * math.pi) - 0.5 * float(torch.logdet(H))


@pytest.mark.parametrize("theory", [harmonic_oscillator(),
                                    theoryc.load("phi4_2d", L=8, kappa=0.1, **{"lambda": 0})],
                         ids=["harmonic_oscillator", "free_phi4_2d"])
def test_first_layer_alone_is_exact_for_a_free_theory(theory):
    model = fourier_flow(theory, n_layers=0, dtype=torch.float64)
    assert isinstance(model.layers[0], FreeField)
    run = sample_flow(theory, model, 2000, seed=3, metropolis=False, progress=False)
    log_w = run.log_weights[0]
    # -S - log q = log Z for every sample: only float64 rounding (~1e-14 relative) is left
    assert np.ptp(log_w) < 1e-9
    assert run.summary["ess"] == pytest.approx(1.0, abs=1e-12)
    assert run.summary["acceptance"] == pytest.approx(1.0, abs=1e-12)
    log_z = gaussian_log_z(theory)
    assert run.summary["log_z"]["mean"] == pytest.approx(log_z, abs=1e-9)
    assert free_log_z(model.layers[0].curvature) == pytest.approx(log_z, abs=1e-9)
    chain = sample_flow(theory, model, 500, seed=4, chains=2, progress=False)
    assert chain.summary["acceptance"] == 1.0          # every IMH proposal accepted


def test_layers_are_bijections_with_the_autograd_log_det():
    theory = harmonic_oscillator(N=8)
    torch.manual_seed(0)
    model = fourier_flow(theory, n_layers=2, hidden=4, dtype=torch.float64)
    with torch.no_grad():                 # leave the identity: random mode scales and couplings
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(3, *theory.shape, dtype=torch.float64)
    x, log_q = model(z)
    back, _ = model.inverse(x)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(model.log_prob(x), log_q)
    for i in range(3):                    # log q = log N(z) - log|det dx/dz|, dx/dz by autograd
        J = torch.autograd.functional.jacobian(lambda v: model(v.reshape(1, *theory.shape))[0]
                                               .flatten(), z[i].flatten())
        expected = model.prior_log_prob(z[i:i + 1]) - torch.linalg.slogdet(J)[1]
        torch.testing.assert_close(log_q[i:i + 1], expected)


def test_model_file_rebuilds_the_flow(tmp_path):
    theory = theoryc.load("anharmonic_oscillator", N=16)
    model = train_flow(theory, steps=3, n_layers=2, hidden=4, flow="fourier", progress=False)
    path = tmp_path / "fourier.pt"
    save_model(model, path)
    again = load_model(path)
    assert again.settings["arch"] == "fourier"
    torch.testing.assert_close(again.layers[0].curvature, model.layers[0].curvature)
    x = model.sample(5, torch.Generator().manual_seed(1))[0].detach()
    torch.testing.assert_close(again.log_prob(x), model.log_prob(x))


def test_cli_train_sample_measure_harmonic_oscillator(tmp_path):
    """train --flow fourier, sample --sampler flow, measure: the user's path. A learning rate of
    1e-12 leaves the flow at its exact start, so the file round trip must keep ESS 1, acceptance
    1 and the Gaussian log Z (float64: rounding only)."""
    import json
    model, ens = str(tmp_path / "ho.pt"), str(tmp_path / "ho.h5")
    ho = ["anharmonic_oscillator", "--set", "lambda=0", "--set", "N=32"]
    runner = CliRunner()
    for args in (["train", *ho, "--model", "flow", "--flow", "fourier", "--steps", "1",
                  "--layers", "2", "--hidden", "4", "--lr", "1e-12", "--dtype", "float64",
                  "--quiet", "-o", model],
                 ["sample", *ho, "--sampler", "flow", "--model", model, "--n", "300",
                  "--chains", "3", "--quiet", "-o", ens]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    assert theoryc.api.open_ensemble(ens).observables["x2"].shape == (3, 300)   # --chains honoured
    result = runner.invoke(main, ["measure", ens, "--json"])
    sampler = json.loads(result.output)["sampler"]
    assert sampler["ess"] == pytest.approx(1.0, abs=1e-9)
    assert sampler["acceptance"] == pytest.approx(1.0, abs=1e-9)
    log_z = gaussian_log_z(theoryc.load("anharmonic_oscillator", N=32, **{"lambda": 0}))
    assert sampler["log_z"]["mean"] == pytest.approx(log_z, abs=1e-8)


def test_broken_phase_gets_the_lifted_kernel_of_fourier_acceleration():
    """K(0) = 2(1 - 2 lambda) - 8 kappa < 0 here: the first layer uses fourier_mass's lift (a
    Gaussian start, not exact) and the flow is still a proper density (finite log q, inverse)."""
    from theoryc.runtime.chains.fourier import fourier_mass
    theory = theoryc.load("phi4_2d", L=8, kappa=0.4, **{"lambda": 0.02})
    with pytest.raises(SamplerError, match="not positive"):      # min K(p) = -1.28
        fourier_mass(theory, mass2=0.0)
    model = fourier_flow(theory, n_layers=2, hidden=4, dtype=torch.float64)
    torch.testing.assert_close(model.layers[0].curvature, fourier_mass(theory))
    assert float(model.layers[0].curvature.min()) > 0
    with torch.no_grad():
        x, log_q = model.sample(16, torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.log_prob(x), log_q)
    assert torch.isfinite(log_q).all()


@pytest.mark.parametrize("name", ["phi4_0d", "xy_2d"])
def test_theories_without_a_quadratic_part_are_refused(name, tmp_path):
    with pytest.raises(SamplerError, match="no quadratic, translation-invariant part"):
        fourier_flow(theoryc.load(name))
    result = CliRunner().invoke(main, ["train", name, "--model", "flow", "--flow", "fourier",
                                       "--steps", "1", "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert "no quadratic, translation-invariant part" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_anharmonic_oscillator_fourier_flow_beats_realnvp_and_agrees_with_hmc():
    """lambda x^4, 64 time sites: the same 8 coupling layers of 16 channels, 300 steps of batch
    64 each; then exact IMH chains. Measured (2026-12-01): Fourier ESS 0.87, acceptance 0.79;
    RealNVP ESS 0.14, acceptance 0.34."""
    theory = theoryc.load("anharmonic_oscillator")
    hmc = theoryc.sample(theory, "hmc", n=2000, chains=4, warmup=300, seed=1, progress=False)
    ref = gamma_method(hmc.observables["x2"])
    summaries = {}
    for family in ("realnvp", "fourier"):
        model = train_flow(theory, steps=300, n_layers=8, hidden=16, flow=family, seed=0,
                           progress=False)
        run = sample_flow(theory, model, 2000, seed=2, chains=4, progress=False)
        summaries[family] = run.summary
    fourier, realnvp = summaries["fourier"], summaries["realnvp"]
    # ESS from 8000 proposals is known to a few per cent; the measured gap is 6x
    assert fourier["ess"] > 0.5 and fourier["ess"] > 2 * realnvp["ess"]
    assert fourier["acceptance"] > realnvp["acceptance"] + 0.2
    g = gamma_method(measure_observables(theory, run.configs)["x2"])
    # IMH is exact: <x^2> agrees with HMC within 3 combined Gamma-method sigmas
    assert abs(g.mean - ref.mean) < 3 * math.hypot(g.error, ref.error)
