"""Checkerboard Metropolis for spin fields against the exact 2-d Ising model.

Exact values come from the row-to-row transfer matrix on an L x L periodic lattice (all 2^L row
states enumerated with numpy): log Z(beta) = log Tr T^L, and the bond energy per site
<s s'> = (1 / 2V) d log Z / d beta (2V bonds), by a central difference (error ~1e-9, far below the
statistical errors). 4x4 is also checked against brute-force enumeration of all 2^16 states.
Errors come from the spread of independent chain means (each chain >> its autocorrelation time).
"""
import itertools
import math

import numpy as np
import pytest
import torch

import fakes
from theoryc.runtime.chains.metropolis import coloring, run_metropolis
from theoryc.runtime.errors import SamplerError


def log_z_transfer(L: int, beta: float) -> float:
    """log Z of the L x L periodic Ising model, Z = sum exp(beta sum_<xy> s_x s_y)."""
    rows = np.array(list(itertools.product((-1, 1), repeat=L)))          # (2^L, L)
    inside = (rows * np.roll(rows, -1, 1)).sum(1)                          # bonds within a row
    between = rows @ rows.T                                                # bonds to the next row
    # T[a, b] = exp(beta (inside_a / 2 + a.b + inside_b / 2)): symmetric, Z = Tr T^L
    log_t = beta * (inside[:, None] / 2 + between + inside[None, :] / 2)
    shift = log_t.max()
    eig = np.linalg.eigvalsh(np.exp(log_t - shift))
    return L * shift + math.log(np.sum(eig ** L))


def bond_energy_exact(L: int, beta: float, h: float = 1e-5) -> float:
    """<s_x s_y> per bond = d log Z / d beta / (2 V)."""
    d = (log_z_transfer(L, beta + h) - log_z_transfer(L, beta - h)) / (2 * h)
    return d / (2 * L * L)


def bond_energy_enumerated(L: int, beta: float) -> float:
    states = np.array(list(itertools.product((-1, 1), repeat=L * L))).reshape(-1, L, L)
    bonds = (states * np.roll(states, -1, 1) + states * np.roll(states, -1, 2)).sum((1, 2))
    w = np.exp(beta * (bonds - bonds.max()))
    return float((w * bonds).sum() / w.sum() / (2 * L * L))


def test_transfer_matrix_agrees_with_enumeration():
    for beta in (0.2, 0.44, 0.7):
        assert bond_energy_exact(4, beta) == pytest.approx(bond_energy_enumerated(4, beta),
                                                           abs=1e-8)
    # high-temperature series of the infinite lattice, <s s'> = t + 2 t^3 + O(t^5), t = tanh beta
    # (the two plaquettes through a bond): an 8x8 lattice has no finite-size term to this order
    t = math.tanh(0.05)
    assert bond_energy_exact(8, 0.05) == pytest.approx(t + 2 * t**3, abs=1e-5)


def chain_mean_error(v):
    m = np.asarray(v).mean(axis=1)
    return m.mean(), m.std(ddof=1) / math.sqrt(len(m))


@pytest.mark.parametrize("L,beta", [(4, 0.3), (4, 0.44), (4, 0.6), (8, 0.3), (8, 0.44)])
def test_ising_bond_energy_and_log_z_derivative(L, beta):
    """<s s'> per bond equals (1/2V) d log Z / d beta from the transfer matrix, within 4 sigma."""
    theory = fakes.ising_2d(L=L, beta=beta)
    run = run_metropolis(theory, n=400, chains=32, warmup=200, every=2, seed=1, progress=False)
    bond = theory.observables(run.configs.reshape(-1, *theory.shape))["bond"]
    m, e = chain_mean_error(bond.reshape(32, 400).numpy())
    exact = bond_energy_exact(L, beta)
    assert abs(m - exact) < 4 * e, f"L={L} beta={beta}: {m:.5f} +- {e:.5f} vs exact {exact:.5f}"
    assert 0 < run.summary["acceptance"] < 1 and run.summary["colors"] == 2
    assert set(np.unique(run.configs.numpy())) == {-1.0, 1.0}


def test_coloring_checkerboard_and_greedy():
    nn = ((1, 0), (-1, 0), (0, 1), (0, -1))
    board = coloring((4, 6), nn)
    assert board.max() == 1 and board[0, 0] != board[0, 1] and board[0, 0] != board[1, 0]
    odd = coloring((5, 4), nn)                   # an odd extent: no checkerboard, still proper
    nnn = nn + ((1, 1), (-1, -1), (1, -1), (-1, 1), (2, 0), (-2, 0))
    for colors, offsets in ((odd, nn), (coloring((6, 6), nnn), nnn)):
        L = colors.shape
        for site in itertools.product(*(range(n) for n in L)):
            for off in offsets:
                other = tuple((s + o) % n for s, o, n in zip(site, off, L))
                assert colors[site] != colors[other], (site, off)


def test_refusals():
    with pytest.raises(SamplerError, match="continuous"):
        run_metropolis(fakes.phi4_lattice((4, 4)), n=2, progress=False)
    from theoryc.runtime.chains.hmc import run_hmc
    from theoryc.runtime.chains.langevin import run_langevin
    for run in (run_hmc, run_langevin):        # spins: a pointer to the sampler that fits
        with pytest.raises(SamplerError, match="--sampler metropolis"):
            run(fakes.ising_2d(), n=2, progress=False)


def test_resume_is_bitwise_identical(tmp_path):
    theory = fakes.ising_2d(L=4, beta=0.44)
    kw = dict(n=30, chains=4, warmup=10, seed=3, progress=False, checkpoint_every=10)
    full = run_metropolis(theory, **kw)

    class Stop(Exception):
        pass
    calls = {"n": 0}
    real = theory.flip_delta_fn

    def counted(s):
        calls["n"] += 1
        if calls["n"] > 2 * (10 + 15):       # two colors per sweep: killed in sweep 26
            raise Stop
        return real(s)
    theory.flip_delta_fn = counted
    with pytest.raises(Stop):
        run_metropolis(theory, checkpoint=tmp_path / "m.ckpt", **kw)
    theory.flip_delta_fn = real
    resumed = run_metropolis(theory, checkpoint=tmp_path / "m.ckpt", resume=True, **kw)
    assert torch.equal(full.configs, resumed.configs)
    np.testing.assert_array_equal(full.stats["accept"], resumed.stats["accept"])


def test_compiled_ising_flip_delta_samples_the_exact_magnetisation():
    """The compiler's flip_delta and FLIP_OFFSETS drive the sampler on the shipped ising_2d:
    <m^2> on 4x4 at beta = 0.44 against brute-force enumeration of the 2^16 states."""
    theoryc = pytest.importorskip("theoryc")
    theory = theoryc.load("ising_2d", L=4, beta=0.44)
    states = np.array(list(itertools.product((-1, 1), repeat=16))).reshape(-1, 4, 4)
    bonds = (states * np.roll(states, -1, 1) + states * np.roll(states, -1, 2)).sum((1, 2))
    w = np.exp(0.44 * (bonds - bonds.max()))
    exact = float((w * states.mean((1, 2)) ** 2).sum() / w.sum())
    run = theoryc.sample(theory, "metropolis", n=400, chains=32, warmup=100, every=2, seed=2,
                         progress=False)
    m2, e = chain_mean_error(run.observables["m"] ** 2)
    assert abs(m2 - exact) < 4 * e, (m2, e, exact)
