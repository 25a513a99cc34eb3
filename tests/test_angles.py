"""Angle fields, U(1) link fields, gauge, let, sum(mu < nu), wrap: what the compiler derives
(forces against autograd, gauge invariance and periodicity of the generated code at random
points) and what it refuses (located messages)."""
from __future__ import annotations

import math

import pytest
import torch

import theoryc
from conftest_compiler import language_examples
from theoryc.dsl.errors import TheoryError

EXAMPLES = language_examples()
U1_3D = """theory u1_3d
lattice 4 x 3 x 5
link A : angle
gauge A
param beta = 1.3
let P(x, mu, nu) = A(x, mu) + A(x + mu, nu) - A(x + nu, mu) - A(x, nu)
action = -beta * sum(x)[ sum(mu < nu)[ cos(P(x, mu, nu)) ] ]
observable plaq = mean(x)[ sum(mu < nu)[ cos(P(x, mu, nu)) ] ] / (dim * (dim - 1) / 2)
observable Q01 = sum(x)[ wrap(P(x, e0, e1)) ] / (2 * pi)
observable W = mean(x)[ cos(A(x, e0) + A(x + e0, e0) + A(x + 2*e0, e0) + A(x + 3*e0, e0)) ]
"""
needs_examples = pytest.mark.skipif("u1_2d" not in EXAMPLES, reason="LANGUAGE.md is absent")


def random_angles(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((3, *shape), generator=gen, dtype=torch.float64) * 2 - 1) * math.pi


def gauge_transform(cfg, w):
    """A(x, mu) -> A(x, mu) + w(x + mu) - w(x); cfg[:, mu] is direction mu."""
    return torch.stack([cfg[:, mu] + torch.roll(w, -1, mu + 1) - w for mu in range(cfg.shape[1])], 1)


def u1_theories():
    return {"u1_2d": theoryc.load_text(EXAMPLES["u1_2d"]) if "u1_2d" in EXAMPLES else None,
            "u1_3d": theoryc.load_text(U1_3D)}


