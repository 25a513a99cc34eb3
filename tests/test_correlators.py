"""Correlators in the language: vector observables C(t), sum(r in A..B), pos(x, k), vector
estimates. The generated code (with its derived fields and factored site sums) against the
definitions written out by hand in torch, on random configurations."""
from __future__ import annotations

import math

import pytest
import torch

import theoryc
from theoryc.dsl.errors import TheoryError

PHI4 = theoryc.api.read_theory("phi4_2d")[0].decode()
CORRELATORS = """
observable C(t)  = mean(x)[ phi(x) * sum(r in 0..L-1)[ phi(x + t*e0 + r*e1) ] ]
observable G0    = volume * M^2
observable G1    = (sum(x)[ phi(x) * cos(2*pi*pos(x, 0)/L) ]^2 + sum(x)[ phi(x) * sin(2*pi*pos(x, 0)/L) ]^2) / volume
estimate m_eff(t) = log(<C(t)> / <C(t + 1)>)
estimate xi2      = sqrt(<G0> / <G1> - 1) / (2 * sin(pi / L))
"""


def random_cfg(shape, seed=0):
    return torch.randn((3, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_language_md_correlator_example_on_a_rectangular_lattice():
    """L x L with L = 6 (the example's sum over r runs to L - 1 along e1)."""
    assert PHI4.rstrip().endswith(CORRELATORS.strip())    # shipped with phi4_2d
    th = theoryc.load_text(PHI4, L=6)
    cfg = random_cfg(th.shape)
    obs = th.observables(cfg)
    phi, V, L = cfg[:, 0], 36, 6
    C = torch.stack([(phi * sum(torch.roll(phi, (-t, -r), (1, 2)) for r in range(L))).sum((1, 2)) / V
                     for t in range(L)], 1)
    torch.testing.assert_close(obs["C"], C, rtol=1e-12, atol=1e-12)
    x0 = torch.arange(L, dtype=torch.float64).reshape(1, L, 1)
    G1 = ((phi * torch.cos(2 * math.pi * x0 / L)).sum((1, 2)) ** 2 +
          (phi * torch.sin(2 * math.pi * x0 / L)).sum((1, 2)) ** 2) / V
    torch.testing.assert_close(obs["G1"], G1, rtol=1e-12, atol=1e-12)
    assert th.module.OBSERVABLE_INDICES == {"C": (0, L - 1)}
    # vector estimate: one scalar estimate per component, indices wrapping around
    assert th.module.ESTIMATE_VECTORS["m_eff"] == tuple(f"m_eff({t})" for t in range(L))
    inputs = th.estimate_inputs(obs)
    for t in range(L):
        est = th.estimates[f"m_eff({t})"]
        value = est.fn([inputs[k].mean() for k in est.inputs])
        expected = torch.log(C[:, t].mean() / C[:, (t + 1) % L].mean())
        torch.testing.assert_close(value, expected)
    est = th.estimates["xi2"]
    value = est.fn([inputs[k].mean() for k in est.inputs])
    G0 = V * phi.mean((1, 2)) ** 2
    torch.testing.assert_close(value, torch.sqrt(G0.mean() / G1.mean() - 1) / (2 * math.sin(math.pi / L)))


def test_partial_ranges_directions_and_three_dimensions():
    text = """theory c3
lattice 4 x 3 x 5
field phi : real
action = sum(x)[ phi(x)^2 ]
observable S(t) = mean(x)[ phi(x) * sum(r in 1..2)[ r * phi(x + t*e2 + r*e0) ] ]
observable W(k in 0..3) = sum(x)[ phi(x) * sum(mu)[ phi(x + k*mu) ] ] + k
observable P = sum(x)[ phi(x) * pos(x + e1, 1) * pos(x, 2) ]
observable Q(t) = S(t + 1) * 2
"""
    th = theoryc.load_text(text)
    cfg = random_cfg(th.shape, 1)
    phi = cfg[:, 0]
    obs = th.observables(cfg)
    S = torch.stack([(phi * sum(r * torch.roll(phi, (-t, -r), (3, 1)) for r in (1, 2))).mean((1, 2, 3))
                     for t in range(5)], 1)
    torch.testing.assert_close(obs["S"], S, rtol=1e-12, atol=1e-12)
    W = torch.stack([(phi * sum(torch.roll(phi, -k, d) for d in (1, 2, 3))).sum((1, 2, 3)) + k
                     for k in range(4)], 1)
    torch.testing.assert_close(obs["W"], W, rtol=1e-12, atol=1e-12)
    y = (torch.arange(3, dtype=torch.float64).reshape(1, 1, 3, 1) + 1) % 3
    z = torch.arange(5, dtype=torch.float64).reshape(1, 1, 1, 5)
    torch.testing.assert_close(obs["P"], (phi * y * z).sum((1, 2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(obs["Q"], 2 * torch.roll(S, -1, 1), rtol=1e-12, atol=1e-12)


def test_range_sums_in_the_action_are_local_and_differentiated():
    text = """theory nn
lattice 6 x 4
field phi : real
action = sum(x)[ phi(x)^2 + sum(r in 1..2)[ 0.1 * r * phi(x) * phi(x + r*e0) ] ]
"""
    th = theoryc.load_text(text)
    cfg = random_cfg(th.shape, 2).requires_grad_(True)
    phi = cfg[:, 0]
    expected = (phi**2 + sum(0.1 * r * phi * torch.roll(phi, -r, 1) for r in (1, 2))).sum((1, 2))
    torch.testing.assert_close(th.action(cfg), expected)
    grad, = torch.autograd.grad(th.action(cfg).sum(), cfg)
    torch.testing.assert_close(th.force(cfg), grad, rtol=1e-12, atol=1e-12)


def test_a_coordinate_only_observable_counts_every_site():
    th = theoryc.load_text("theory p\nlattice 4 x 3\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
                           "observable X = sum(x)[ pos(x, 0) ]\nobservable Y = mean(x)[ pos(x, 1)^2 ]\n")
    obs = th.observables(random_cfg(th.shape))
    torch.testing.assert_close(obs["X"], torch.full((3,), 3.0 * (0 + 1 + 2 + 3), dtype=torch.float64))
    torch.testing.assert_close(obs["Y"], torch.full((3,), (0 + 1 + 4) / 3, dtype=torch.float64))


BAD = {
    "theory b\nlattice 4 x 6\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable C(t) = mean(x)[ phi(x) * phi(x + t*e0) * phi(x + t*e1) ]\n": "different extents",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable C(t) = mean(x)[ phi(x) ] * t\n": "cannot be inferred",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 * pos(x, 0) ]\n": "only appear in an observable",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable C(t) = mean(x)[ phi(x) * phi(x + t*e0) ]\nestimate e = <C>\n": "is a vector",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable M = mean(x)[ phi(x) ]\nestimate e = <M(1)>\n": "is a scalar",
    "theory b\nlattice 4\nfield phi : real\nparam a = 0.5\naction = sum(x)[ phi(x)^2 ]\n"
    "observable G(r in 0..a) = 1\n": "must be an integer",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable G(r in 3..1) = 1\n": "is empty",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable C(t) = mean(x)[ phi(x) * phi(x + t*e0) ]\nestimate e(s) = <C(s + 0.5)>\n": "integer expression",
    "theory b\nlattice 4\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n"
    "observable C(t) = mean(x)[ phi(x) * phi(x + t*e0) ]\nestimate e(s) = <C(0)>\n": "cannot be inferred",
}


@pytest.mark.parametrize("text", sorted(BAD))
def test_correlator_mistakes_are_located(text):
    with pytest.raises(TheoryError) as err:
        theoryc.load_text(text, "bad.theory")
    assert BAD[text] in err.value.message and err.value.span is not None
