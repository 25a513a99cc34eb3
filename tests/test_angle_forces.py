"""Forces of angle and U(1) link theories (issue 10): the generated force equals autograd of the
generated action and a finite-difference derivative, for the shipped XY and U(1) theories and for
randomly generated periodic (angle) and gauge-invariant (link) local actions; the generated action
and observables of a `gauge` theory are unchanged by random gauge transformations
A(x, mu) -> A(x, mu) + w(x + mu) - w(x), and every action by 2 pi shifts of single angles.
The finite-difference and autograd checks and their tolerances are test_forces.py's.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import theoryc
from conftest_compiler import load, private_cache  # noqa: F401  (the fixture applies to this module)
from test_forces import assert_force_correct
from theoryc.dsl.errors import TheoryError

DTYPE = torch.float64
SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# smooth 2 pi-periodic functions of an integer combination of angles
PERIODIC = ("cos({})", "sin({})", "cos(2 * ({}))", "sin({})^2", "exp(cos({}))",
            "log(2 + sin({}))", "sqrt(3 + cos({}))", "cos({}) * sin({})")


def uniform_angles(theory, batch=3, seed=0):
    """Angles anywhere on the real line (not only in [-pi, pi)): the action must not care."""
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand((batch, *theory.shape), generator=g, dtype=DTYPE) - 1) * 4.0


def gauge_transform(cfg, w):
    """A(x, mu) -> A(x, mu) + w(x + mu) - w(x); cfg[:, mu] is direction mu, w (batch, *lattice)."""
    return torch.stack([cfg[:, mu] + torch.roll(w, -1, mu + 1) - w for mu in range(cfg.shape[1])], 1)


def assert_periodic(theory, cfg, seed=1):
    """S(theta + 2 pi n) = S(theta) for random integer n per component (float64 rounding)."""
    g = torch.Generator().manual_seed(seed)
    turns = torch.randint(-2, 3, cfg.shape, generator=g).to(DTYPE)
    s = theory.action(cfg)
    torch.testing.assert_close(theory.action(cfg + 2 * math.pi * turns), s, rtol=1e-12,
                               atol=1e-11 * max(1.0, s.abs().max().item()))


def assert_gauge_invariant(theory, cfg, seed=2):
    """Action and observables unchanged by a random gauge transformation (float64 rounding)."""
    g = torch.Generator().manual_seed(seed)
    w = 3 * torch.randn((cfg.shape[0], *theory.lattice), generator=g, dtype=DTYPE)
    moved = gauge_transform(cfg, w)
    assert not torch.allclose(moved, cfg)
    s = theory.action(cfg)
    torch.testing.assert_close(theory.action(moved), s, rtol=1e-12,
                               atol=1e-11 * max(1.0, s.abs().max().item()))
    before, after = theory.observables(cfg), theory.observables(moved)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=1e-10, atol=1e-10, msg=name)


# ---- shipped theories -------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [("xy_2d", {"L": 4}), ("xy_2d", {"L": 3, "beta": 2.5}),
                                          ("u1_2d", {"L": 4}), ("u1_2d", {"L": 3, "beta": 5})])
def test_shipped_angle_force_matches_autograd_and_finite_differences(name, params):
    theory = theoryc.load(name, **params)
    cfg = uniform_angles(theory)
    assert_force_correct(theory, cfg)
    assert_periodic(theory, cfg)
    if theory.gauge:
        assert_gauge_invariant(theory, cfg)


# ---- random angle theories --------------------------------------------------------------------
ANGLE_NAMES = ("theta", "phi", "t", "s0")


@st.composite
def angle_theories(draw):
    """A random local action of 1-2 angle fields on a 1-3 dimensional lattice: sums of products
    of periodic functions of integer combinations of angles at random shifts."""
    dim = draw(st.integers(1, 3))
    extents = draw(st.lists(st.integers(2, 4), min_size=dim, max_size=dim))
    fields = draw(st.lists(st.sampled_from(ANGLE_NAMES), min_size=1, max_size=2, unique=True))
    fixed = [""] + [f" {sign} e{k}" for k in range(dim) for sign in "+-"]
    with_mu = fixed + [" + mu", " - mu", " + 2*mu"]

    def angle(shifts):
        return f"{draw(st.sampled_from(fields))}(x{draw(st.sampled_from(shifts))})"

    def combination(shifts):
        n = draw(st.integers(1, 3))
        coefficients = draw(st.lists(st.sampled_from(("", "2 * ", "-", "- 3 * ")), min_size=n,
                                     max_size=n))
        return " + ".join(f"{c}{angle(shifts)}" for c in coefficients).replace("+ -", "- ")

    def term(shifts):
        coefficient = draw(st.sampled_from(("0.5", "-1", "beta", "(1 + beta)", "1/3")))
        factors = [draw(st.sampled_from(PERIODIC)).format(*[combination(shifts)] * 2)
                   for _ in range(draw(st.integers(1, 2)))]
        return " * ".join([coefficient] + factors)

    density = [term(fixed) for _ in range(draw(st.integers(1, 2)))]
    density.append(f"sum(mu)[ {term(with_mu)} * cos({fields[0]}(x + mu) - {fields[-1]}(x)) ]")
    action = f"sum(x)[ {' + '.join(density)} ]"
    if draw(st.booleans()):
        action += f" + 0.7 * (mean(x)[ cos({fields[0]}(x)) ])^2"
    lines = ["theory random_angles", "param beta = 0.8",
             "lattice " + " x ".join(map(str, extents)), f"field {', '.join(fields)} : angle",
             "action = " + action, f"observable c = mean(x)[ cos({fields[-1]}(x)) ]"]
    return "\n".join(lines) + "\n"


@settings(max_examples=15, **SETTINGS)
@given(angle_theories())
def test_random_angle_action_force(text):
    try:
        theory = load(text)
    except TheoryError as err:
        pytest.fail(f"a valid theory was refused:\n{text}\n{err.format()}")
    cfg = uniform_angles(theory, seed=len(text))
    assert_force_correct(theory, cfg)
    assert_periodic(theory, cfg)


# ---- random gauge theories --------------------------------------------------------------------
LOOPS = {
    "P": "let P(x, mu, nu) = A(x, mu) + A(x + mu, nu) - A(x + nu, mu) - A(x, nu)",
    # the 2 x 1 rectangle in the (mu, nu) plane
    "R": "let R(x, mu, nu) = A(x, mu) + A(x + mu, mu) + A(x + 2*mu, nu) - A(x + mu + nu, mu)"
         " - A(x + nu, mu) - A(x, nu)",
}


@st.composite
def gauge_theories(draw):
    """A random gauge-invariant local action of a U(1) link field on a 2-3 dimensional lattice:
    sums of products of periodic functions of integer combinations of plaquettes and 2 x 1
    rectangles at shifted sites and in every plane."""
    dim = draw(st.integers(2, 3))
    extents = draw(st.lists(st.integers(2, 4), min_size=dim, max_size=dim))
    shifts = [""] + [f" {sign} e{k}" for k in range(dim) for sign in "+-"] + [" + mu", " - nu"]
    planes = ["mu, nu", "nu, mu", "e0, e1", f"e{dim - 1}, mu"]

    def loop():
        name = draw(st.sampled_from(sorted(LOOPS)))
        return f"{name}(x{draw(st.sampled_from(shifts))}, {draw(st.sampled_from(planes))})"

    def combination():
        first = loop()
        return first if draw(st.booleans()) else f"{first} {draw(st.sampled_from('+-'))} {loop()}"

    def term():
        coefficient = draw(st.sampled_from(("-beta", "0.5", "(1 + beta)", "-1/3")))
        factors = [draw(st.sampled_from(PERIODIC)).format(*[combination()] * 2)
                   for _ in range(draw(st.integers(1, 2)))]
        return " * ".join([coefficient] + factors)

    density = [f"sum(mu < nu)[ {term()} * (2 + sin(P(x, mu, nu))) ]"]
    if draw(st.booleans()):
        density.append(f"sum(mu)[ sum(nu)[ {term()} * cos(R(x, nu, mu)) ] ]")
    action = f"sum(x)[ {' + '.join(density)} ]"
    if draw(st.booleans()):
        action += " + 0.3 * (mean(x)[ sum(mu < nu)[ sin(P(x, mu, nu)) ] ])^2"
    lines = ["theory random_gauge", "param beta = 1.3",
             "lattice " + " x ".join(map(str, extents)), "link A : angle", "gauge A",
             *LOOPS.values(), "action = " + action,
             "observable w = mean(x)[ sum(mu < nu)[ cos(R(x, mu, nu)) ] ]",
             "observable q = sum(x)[ wrap(P(x, e0, e1)) ] / (2 * pi)"]
    return "\n".join(lines) + "\n"


@settings(max_examples=10, **SETTINGS)
@given(gauge_theories())
def test_random_gauge_action_force_and_gauge_invariance(text):
    try:
        theory = load(text)
    except TheoryError as err:
        pytest.fail(f"a valid theory was refused:\n{text}\n{err.format()}")
    assert theory.gauge == ("A",)
    cfg = uniform_angles(theory, seed=len(text))
    assert_force_correct(theory, cfg)
    assert_periodic(theory, cfg)
    assert_gauge_invariant(theory, cfg)


def test_gauge_check_would_see_a_gauge_variant_term():
    """The gauge check above can fail: adding cos(A(x, e0)) (allowed without `gauge A`) changes
    the action under the same random transformation."""
    text = ("theory variant\nlattice 3 x 4\nlink A : angle\n" + LOOPS["P"] + "\n"
            "action = -sum(x)[ sum(mu < nu)[ cos(P(x, mu, nu)) ] + 0.1 * cos(A(x, e0)) ]\n")
    theory = load(text)
    cfg = uniform_angles(theory)
    assert_force_correct(theory, cfg)
    w = 3 * torch.randn((cfg.shape[0], *theory.lattice), generator=torch.Generator().manual_seed(2),
                        dtype=DTYPE)
    assert not torch.allclose(theory.action(gauge_transform(cfg, w)), theory.action(cfg))
