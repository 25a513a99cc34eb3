"""Coupling flows: exact bijections and log-densities, and a trained flow samples the free field."""
import math

import numpy as np
import pytest
import torch

import fakes
from theoryc.runtime.models.flow import build_flow, checkerboard
from theoryc.runtime.models.sampling import sample_flow
from theoryc.runtime.stats.gamma import gamma_method
from theoryc.runtime.models import load_model, save_model
from theoryc.runtime.models.variational import train_flow

SHAPES = [(1,), (3,), (1, 6), (2, 3, 4), (1, 4, 4), (1, 2, 2, 2)]   # 0-d, 1-d, 2 fields, 2-d, 3-d


def randomised_flow(shape, seed=0):
    """A flow with every weight random, so no layer is the identity (the zero init would be)."""
    torch.manual_seed(seed)
    flow = build_flow(shape, n_layers=4, hidden=5, depth=1, dtype=torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.5)
    return flow


@pytest.mark.parametrize("shape", SHAPES)
def test_flow_is_invertible_with_exact_log_det(shape):
    flow = randomised_flow(shape)
    z = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x, log_q = flow(z)
    z_back, _ = flow.inverse(x)
    assert torch.allclose(z_back, z, atol=1e-12)
    assert torch.allclose(flow.log_prob(x), log_q, atol=1e-10)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        jac = jac.reshape(z[i].numel(), z[i].numel())
        _, log_abs_det = torch.linalg.slogdet(jac)
        prior = -0.5 * (z[i] ** 2).sum() - 0.5 * z[i].numel() * math.log(2 * math.pi)
        assert abs(float(log_q[i] - (prior - log_abs_det))) < 1e-9 * abs(float(prior))
    assert abs(float(log_abs_det)) > 0.1   # the check above was not trivially zero


def test_untrained_flow_is_the_identity_and_prior():
    flow = build_flow((1, 4, 4), n_layers=4, hidden=4, dtype=torch.float64)
    x, log_q = flow.sample(3, torch.Generator().manual_seed(0))
    z, _ = flow.inverse(x)
    assert torch.equal(x, z)
    assert torch.allclose(log_q, flow.prior_log_prob(x))


def test_checkerboard_alternates_with_periodic_neighbours():
    mask = checkerboard((4, 4), 0)
    assert mask.sum() == 8
    for d in (0, 1):   # every neighbour of a frozen site is active, across the boundary too
        assert torch.equal(mask + torch.roll(mask, 1, d), torch.ones(4, 4))


def exact_free_field(lattice, kappa):
    """<phi^2> and log Z of S = -2 kappa sum phi phi' + phi^2 (fakes.phi4_lattice, lambda = 0).

    S = phi.A.phi / 2 with eigenvalues A_k = 2 (1 - 2 kappa sum_mu cos k_mu).
    """
    ks = np.meshgrid(*[2 * np.pi * np.arange(n) / n for n in lattice], indexing="ij")
    a_k = 2 * (1 - 2 * kappa * sum(np.cos(k) for k in ks)).ravel()
    volume = a_k.size
    return (1 / a_k).mean(), volume / 2 * math.log(2 * math.pi) - 0.5 * np.log(a_k).sum()


@pytest.fixture(scope="module")
def free_field_flow():
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.0)
    model = train_flow(theory, steps=300, batch_size=64, lr=3e-3, seed=0, n_layers=4, hidden=8,
                       dtype=torch.float64, progress=False)
    return theory, model


def test_free_field_phi2_from_independent_metropolis(free_field_flow):
    theory, model = free_field_flow
    run = sample_flow(theory, model, 4000, seed=1, progress=False)
    phi2 = theory.observables(run.configs[0])["phi2"].numpy()
    error = phi2.std() * math.sqrt(2 * gamma_method(phi2).tau_int / len(phi2))
    exact_phi2, exact_log_z = exact_free_field((4, 4), 0.2)
    assert abs(phi2.mean() - exact_phi2) < 3 * error
    assert run.summary["acceptance"] > 0.3   # the training did something: untrained is ~0.02
    log_z = run.summary["log_z"]
    assert abs(log_z["mean"] - exact_log_z) < 3 * log_z["error"]
    # The variational bound F_q >= -log Z, up to the statistical error of F_q.
    assert run.summary["free_energy"]["mean"] > -exact_log_z - 3 * run.summary["free_energy"]["error"]


