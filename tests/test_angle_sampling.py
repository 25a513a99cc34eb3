"""HMC and Langevin on angle and U(1) link fields (issue 10, item 2) against the exact values of
../shared/reference/exact.json: 2-d U(1) at L = 8, beta = 2 (<cos P>, chi_t = <Q^2>/V) and the XY
ring of 32 sites at beta = 1 (<cos(theta(x+1) - theta(x))>). Configurations come back in
[-pi, pi)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import theoryc
from conftest import REFERENCE

XY_RING = """theory xy_ring
param L = 32
lattice L
field theta : angle
param beta = 1
action = -beta * sum(x)[ cos(theta(x + e0) - theta(x)) ]
observable cos_link = mean(x)[ cos(theta(x + e0) - theta(x)) ]
"""


def exact(name):
    with open(REFERENCE) as fh:
        return json.load(fh)[name]


def within(result, value, sigmas=3.0):
    mean, error = result["mean"], result["error"]
    return abs(mean - value) < sigmas * error, f"{mean} +- {error} vs {value}"


def check_u1(sampler, n, chains, rel=None, **options):
    ref = exact("u1_2d")
    run = theoryc.sample("u1_2d", sampler=sampler, n=n, chains=chains, progress=False, **options)
    configs = np.asarray(run.configs)
    assert configs.min() >= -math.pi and configs.max() < math.pi
    summary = theoryc.measure(run, theory=theoryc.load("u1_2d")).summary
    plaq, chi = summary["observables"]["plaq"], summary["estimates"]["chi_t"]
    print(f"u1 {sampler}: plaq {plaq['mean']:.5f}({plaq['error']:.5f}) exact {ref['plaq']:.6f}; "
          f"chi_t {chi['mean']:.5f}({chi['error']:.5f}) exact {ref['chi_t']:.6f}")
    for result, value in ((plaq, ref["plaq"]), (chi, ref["chi_t"])):
        ok, text = within(result, value)
        assert ok, text
        if rel is not None:
            assert result["error"] < rel * abs(value), text


def test_u1_hmc_quick():
    """16 chains x 1000 trajectories: about 1 s."""
    check_u1("hmc", 1000, 16, warmup=200, seed=2)


def test_xy_ring_hmc_and_langevin():
    ref = exact("rotor_1d")["cos_link"]
    th = theoryc.load_text(XY_RING)
    for sampler, options in (("hmc", {"warmup": 200}), ("langevin", {"warmup": 2000, "every": 20})):
        run = theoryc.sample(th, sampler=sampler, n=1000, chains=16, seed=3, progress=False, **options)
        result = theoryc.measure(run, theory=th).summary["observables"]["cos_link"]
        ok, text = within(result, ref)
        assert ok, f"{sampler}: {text}"


@pytest.mark.slow
def test_u1_hmc_and_langevin_precise():
    """Relative errors below 1% on <cos P> and chi_t (issue 10): HMC 32 x 8000 trajectories,
    Langevin (bm, step 0.01, every 50 steps) 32 x 4000."""
    check_u1("hmc", 8000, 32, rel=0.01, warmup=300, seed=4)
    check_u1("langevin", 4000, 32, rel=0.02, warmup=5000, every=50, seed=5)
