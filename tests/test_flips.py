"""The compiler's single-spin-flip changes of the action (for local Metropolis) against the
action itself: flip_delta at (field, site) equals S(flipped) - S exactly, for every site."""
from __future__ import annotations

import itertools

import pytest
import torch

import theoryc

THEORIES = {
    "ising_field_plaquette": """theory a
lattice 4 x 3
field s : spin
param beta = 0.7
param h = 0.3
action = -beta * sum(x)[ sum(mu)[ s(x)*s(x + mu) ] ] - h*sum(x)[ s(x) ] + 0.2*sum(x)[ s(x)*s(x + e0)*s(x + e1) ]
""",
    "two_fields_wrapped_2x2": """theory b
lattice 2 x 2
field s, t : spin
action = sum(x)[ s(x)*t(x + e0) - 0.5*s(x)*s(x - e1) + exp(0.3*t(x)*t(x + e1)) ]
""",
    "next_nearest_1d": """theory c
lattice 7
field s : spin
action = -sum(x)[ s(x)*s(x + e0) + 0.5*s(x)*s(x + 2*e0) ]
""",
    "zero_dimensional": """theory d
field s, t : spin
action = 0.7*s*t + 0.2*s
""",
}


@pytest.mark.parametrize("name", sorted(THEORIES))
def test_flip_delta_is_the_change_of_the_action(name):
    th = theoryc.load_text(THEORIES[name])
    gen = torch.Generator().manual_seed(1)
    cfg = torch.randint(0, 2, (3, *th.shape), generator=gen, dtype=torch.float64) * 2 - 1
    delta = th.flip_delta(cfg)
    assert delta.shape == cfg.shape
    for idx in itertools.product(*[range(n) for n in th.shape]):
        flipped = cfg.clone()
        flipped[(slice(None),) + idx] *= -1
        torch.testing.assert_close(delta[(slice(None),) + idx], th.action(flipped) - th.action(cfg),
                                   rtol=0, atol=1e-13)


def test_flip_offsets_are_the_interactions():
    assert theoryc.load("ising_2d", L=4).flip_offsets == ((-1, 0), (0, -1), (0, 1), (1, 0))
    assert theoryc.load_text(THEORIES["next_nearest_1d"]).flip_offsets == ((-2,), (-1,), (1,), (2,))
    # on a 2 x 2 lattice x + e1 and x - e1 are one site
    assert theoryc.load_text(THEORIES["two_fields_wrapped_2x2"]).flip_offsets == ((0, 1), (1, 0))
    assert theoryc.load_text(THEORIES["zero_dimensional"]).flip_offsets == ()


def test_no_flips_for_real_fields_or_a_non_local_action():
    assert theoryc.load("phi4_2d", L=4).flip_delta is None
    nonlocal_ = "theory n\nlattice 4\nfield s : spin\naction = -sum(x)[ s(x) ]^2 / 4\n"
    assert theoryc.load_text(nonlocal_).flip_delta is None
