"""VANs: exact normalisation and sampling, and the 2d Ising log Z against exact results."""
import itertools
import math

import numpy as np
import pytest
import torch

import fakes
from theoryc.runtime.models.sampling import sample_flow
from theoryc.runtime.stats.gamma import gamma_method
from theoryc.runtime.models.van import VAN, is_spin_flip
from theoryc.runtime.models import load_model, save_model
from theoryc.runtime.models.variational import train_flow


def all_spin_configs(shape, dtype=torch.float64):
    n = math.prod(shape)
    s = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=dtype)
    return s.reshape(-1, *shape)


def random_van(shape, z2, seed=0):
    torch.manual_seed(seed)
    return VAN(shape, hidden=3, depth=3, z2=z2).to(torch.float64)


@pytest.mark.parametrize("shape,z2", [((1, 3, 3), False), ((1, 3, 3), True), ((2, 4), True)])
def test_van_is_normalised(shape, z2):
    van = random_van(shape, z2)
    with torch.no_grad():
        total = torch.logsumexp(van.log_prob(all_spin_configs(shape)), 0)
    assert abs(total.item()) < 1e-12


def test_van_is_autoregressive():
    """The logit of spin i depends only on spins before it: a strictly lower-triangular Jacobian."""
    van = random_van((1, 3, 3), z2=False)
    s = all_spin_configs((1, 3, 3))[123:124]
    jac = torch.autograd.functional.jacobian(lambda v: van.logits(v[None])[0], s.flatten())
    assert torch.equal(torch.triu(jac), torch.zeros_like(jac))
    assert torch.tril(jac, -1).abs().sum() > 0


@pytest.mark.parametrize("z2", [False, True])
def test_van_samples_follow_its_density(z2):
    """Pearson chi^2 of 20000 samples over the 16 states of a 2x2 lattice against q itself."""
    van = random_van((1, 2, 2), z2)
    configs = all_spin_configs((1, 2, 2))
    with torch.no_grad():
        q = van.log_prob(configs).exp().numpy()
    samples = van.sample_spins(20000, torch.Generator().manual_seed(0)).reshape(-1, 4)
    codes = ((samples.numpy() > 0) * (2 ** np.arange(3, -1, -1))).sum(1)   # same order as product
    counts = np.bincount(codes, minlength=16)
    chi2 = ((counts - 20000 * q) ** 2 / (20000 * q)).sum()
    assert chi2 < 40.0   # 15 degrees of freedom: P(chi2 > 40) = 5e-4


@pytest.mark.parametrize("depth,z2", [(2, True), (3, False)])
def test_incremental_sampler_draws_the_reference_spins(depth, z2):
    """VAN.sample_spins (first layer updated one column per spin) against the full-recompute
    reference from one seed: identical spins (the logits differ only by rounding, float64)."""
    from theoryc.runtime.models.van import sample_spins_reference
    torch.manual_seed(1)
    van = VAN((1, 4, 4), hidden=3, depth=depth, z2=z2).to(torch.float64)
    fast = van.sample_spins(500, torch.Generator().manual_seed(7))
    ref = sample_spins_reference(van, 500, torch.Generator().manual_seed(7))
    assert torch.equal(fast, ref) and fast.shape == (500, 1, 4, 4)
    assert 0.2 < (fast > 0).double().mean() < 0.8          # not a trivially constant draw


def test_spin_flip_detection():
    assert is_spin_flip(lambda s: -s, (1, 3, 3))
    assert not is_spin_flip(lambda s: s, (1, 3, 3))
    assert not is_spin_flip(lambda s: torch.roll(s, 1, -1), (1, 3, 3))


def test_z2_needs_the_declared_symmetry():
    theory = fakes.ising_2d(L=3)
    theory.symmetries = []
    with pytest.raises(ValueError, match="s -> -s"):
        train_flow(theory, steps=1, z2=True, progress=False)


def exact_ising_log_z(L, beta):
    """Z = sum_s exp(beta sum s s') by the row transfer matrix: Z = Tr T^L,
    T[a, b] = exp(beta (sum_i a_i a_{i+1} + sum_i a_i b_i)) for rows a, b (periodic)."""
    rows = np.array(list(itertools.product([-1, 1], repeat=L)), dtype=np.float64)
    inside = (rows * np.roll(rows, -1, 1)).sum(1)
    between = rows @ rows.T
    log_t = beta * (inside[:, None] + between)
    shift = log_t.max()
    eig = np.linalg.eigvals(np.exp(log_t - shift))
    return L * shift + math.log((eig**L).sum().real)


def test_transfer_matrix_matches_enumeration():
    theory = fakes.ising_2d(L=3, beta=0.44)
    log_z = torch.logsumexp(-theory.action(all_spin_configs((1, 3, 3))), 0).item()
    assert abs(exact_ising_log_z(3, 0.44) - log_z) < 1e-10


def check_ising(L, steps, n_samples):
    theory = fakes.ising_2d(L=L, beta=0.44)
    van = train_flow(theory, steps=steps, batch_size=256, lr=3e-3, seed=0, dtype=torch.float64,
                     progress=False)
    run = sample_flow(theory, van, n_samples, seed=1, progress=False)
    exact = exact_ising_log_z(L, 0.44)
    log_z, f_q = run.summary["log_z"], run.summary["free_energy"]
    assert abs(log_z["mean"] - exact) < 3 * log_z["error"]
    assert f_q["mean"] > -exact - 3 * f_q["error"]          # variational bound F_q >= -log Z
    assert run.summary["ess"] > 0.3                          # the error estimate is trustworthy
    # The Metropolis chain reproduces the exact energy <S> (by enumeration / finite difference).
    action = run.stats["action"][0]
    error = action.std() * math.sqrt(2 * gamma_method(action).tau_int / len(action))
    h = 1e-5
    exact_action = -0.44 * (exact_ising_log_z(L, 0.44 + h) - exact_ising_log_z(L, 0.44 - h)) / (2 * h)
    assert abs(action.mean() - exact_action) < 3 * error
    return van, run


def test_ising_4x4_log_z(tmp_path):
    van, run = check_ising(L=4, steps=300, n_samples=8000)
    assert van.z2
    path = str(tmp_path / "van.pt")
    save_model(van, path)
    loaded = load_model(path)
    s = all_spin_configs((1, 4, 4))[::997]
    assert torch.equal(loaded.log_prob(s), van.log_prob(s))



def test_compiled_ising_4x4_log_z():
    """The compiled ising_2d: its declared symmetry is recognised as the spin flip, and a VAN
    trained on it gives the exact log Z."""
    theoryc = pytest.importorskip("theoryc")
    compiled = theoryc.load("ising_2d", L=4, beta=0.44)
    van = train_flow(compiled, steps=300, batch_size=256, lr=3e-3, seed=0, dtype=torch.float64,
                     progress=False)
    assert van.z2
    log_z = sample_flow(compiled, van, 8000, seed=1, progress=False).summary["log_z"]
    assert abs(log_z["mean"] - exact_ising_log_z(4, 0.44)) < 3 * log_z["error"]


@pytest.mark.slow
def test_ising_6x6_log_z():
    check_ising(L=6, steps=2000, n_samples=20000)
