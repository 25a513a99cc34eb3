"""Real Langevin (stochastic quantization) against exact results: 0-d models by quadrature, the
free field of reference/exact.json (compiled theory), the step-size bias of each scheme measured
and extrapolated, MALA's exactness, symmetry moves, refusals, runaways and checkpoint/resume.

Errors are from the spread of independent chain means (each chain >> its autocorrelation time).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from fakes import double_gaussian_0d, ising_2d, phi4_lattice, quartic_0d
from fakes_langevin import Interrupting, gaussian_fast, phi4_fast, quartic_fast
from theoryc.runtime.chains.langevin import run_langevin
from theoryc.runtime.errors import SamplerError

EXACT = json.loads((Path(__file__).resolve().parents[2] / "shared" / "reference" /
                    "exact.json").read_text())


def quartic_moment(p, sigma=1.0, lam=1.0):
    """<x^p> for S = sigma/2 x^2 + lam/4 x^4 by quadrature."""
    def weight(x):
        return math.exp(-(sigma / 2 * x * x + lam / 4 * x**4))
    z = quad(weight, -12, 12)[0]
    return quad(lambda x: x**p * weight(x), -12, 12)[0] / z


def chain_mean_error(v):
    m = np.asarray(v).mean(axis=1)
    return m.mean(), m.std(ddof=1) / math.sqrt(len(m))


def assert_close(v, exact, n_sigma, what):
    m, e = chain_mean_error(v)
    assert abs(m - exact) < n_sigma * e, f"{what}: {m:.5f} +- {e:.5f} vs exact {exact:.5f}"


# ------------------------------------------------------------------ closed-form fakes are right

def test_closed_form_drifts_match_autograd():
    x = torch.randn(16, 1, dtype=torch.float64)
    assert torch.allclose(quartic_fast(1.0, 0.7).drift(x), quartic_0d(1.0, 0.7).drift(x))
    phi = torch.randn(4, 1, 6, 8, dtype=torch.float64)
    assert torch.allclose(phi4_fast((6, 8), 0.23, 0.05).drift(phi),
                          phi4_lattice((6, 8), 0.23, 0.05).drift(phi))


# ---------------------------------------------------------------------- defaults reproduce exact

def test_0d_quartic_and_gaussian_at_default_settings():
    run = run_langevin(quartic_fast(1.0, 1.0), n=100, chains=4000, seed=1, progress=False)
    assert run.settings["scheme"] == "bm" and run.settings["step_size"] == 0.01
    x = run.configs[..., 0].numpy()
    assert_close(x**2, quartic_moment(2), 4, "<x^2>")
    assert_close(x**4, quartic_moment(4), 4, "<x^4>")
    assert_close(x, 0.0, 4, "<x>")
    g = run_langevin(gaussian_fast(2.0), n=50, chains=2000, seed=2, progress=False)
    assert_close(g.configs[..., 0].numpy() ** 2, 0.5, 4, "gaussian <x^2>")


def compiled_free_field():
    theoryc = pytest.importorskip("theoryc")
    ref = EXACT["free_scalar_2d"]
    return theoryc.load("phi4_2d", L=ref["params"]["shape"][0], kappa=ref["params"]["kappa"],
                        **{"lambda": ref["params"]["lambda"]}), ref


def test_free_field_16x16_compiled_default_scheme():
    """Compiled phi4_2d at kappa 0.2, lambda 0 (16x16): phi2 and chi2 = V <M^2> of exact.json."""
    theory, ref = compiled_free_field()
    run = run_langevin(theory, n=60, chains=48, warmup=1000, every=50, seed=3, progress=False)
    obs = theory.observables(run.configs.reshape(-1, *theory.shape))
    chains, n = run.configs.shape[:2]
    phi2 = obs["phi2"].reshape(chains, n).numpy()
    chi2 = theory.volume * obs["M"].reshape(chains, n).numpy() ** 2
    assert_close(phi2, ref["phi2"], 4, "phi2")
    assert_close(chi2, ref["chi2"], 4, "chi2")


def test_mala_is_exact_at_a_large_step():
    """At eps = 0.25 EM is off by ~10% on the quartic; MALA's Metropolis test removes the bias."""
    run = run_langevin(quartic_fast(1.0, 1.0), n=50, chains=4000, warmup=200, every=4,
                       step=0.25, scheme="mala", seed=4, progress=False)
    assert 0.5 < run.summary["acceptance"] < 1.0
    assert_close(run.configs[..., 0].numpy() ** 2, quartic_moment(2), 4, "MALA <x^2>")
    assert_close(run.configs[..., 0].numpy() ** 4, quartic_moment(4), 4, "MALA <x^4>")


def test_mala_tunes_its_step_on_a_lattice_with_the_autograd_fake():
    theory = phi4_lattice((8, 8), kappa=0.2)
    run = run_langevin(theory, n=40, chains=32, warmup=400, every=10, scheme="mala", seed=5,
                       progress=False)
    assert abs(run.summary["acceptance"] - 0.6) < 0.1
    assert run.summary["step_size"] != 0.01
    x = run.configs[:, :, 0]
    # 8x8 free field: G(0) = (1/V) sum_p 1/(2 - 4 kappa sum_mu cos p_mu)
    p = 2 * np.pi * np.arange(8) / 8
    g0 = np.mean(1 / (2 - 4 * 0.2 * (np.cos(p)[:, None] + np.cos(p)[None, :])))
    assert_close((x**2).mean((2, 3)).numpy(), g0, 4, "MALA phi2 8x8")


# ------------------------------------------------------------------------ step-size bias orders