def test_free_field_phi2_from_reweighting(free_field_flow):
    theory, model = free_field_flow
    run = sample_flow(theory, model, 4000, seed=2, metropolis=False, progress=False)
    assert run.kind == "independent" and run.log_weights.shape == (1, 4000)
    w = np.exp(run.log_weights[0] - run.log_weights[0].max())
    w /= w.sum()
    phi2 = theory.observables(run.configs[0])["phi2"].numpy()
    mean = (w * phi2).sum()
    error = math.sqrt((w**2 * (phi2 - mean) ** 2).sum())   # delta method for a ratio estimator
    assert abs(mean - exact_free_field((4, 4), 0.2)[0]) < 3 * error


def test_save_load_round_trip(tmp_path, free_field_flow):
    theory, model = free_field_flow
    path = tmp_path / "flow.pt"
    save_model(model, str(path))
    payload = torch.load(path, weights_only=True)
    assert payload["kind"] == "flow" and payload["theory_name"] == "phi4"
    loaded = load_model(str(path))
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))


def test_resume_continues_exactly(tmp_path):
    """Ten steps, checkpoint, ten more == twenty uninterrupted (model, optimizer and RNG restored)."""
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    ckpt = str(tmp_path / "flow.pt.ckpt")
    common = dict(batch_size=8, lr=1e-2, seed=3, n_layers=2, hidden=4, dtype=torch.float64,
                  progress=False)
    train_flow(theory, steps=20, stop_after=10, checkpoint=ckpt, **common)   # interrupted at 10
    resumed = train_flow(theory, steps=20, checkpoint=ckpt, resume=True, **common)
    straight = train_flow(theory, steps=20, **common)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.allclose(a, b, atol=1e-12)
    assert resumed.meta["history"]["step"][-1] == straight.meta["history"]["step"][-1] == 19


def test_forward_kl_fits_data():
    """Forward KL on 0-d Gaussian data (a, b correlated): KL(p || q) estimated on the data with the
    exact density drops from 0.51 (untrained q = N(0, 1)) to near 0, and not below 0."""
    theory = fakes.FakeTheory(name="g2", action_fn=lambda p: p.pow(2).sum(1),
                              field_names=("a", "b"))
    gen = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    data = torch.randn(4000, 2, dtype=torch.float64, generator=gen) @ torch.linalg.cholesky(cov).T
    model = train_flow(theory, steps=300, batch_size=256, lr=1e-2, seed=0, n_layers=4, hidden=8,
                       data=data, reverse_weight=0.0, dtype=torch.float64, progress=False)
    exact = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    log_ratio = (exact.log_prob(data) - model.log_prob(data)).detach()
    kl, error = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(len(data))
    assert -3 * error < kl < 0.05



def test_compiled_free_field(free_field_flow):
    """The compiled phi4_2d (lambda = 0) has the fake's action; the flow trained on the fake
    samples it exactly, and training directly on it runs (autograd through generated code)."""
    theoryc = pytest.importorskip("theoryc")
    compiled = theoryc.load("phi4_2d", L=4, kappa=0.2, **{"lambda": 0.0})
    fake, model = free_field_flow
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(compiled.action(x), fake.action(x), rtol=1e-12)
    run = sample_flow(compiled, model, 4000, seed=3, progress=False)
    phi2 = (run.configs[0] ** 2).flatten(1).mean(1).numpy()
    error = phi2.std() * math.sqrt(2 * gamma_method(phi2).tau_int / len(phi2))
    assert abs(phi2.mean() - exact_free_field((4, 4), 0.2)[0]) < 3 * error
    trained = train_flow(compiled, steps=20, batch_size=16, n_layers=2, hidden=4, progress=False)
    assert np.isfinite(trained.meta["history"]["free_energy"]).all()



