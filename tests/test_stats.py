"""The statistics package (runtime/stats) against analytic results and brute-force resampling."""
import json
import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from theoryc.runtime.stats.cumulants import cumulants, cumulants_from_moments
from theoryc.runtime.stats.estimates import derived, observable_stats
from theoryc.runtime.stats.gamma import gamma_method
from theoryc.runtime.stats.summary import format_summary, format_value_error, summarize
from theoryc.runtime.io.ensemble import Ensemble
from theoryc.runtime.theory import Estimate

DOUBLE_GAUSSIAN_KAPPA = {2: 1.0625, 4: -2.0, 6: 16.0, 8: -272.0}   # mu0 = 1, s0 = 1/4 (seed)


def ar1(rho, chains, n, seed):
    """Stationary AR(1) x_t = rho x_{t-1} + e_t, unit innovations: var = 1/(1 - rho^2)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((chains, n))
    x0 = rng.standard_normal(chains) / math.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], e, axis=1, zi=(rho * x0)[:, None])[0]


def double_gaussian_samples(shape, seed, mu0=1.0, s0=0.25):
    rng = np.random.default_rng(seed)
    return rng.choice([-mu0, mu0], size=shape) + s0 * rng.standard_normal(shape)


def blocked_jackknife(fn, primaries, block):
    """Brute force: delete-one-block jackknife of f(means) (blocks within each chain)."""
    chains, n = primaries[0].shape
    nb = n // block
    sums = np.stack([a[:, :nb * block].reshape(chains, nb, block).sum(2).ravel() for a in primaries])
    count = block * sums.shape[1]
    loo = (sums.sum(1, keepdims=True) - sums) / (count - block)
    vals = np.array([fn(loo[:, j]) for j in range(sums.shape[1])])
    k = len(vals)
    return math.sqrt((k - 1) / k * np.sum(np.abs(vals - vals.mean(0)) ** 2, axis=0)) \
        if vals.ndim == 1 else np.sqrt((k - 1) / k * np.sum((vals - vals.mean(0)) ** 2, axis=0))


# ----------------------------------------------------------------------------- Gamma method

def test_gamma_method_ar1_matches_known_tau_and_error():
    rho, chains, n = 0.8, 4, 50_000
    x = ar1(rho, chains, n, seed=1)
    r = gamma_method(x)
    tau_exact = (1 + rho) / (2 * (1 - rho))                        # 4.5
    err_exact = math.sqrt(1 / (1 - rho**2) * 2 * tau_exact / (chains * n))
    assert abs(r.tau_int - tau_exact) < 3 * r.tau_int_error
    # The estimated error has a relative uncertainty ~ tau_err / (2 tau) ~ 2-3 %.
    assert abs(r.error / err_exact - 1) < 3 * r.tau_int_error / (2 * r.tau_int) + 0.01
    assert abs(r.mean) < 4 * err_exact


def test_gamma_method_uncorrelated_is_naive_error():
    x = np.random.default_rng(2).standard_normal((3, 20_000))
    r = gamma_method(x)
    assert abs(r.tau_int - 0.5) < 3 * r.tau_int_error
    assert r.error == pytest.approx(x.std() / math.sqrt(x.size), rel=0.05)


def test_gamma_method_replicas_of_different_lengths():
    x = ar1(0.5, 3, 30_000, seed=3)
    reps = [x[0], x[1, :10_000], x[2, :25_000]]
    r = gamma_method(reps)
    assert r.n == 65_000
    assert abs(r.tau_int - 1.5) < 3 * r.tau_int_error


def test_gamma_method_constant_series():
    r = gamma_method(np.full((2, 100), 3.0))
    assert (r.mean, r.error) == (3.0, 0.0)


def test_gamma_method_tau_int_of_a_long_ar1():
    """AR(1) with coefficient rho has tau_int = (1 + rho) / (2 (1 - rho)) = 1.5 for rho = 0.5."""
    rng = np.random.default_rng(0)
    x = np.zeros(200_000)
    noise = rng.normal(size=x.size)
    for i in range(1, x.size):
        x[i] = 0.5 * x[i - 1] + noise[i]
    assert gamma_method(x).tau_int == pytest.approx(1.5, rel=0.05)
    assert gamma_method(rng.normal(size=10_000)).tau_int == pytest.approx(0.5, abs=0.05)


# ----------------------------------------------------------------------- derived quantities

def test_derived_ratio_error_matches_jackknife_uncorrelated():
    rng = np.random.default_rng(4)
    g1, g2 = rng.standard_normal((2, 4, 5000))
    a, b = 1 + 0.3 * g1, 2 + 0.2 * g1 + 0.3 * g2
    r = derived(lambda m: m[0] / m[1] ** 2, [a, b])
    jack = blocked_jackknife(lambda m: m[0] / m[1] ** 2, [a, b], block=1)
    assert r.mean == pytest.approx(a.mean() / b.mean() ** 2, rel=1e-12)
    assert r.error == pytest.approx(jack, rel=0.02)
    assert abs(r.tau_int - 0.5) < 0.05


def test_derived_estimate_error_matches_blocked_jackknife_autocorrelated():
    """The phi^4 chi2 estimate V (<M^2> - <|M|>^2) on an autocorrelated magnetisation series."""
    m = 0.05 * ar1(0.7, 4, 40_000, seed=5) + 0.02
    volume = 256
    est = Estimate("chi2", ("<M^2>", "<abs(M)>"), lambda a: volume * (a[0] - a[1] ** 2))
    r = derived(est.fn, [m**2, np.abs(m)])
    jack = blocked_jackknife(lambda a: volume * (a[0] - a[1] ** 2), [m**2, np.abs(m)], block=200)
    assert r.error == pytest.approx(jack, rel=0.1)   # blocked jackknife itself is ~5-8 % uncertain
    assert r.tau_int > 1.0      # x^2 of an AR(1) has tau = (1 + rho^2)/(2 (1 - rho^2)) ~ 1.46


def test_derived_complex_primary_gives_re_im_errors():
    rng = np.random.default_rng(6)
    z = (1 + 0.5j) + 0.3 * rng.standard_normal((4, 5000)) + 0.2j * rng.standard_normal((4, 5000))
    r = derived(lambda m: m[0] ** 2, [z])
    jack = blocked_jackknife(lambda m: np.array([(m[0] + 1j * m[1]) ** 2]).view(float),
                             [z.real, z.imag], block=1)
    assert r.mean == pytest.approx(z.mean() ** 2, rel=1e-12)
    assert r.error == pytest.approx(list(jack), rel=0.03)


def test_reweighted_mean_matches_target_distribution():
    """Samples of N(0, 1) reweighted to N(0, 0.8): <x^2> -> 0.8."""
    x = np.random.default_rng(7).standard_normal((4, 20_000))
    sigma2 = 0.8
    lw = -x**2 / (2 * sigma2) + x**2 / 2
    r = observable_stats(x**2, lw)
    assert abs(r.mean - sigma2) < 4 * r.error
    assert r.error < 0.02
    k = cumulants(x, 2, log_weights=lw)["kappa2"]
    assert abs(k["mean"] - sigma2) < 4 * k["error"]


# ---------------------------------------------------------------------------------- cumulants

def test_cumulant_recursion_on_exact_moments():
    gauss = [1, 0, 1, 0, 3, 0, 15, 0, 105]
    assert np.allclose(cumulants_from_moments(gauss)[2:], [1, 0, 0, 0, 0, 0, 0], atol=1e-12)
    mu0, s0 = 1.0, 0.25    # raw moments of the double Gaussian: E (mu0 + s0 g)^k (odd ones vanish)
    mom = [sum(math.comb(k, j) * mu0 ** (k - j) * s0**j * math.prod(range(j - 1, 0, -2))
               for j in range(0, k + 1, 2)) * (k % 2 == 0) for k in range(9)]
    kappa = cumulants_from_moments(mom)
    for n, exact in DOUBLE_GAUSSIAN_KAPPA.items():
        assert kappa[n] == pytest.approx(exact, rel=1e-12)
    shifted = cumulants_from_moments([1, 2.0, 4 + 1.5])     # mean 2, variance 1.5
    assert shifted[2] == pytest.approx(1.5)


def test_cumulants_of_gaussian_samples():
    x = 1.5 * np.random.default_rng(8).standard_normal((4, 50_000))
    k = cumulants(x, 6)
    assert abs(k["kappa2"]["mean"] - 2.25) < 4 * k["kappa2"]["error"]
    for n in (3, 4, 5, 6):
        assert abs(k[f"kappa{n}"]["mean"]) < 4 * k[f"kappa{n}"]["error"]
    # Jackknife error of kappa2 against the analytic one: var(x^2)/N = 2 sigma^4 / N.
    assert k["kappa2"]["error"] == pytest.approx(math.sqrt(2 * 2.25**2 / x.size), rel=0.1)


def test_cumulants_of_exact_double_gaussian_samples():
    x = double_gaussian_samples((4, 100_000), seed=9)
    k = cumulants(x, 8)
    for n, exact in DOUBLE_GAUSSIAN_KAPPA.items():
        assert abs(k[f"kappa{n}"]["mean"] - exact) < 4 * k[f"kappa{n}"]["error"], n
    for n in (3, 5, 7):
        assert abs(k[f"kappa{n}"]["mean"]) < 4 * k[f"kappa{n}"]["error"], n
    assert k["kappa4"]["error"] < 0.02


def test_complex_cumulants_scale_as_c_to_the_n():
    """z = c x with x double-Gaussian: kappa_n(z) = c^n kappa_n(x), complex."""
    c = 1 + 0.5j
    z = c * double_gaussian_samples((4, 100_000), seed=10)
    k = cumulants(z, 6)
    for n in (2, 4, 6):
        exact = c**n * DOUBLE_GAUSSIAN_KAPPA[n]
        mean, (err_re, err_im) = k[f"kappa{n}"]["mean"], k[f"kappa{n}"]["error"]
        assert isinstance(mean, complex)
        assert abs(mean.real - exact.real) < 4 * err_re, n
        assert abs(mean.imag - exact.imag) < 4 * err_im, n


def test_cumulant_errors_grow_with_autocorrelation():
    """Blocking must see the autocorrelation: errors of an AR(1) series exceed the naive ones."""
    x = ar1(0.9, 4, 20_000, seed=11)
    naive = cumulants(x, 2, block_size=1)["kappa2"]["error"]
    blocked = cumulants(x, 2)["kappa2"]["error"]
    assert blocked > 2 * naive


# ------------------------------------------------------------------------------ summaries

def test_format_value_error():
    assert format_value_error(0.42814, 0.00052) == "0.4281(5)"
    assert format_value_error(1.0625, 0.0012) == "1.0625(12)"
    assert format_value_error(2.564, 0.035) == "2.56(4)"
    assert format_value_error(-272.3, 45.0) == "-270(50)"
    assert format_value_error(0.5, 0.0) == "0.5"
    assert format_value_error([0.4281, -0.148], [0.0005, 0.0003]) == "0.4281(5) - 0.1480(3)i"
    assert format_value_error(1.234e-7, 5e-10) == "1.234(5)e-07"


def test_summarize_shape_and_json():
    rng = np.random.default_rng(12)
    m = 0.05 * rng.standard_normal((2, 1000))
    z = (0.4 - 0.15j) + 0.1 * rng.standard_normal((2, 1000)) * (1 + 1j)
    ens = Ensemble(configs=None, observables={"M": m, "x2": z}, stats={}, log_weights=None,
                   attrs={"summary": {"acceptance": 0.8, "exp_minus_dH": {"mean": 1.0, "error": 0.01}}})
    est = {"chi2": Estimate("chi2", ("<M^2>", "<abs(M)>"), lambda a: 64 * (a[0] - a[1] ** 2))}
    out = summarize(ens, est, {"<M^2>": m**2, "<abs(M)>": np.abs(m)}, cumulants=4)
    assert set(out) == {"observables", "estimates", "cumulants", "sampler"}
    assert set(out["observables"]["M"]) == {"mean", "error", "tau_int"}
    assert set(out["estimates"]["chi2"]) == {"mean", "error"}
    assert list(out["cumulants"]["x2"]) == ["kappa2", "kappa3", "kappa4"]
    assert isinstance(out["observables"]["x2"]["mean"], list)       # complex as [re, im]
    assert len(out["observables"]["x2"]["error"]) == 2
    assert out["sampler"]["acceptance"] == 0.8
    json.loads(json.dumps(out))
    text = format_summary(out)
    assert "chi2" in text and "kappa4" in text and "acceptance" in text