def fit_bias(scheme, steps, chains, seed=7):
    """<x^2>(eps) on the quartic at several eps; weighted fit a + b eps + c eps^2."""
    means, errors = [], []
    for eps in steps:
        run = run_langevin(quartic_fast(1.0, 1.0), n=40, chains=chains, seed=seed,
                           warmup=int(round(2 / eps)), every=int(round(0.25 / eps)), step=eps,
                           scheme=scheme, progress=False)
        m, e = chain_mean_error(run.configs[..., 0].numpy() ** 2)
        means.append(m)
        errors.append(e)
    eps, means, errors = (np.asarray(v) for v in (steps, means, errors))
    design = np.stack([np.ones_like(eps), eps, eps**2], 1) / errors[:, None]
    cov = np.linalg.inv(design.T @ design)
    coef = cov @ design.T @ (means / errors)
    return coef, np.sqrt(np.diag(cov))


STEPS = (0.02, 0.04, 0.06, 0.08)   # EM/Heun start to run away on x^3 drifts above ~0.1


@pytest.mark.parametrize("chains", [100_000, pytest.param(400_000, marks=pytest.mark.slow)])
def test_step_size_bias_is_linear_for_em_and_quadratic_for_second_order(chains):
    exact = quartic_moment(2)
    (a, b, c), (ea, eb, ec) = fit_bias("em", STEPS, chains)
    assert abs(a - exact) < 3 * ea, f"EM eps->0: {a} +- {ea} vs {exact}"
    assert b > 4 * eb, f"EM linear bias coefficient {b} +- {eb} should be clearly nonzero"
    (a, b, c), (ea, eb, ec) = fit_bias("rk2", STEPS, chains)
    assert abs(a - exact) < 3 * ea and abs(b) < 3 * eb, f"rk2: a={a}+-{ea} b={b}+-{eb}"
    assert abs(c) > 3 * ec, f"rk2 quadratic bias {c} +- {ec} should be visible"
    (a, b, c), (ea, eb, ec) = fit_bias("bm", STEPS, chains)
    assert abs(a - exact) < 3 * ea and abs(b) < 3 * eb, f"bm: a={a}+-{ea} b={b}+-{eb}"


# --------------------------------------------------------------------------- moves and refusals

def test_symmetry_moves_mix_the_modes_of_a_double_gaussian():
    """Barrier ~ e^7: without the x -> -x move chains stay in their mode; with it <x> = 0.
    kappa2 = mu0^2 + s0^2 either way (reference: double_gaussian)."""
    theory = double_gaussian_0d(1.0, 0.25)
    kw = dict(n=100, chains=400, warmup=500, every=20, seed=6, progress=False)
    mixed = run_langevin(theory, **kw).configs[..., 0].numpy()
    stuck = run_langevin(theory, symmetrize=False, **kw).configs[..., 0].numpy()
    # without the move chains rarely cross (chain means ~ +-1); with it they sample both modes
    assert stuck.mean(1).std() > 0.8 and mixed.mean(1).std() < 0.2
    assert_close(mixed, 0.0, 4, "<x> with symmetry moves")
    assert_close(mixed**2, EXACT["double_gaussian"]["cumulants"]["kappa2"], 4, "<x^2>")


def test_refusals():
    with pytest.raises(SamplerError, match="spin"):
        run_langevin(ising_2d(), n=2, chains=2, progress=False)
    with pytest.raises(SamplerError, match="complex Langevin only"):
        run_langevin(quartic_fast(1.0, 1.0), n=2, chains=2, noise_imag=0.5, progress=False)
    with pytest.raises(SamplerError, match="scheme"):
        run_langevin(quartic_fast(1.0, 1.0), n=2, chains=2, scheme="leapfrog", progress=False)


def test_runaway_chains_are_dropped_and_reported():
    """EM at eps = 0.3 on an x^3 drift: chains that wander past |x| ~ 1.5 blow up to inf/NaN."""
    run = run_langevin(quartic_fast(1.0, 1.0), n=20, chains=2000, warmup=50, every=5, step=0.3,
                       scheme="em", seed=8, max_bad_fraction=1.0, progress=False)
    assert run.summary["n_bad_chains"] > 0
    assert run.configs.shape[0] == 2000 - run.summary["n_bad_chains"]
    assert torch.isfinite(run.configs).all()
    with pytest.raises(SamplerError, match="ran away"):
        run_langevin(quartic_fast(1.0, 1.0), n=5, chains=20, warmup=5, every=5, step=3.0,
                     scheme="em", seed=8, progress=False)



@pytest.mark.parametrize("scheme", ["bm", "mala"])
def test_checkpoint_resume_is_bitwise_identical(tmp_path, scheme):
    theory = phi4_fast((4, 4), 0.2, 0.02)
    kw = dict(n=12, chains=8, warmup=40, every=10, seed=9, scheme=scheme, progress=False)
    full = run_langevin(theory, **kw)
    path = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        run_langevin(Interrupting(theory, 120), checkpoint=path, checkpoint_every=3, **kw)
    assert path.exists()
    resumed = run_langevin(theory, checkpoint=path, checkpoint_every=3, resume=True, **kw)
    assert torch.equal(full.configs, resumed.configs)
    for k in full.stats:
        np.testing.assert_array_equal(full.stats[k], resumed.stats[k])


def test_float32_runs_and_keeps_dtype():
    run = run_langevin(phi4_fast((4, 4), 0.2), n=5, chains=4, warmup=10, every=5,
                       dtype=torch.float32, seed=1, progress=False)
    assert run.configs.dtype == torch.float32 and run.configs.shape == (4, 5, 1, 4, 4)