@pytest.mark.parametrize("name", ["u1_2d", "u1_3d"])
def test_u1_force_equals_autograd_and_action_is_gauge_invariant(name):
    th = u1_theories()[name]
    if th is None:
        pytest.skip("LANGUAGE.md is absent")
    assert th.field_names == tuple(f"A:{mu}" for mu in range(len(th.lattice)))
    assert th.field_kinds == ("angle",) * len(th.lattice) and th.gauge == ("A",)
    cfg = random_angles(th.shape).requires_grad_(True)
    grad, = torch.autograd.grad(th.action(cfg).sum(), cfg)
    torch.testing.assert_close(th.force(cfg), grad, rtol=1e-12, atol=1e-12)
    cfg = cfg.detach()
    w = torch.randn((3, *th.lattice), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3
    moved = gauge_transform(cfg, w)
    torch.testing.assert_close(th.action(moved), th.action(cfg), rtol=1e-12, atol=1e-10)
    for k, v in th.observables(moved).items():
        torch.testing.assert_close(v, th.observables(cfg)[k], rtol=1e-10, atol=1e-10, msg=k)
    shifted = cfg + 2 * math.pi * torch.randint(-2, 3, cfg.shape, generator=torch.Generator().manual_seed(2),
                                                dtype=torch.float64)
    torch.testing.assert_close(th.action(shifted), th.action(cfg), rtol=1e-12, atol=1e-10)


@needs_examples
def test_u1_plaquette_and_integer_topological_charge():
    th = theoryc.load_text(EXAMPLES["u1_2d"])
    cfg = random_angles(th.shape, 3)
    a0, a1 = cfg[:, 0], cfg[:, 1]
    P = a0 + torch.roll(a1, -1, 1) - torch.roll(a0, -1, 2) - a1
    obs = th.observables(cfg)
    torch.testing.assert_close(obs["plaq"], torch.cos(P).mean((1, 2)))
    torch.testing.assert_close(th.action(cfg), -2 * torch.cos(P).sum((1, 2)))
    Q = obs["Q"]
    torch.testing.assert_close(Q, torch.round(Q), atol=1e-9, rtol=0)    # periodic lattice: Q is an integer
    wrapped = torch.remainder(P + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(Q, wrapped.sum((1, 2)) / (2 * math.pi))


@needs_examples
def test_xy_model_force_and_observables():
    th = theoryc.load_text(EXAMPLES["xy_2d"], L=6)
    cfg = random_angles(th.shape, 4).requires_grad_(True)
    grad, = torch.autograd.grad(th.action(cfg).sum(), cfg)
    torch.testing.assert_close(th.force(cfg), grad, rtol=1e-12, atol=1e-12)
    t = cfg.detach()[:, 0]
    e = sum(torch.cos(torch.roll(t, -1, d) - t) for d in (1, 2)).mean((1, 2)) / 2
    torch.testing.assert_close(th.observables(cfg.detach())["e"], e)
    assert th.field_kinds == ("angle",) and len(th.symmetries) == 1


BAD = {
    "theory b\nlattice 4\nfield t : angle\naction = sum(x)[ t(x)^2 ]\n": "not 2 pi-periodic",
    "theory b\nlattice 4\nfield t : angle\naction = sum(x)[ cos(t(x)) ]\nobservable o = mean(x)[ t(x) ]\n":
        "not 2 pi-periodic",
    "theory b\nlattice 4\nfield t : angle\naction = sum(x)[ wrap(t(x))^2 ]\n": "wrap(...) jumps",
    "theory b\nlattice 4 x 4\nlink A : angle\ngauge A\naction = -sum(x)[ cos(A(x, e0) - A(x, e1)) ]\n":
        "not invariant under gauge",
    "theory b\nlattice 4 x 4\nlink A : angle\ngauge A\naction = -sum(x)[ cos(A(x, e0) + A(x + e0, e1) - A(x + e1, e0) - A(x, e1)) ]\n"
    "observable o = mean(x)[ cos(A(x, e0)) ]\n": "not invariant under gauge",
    "theory b\nlattice 4 x 4\nlink A : angle\nlet P(x, mu) = A(x, mu)\naction = sum(x)[ cos(P(x, e0, e1)) ]\n":
        "takes 2 arguments, not 3",
    "theory b\nlattice 4\nlink A : angle\naction = -sum(x)[ sum(mu < nu)[ cos(A(x, mu) - A(x, nu)) ] ]\n":
        "needs two directions",
    "theory b\nlattice 4\nfield phi : real\ngauge phi\naction = sum(x)[ phi(x)^2 ]\n": "is not a link field",
    "theory b\nlink A : angle\naction = 0\n": "needs a lattice",
    "theory b\nlattice 4 x 4\nlink A : angle\naction = sum(x)[ cos(A(x)) ]\n": "takes a site and a direction",
    "theory b\nlattice 4 x 4\nfield phi : real\nlet h(x) = phi(x + mu)\naction = sum(x)[ h(x)^2 ]\n":
        "neither an argument",
    "theory b\nlattice 4 x 4\nlink A : angle\nsymmetry A -> -A\naction = -sum(x)[ cos(A(x, e0)) ]\n":
        "not supported",
}


@pytest.mark.parametrize("text", sorted(BAD))
def test_angle_and_gauge_mistakes_are_located(text):
    with pytest.raises(TheoryError) as err:
        theoryc.load_text(text, "bad.theory")
    assert BAD[text] in err.value.message and err.value.span is not None, err.value.format()


def test_let_without_arguments_and_nested_definitions():
    text = """theory l
lattice 5 x 4
field phi : real
param m = 0.7
let h = m^2 / 2
let K(x, mu) = phi(x + mu) - phi(x)
let kin(x) = sum(mu)[ K(x, mu)^2 ] / 2
action = sum(x)[ kin(x) + h * phi(x)^2 ]
"""
    th = theoryc.load_text(text)
    cfg = torch.randn((3, *th.shape), dtype=torch.float64, requires_grad=True)
    phi = cfg[:, 0]
    expected = (sum((torch.roll(phi, -1, d) - phi) ** 2 for d in (1, 2)) / 2 + 0.245 * phi**2).sum((1, 2))
    torch.testing.assert_close(th.action(cfg), expected)
    grad, = torch.autograd.grad(th.action(cfg).sum(), cfg)
    torch.testing.assert_close(th.force(cfg), grad)


def test_wrap_of_constants_and_of_shifted_angles():
    th = theoryc.load_text("theory w\nlattice 4\nfield t : angle\nparam a = 7\naction = -sum(x)[ cos(t(x)) ]\n"
                           "observable o = wrap(7) + wrap(a)\nobservable p = mean(x)[ wrap(t(x) + 2*pi) ]\n")
    cfg = random_angles(th.shape, 6)
    obs = th.observables(cfg)
    torch.testing.assert_close(obs["o"], torch.full((3,), 2 * (7 - 2 * math.pi), dtype=torch.float64))
    torch.testing.assert_close(obs["p"], cfg[:, 0].mean(1))