def test_double_gaussian_0d():
    """One 0-d variable, two modes (fakes.double_gaussian_0d, mu0 = 1, s0 = 1/4): the monotone
    map learns both, Z = 2 sqrt(2 pi) s0 and <x^2> = mu0^2 + s0^2 come out exact."""
    theory = fakes.double_gaussian_0d()
    model = train_flow(theory, steps=500, batch_size=256, lr=1e-2, seed=0, dtype=torch.float64,
                       progress=False)
    run = sample_flow(theory, model, 10000, seed=1, progress=False)
    assert run.summary["ess"] > 0.8   # untrained (q ~ N(0, 1)) it is 0.42
    log_z = run.summary["log_z"]
    assert abs(log_z["mean"] - math.log(2 * math.sqrt(2 * math.pi) * 0.25)) < 3 * log_z["error"]
    x2 = run.configs[0, :, 0].numpy() ** 2
    error = x2.std() * math.sqrt(2 * gamma_method(x2).tau_int / len(x2))
    assert abs(x2.mean() - 1.0625) < 3 * error


@pytest.mark.slow
def test_phi4_tutorial_point_l8():
    """phi^4 at the Albergo-Kanwar-Shanahan tutorial point (L=8, m2=-4, lam=8), trained on the cpu
    in a few minutes: independent Metropolis accepts >= 0.2 and chi2 = V(<M^2> - <M>^2) agrees
    with the tutorial's 0.75(1) and with our HMC within 3 combined sigma.

    Measured (1 thread, shared cpu, 3000 steps): 3.8 minutes of training, acceptance 0.46,
    chi2 0.772(26); HMC 0.743(12).
    """
    import time

    import fakes_flow
    theory = fakes_flow.phi4_mass_form(L=8, m2=-4.0, lam=8.0)
    start, cpu_start = time.perf_counter(), time.process_time()
    model = train_flow(theory, steps=3000, batch_size=64, lr=1e-3, seed=1, n_layers=16, hidden=8,
                       progress=False)
    minutes = (time.perf_counter() - start) / 60
    cpu_minutes = (time.process_time() - cpu_start) / 60   # robust to a shared, busy machine
    run = sample_flow(theory, model, 20000, seed=2, progress=False)
    magnetisation = run.configs[0, :, 0].flatten(1).mean(1).double().numpy()
    chi2, error = fakes_flow.chi2_two_point(magnetisation, 64)
    print(f"trained {minutes:.1f} min ({cpu_minutes:.1f} cpu min), acceptance {run.summary['acceptance']:.3f}, "
          f"ess {run.summary['ess']:.3f}, chi2 {chi2:.4f}({error:.4f})")
    assert cpu_minutes < 15
    assert run.summary["acceptance"] >= 0.2
    assert abs(chi2 - 0.75) < 3 * math.hypot(error, 0.01)
    # and with an independent HMC (8 chains; error from the spread of the per-chain values)
    from theoryc.runtime.chains.hmc import run_hmc
    hmc = run_hmc(theory, n=2500, chains=8, warmup=300, seed=0, progress=False)
    per_chain = [fakes_flow.chi2_two_point(c[:, 0].flatten(1).mean(1).numpy(), 64)[0]
                 for c in hmc.configs]
    hmc_chi2, hmc_error = np.mean(per_chain), np.std(per_chain, ddof=1) / math.sqrt(8)
    print(f"HMC chi2 {hmc_chi2:.4f}({hmc_error:.4f})")
    assert abs(chi2 - hmc_chi2) < 3 * math.hypot(error, hmc_error)


def test_nan_guard_skips_then_stops():
    """A non-finite action never reaches the weights; persistent trouble raises."""
    theory = fakes.FakeTheory(name="bad", action_fn=lambda p: p.sum(1) * float("nan"),
                              field_names=("a", "b"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_flow(theory, steps=10, batch_size=4, n_layers=2, hidden=4, max_bad_steps=3,
                   progress=False)
