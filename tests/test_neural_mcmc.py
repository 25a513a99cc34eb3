"""Independent Metropolis and reweighting diagnostics, checked where everything is analytic.

With the untrained flow q = N(0, 1) and the 0-d Gaussian S = m2/2 x^2 (fakes.gaussian_0d):
log w = -S - log q = (1 - m2)/2 x^2 + log sqrt(2 pi), so for m2 = 2:
Z = sqrt(pi), ESS = E[w]^2 / E[w^2] = sqrt(3)/2, F_q = E_q[S + log q] = 1/2 - log sqrt(2 pi).
"""
import math

import numpy as np
import pytest
import torch

import fakes
from theoryc.runtime.models.flow import build_flow
from theoryc.runtime.models.sampling import imh_chain, sample_flow
from theoryc.runtime.stats.gamma import gamma_method
from theoryc.runtime.stats.reweighting import (expected_imh_acceptance, free_energy, kish_ess,
                                               log_z_estimate)


def test_kish_ess_simple_cases():
    assert kish_ess(np.zeros(10)) == pytest.approx(1.0)
    assert kish_ess(np.log([1.0, 3.0])) == pytest.approx(16 / 20)
    assert kish_ess(np.array([0.0, -800.0, -800.0])) == pytest.approx(1 / 3)   # no underflow trouble


def test_imh_chain_by_hand():
    log_w = np.log([1.0, 0.5, 2.0, 1.0])
    # step 1: ratio 0.5, u = 0.6 rejects; step 2: ratio 2 accepts; step 3: ratio 0.5, u = 0.4 accepts
    index, accepted = imh_chain(log_w, [0.5, 0.6, 0.9, 0.4])
    assert index.tolist() == [0, 0, 2, 3]
    assert accepted.tolist() == [True, False, True, True]


@pytest.fixture(scope="module")
def gaussian_runs():
    theory = fakes.gaussian_0d(mass2=2.0)
    flow = build_flow((1,), dtype=torch.float64)   # untrained: q = N(0, 1)
    chain = sample_flow(theory, flow, 40_000, seed=0, progress=False)
    weighted = sample_flow(theory, flow, 40_000, seed=1, metropolis=False, progress=False)
    return chain, weighted


def test_metropolis_chain_is_exact(gaussian_runs):
    chain, _ = gaussian_runs
    assert chain.kind == "markov" and chain.configs.shape == (1, 40_000, 1)
    x2 = chain.configs[0, :, 0].numpy() ** 2
    error = x2.std() * math.sqrt(2 * gamma_method(x2).tau_int / len(x2))
    assert abs(x2.mean() - 0.5) < 3 * error
    assert chain.stats["accepted"].mean() == pytest.approx(chain.summary["acceptance"], abs=1e-4)


def test_log_z_ess_and_free_energy_are_analytic(gaussian_runs):
    for run in gaussian_runs:
        s = run.summary
        assert abs(s["log_z"]["mean"] - 0.5 * math.log(math.pi)) < 3 * s["log_z"]["error"]
        exact_f = 0.5 - 0.5 * math.log(2 * math.pi)
        assert abs(s["free_energy"]["mean"] - exact_f) < 3 * s["free_energy"]["error"]
    # ESS of the proposals: the spread over 20 blocks of 2000 measures its statistical error.
    weighted = gaussian_runs[1]
    blocks = [kish_ess(b) for b in np.array_split(weighted.log_weights[0], 20)]
    assert abs(weighted.summary["ess"] - math.sqrt(3) / 2) < 4 * np.std(blocks) / math.sqrt(20)


def test_expected_acceptance_matches_the_chain(gaussian_runs):
    chain, weighted = gaussian_runs
    blocks = [expected_imh_acceptance(b) for b in np.array_split(weighted.log_weights[0], 10)]
    estimate, estimate_error = np.mean(blocks), np.std(blocks) / math.sqrt(10)
    acc = chain.stats["accepted"][0]
    error = acc.std() * math.sqrt(2 * gamma_method(acc).tau_int / len(acc))
    assert abs(estimate - chain.summary["acceptance"]) < 3 * math.hypot(error, estimate_error)


def test_diagnostics_accept_torch_tensors():
    log_w = torch.tensor([0.0, 0.1, -0.2], dtype=torch.float32)
    assert kish_ess(log_w) == pytest.approx(kish_ess(log_w.numpy()))
    assert log_z_estimate(log_w)["mean"] == pytest.approx(
        math.log(np.exp(log_w.double().numpy()).mean()))
    assert free_energy(log_w)["mean"] == pytest.approx(-float(log_w.double().mean()))


def test_complex_theory_is_refused():
    theory = fakes.quartic_0d()
    with pytest.raises(ValueError, match="real action"):
        sample_flow(theory, build_flow((1,)), 10, progress=False)
