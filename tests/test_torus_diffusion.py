"""Diffusion on angles (issue 10 item 5): the wrapped normal's series and score, its sampling,
the plaquette adjoint behind the gauge-covariant score, the schedule rules, the wrapped
probability-flow ODE's log q, model files and the CLI/API hooks; the slow tests train on HMC data
of 2-d U(1) (L = 8, beta = 2) and compare the raw and the exact (reweighted) samples with the
exact values of ../shared/reference/exact.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import theoryc
from conftest import REFERENCE
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.models import load_model
from theoryc.runtime.models.lattice_gauge import plaquettes
from theoryc.runtime.models.torus_diffusion import (build_torus_model, perturb_angles,
                                                    plaquette_adjoint, sample_torus_diffusion,
                                                    train_torus_diffusion, wrap,
                                                    wrapped_normal_log_prob, wrapped_normal_score)

VE = """
schedule ve {
    param sigma = 8
    drift     = 0
    diffusion = sigma^t
}
"""
VP = """
schedule vp {
    param beta_max = 20
    drift     = -beta_max * t * x / 2
    diffusion = sqrt(beta_max * t)
}
"""
XY_SMALL = """theory xy_small
lattice 4 x 4
field theta : angle
symmetry theta -> -theta
param beta = 1
action = -beta * sum(x)[ sum(mu)[ cos(theta(x + mu) - theta(x)) ] ]
observable e = mean(x)[ sum(mu)[ cos(theta(x + mu) - theta(x)) ] ] / dim
""" + VE


def u1(extra=VE):
    """The shipped U(1) theory with a schedule appended."""
    return theoryc.load_text((Path(__file__).parents[1] / "theories" / "u1_2d.theory").read_text()
                             + extra)


VARS = [1e-4, 0.01, 0.3, 1.0, 2.0, 2.2, 2.3, 3.0, 6.0, 30.0]   # both sides of the series switch


def brute_log_prob(d, var, k=60):
    """The image sum with 121 terms in float64: the definition of the wrapped normal."""
    shifted = d[..., None] + 2 * math.pi * torch.arange(-k, k + 1, dtype=torch.float64)
    return torch.logsumexp(-shifted**2 / (2 * var), -1) - 0.5 * math.log(2 * math.pi * var)


@pytest.mark.parametrize("var", VARS)
def test_wrapped_normal_series_and_score(var):
    d = torch.linspace(-3 * math.pi, 3 * math.pi, 301, dtype=torch.float64, requires_grad=True)
    logp = wrapped_normal_log_prob(d, var)
    # either series equals the 121-term image sum to rounding (its terms are exact to 1e-30)
    assert torch.allclose(logp, brute_log_prob(d.detach(), var), atol=1e-10, rtol=1e-10)
    (grad,) = torch.autograd.grad(logp.sum(), d)
    score = wrapped_normal_score(d.detach(), var)
    assert torch.allclose(score, grad, atol=1e-8, rtol=1e-8)
    # normalised on one period (trapezoid on a periodic integrand is spectrally accurate)
    x = torch.linspace(-math.pi, math.pi, 4001, dtype=torch.float64)[:-1]
    if var >= 0.01:                       # tinier widths need a finer grid than this one
        total = wrapped_normal_log_prob(x, var).exp().sum() * (2 * math.pi / 4000)
        assert abs(float(total) - 1) < 1e-9


def test_kernel_sampling_moments_and_target():
    """wrap(x0 + std eps): <cos n(x_t - x0)> = exp(-n^2 var / 2) exactly; 200000 draws give each
    mean an error of at most 1/sqrt(2 * 200000) = 0.0016, the test allows 5 of them."""
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = (torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    std = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64).repeat_interleave(n // 3 + 1)[:n]
    xt, target = perturb_angles(x0, std, gen)
    assert xt.min() >= -math.pi and xt.max() < math.pi
    d = wrap(xt - x0)[:, 0]
    for s in (0.3, 1.0, 2.0):
        sel = std == s
        for k in (1, 2, 3):
            assert abs(float(torch.cos(k * d[sel]).mean()) - math.exp(-k * k * s * s / 2)) < 0.008
    # the conditional score is the wrapped normal's score at the wrapped displacement
    assert torch.allclose(target[:, 0], wrapped_normal_score(d, std**2), atol=1e-9)


def test_torus_ode_log_q_is_the_log_density_of_its_map():
    """The probability-flow ODE on the circle, wrapped after every step (likelihood.
    carry_log_density), with the exact score of wrapped-normal data WN(mu, v0) (p_t is
    WN(mu, v0 + Xi(t))): log q of each sample equals log u(x_1) - log |dx_end / dx_1|, the
    density of the map's push-forward of the uniform prior, by central differences of the map,
    to Heun's O(h^2) (measured at 100/200/400 steps: median 1e-4/2.5e-5/6e-6, largest 1.2e-2/
    3.1e-3/7.8e-4, where the map stretches 50-fold), and the samples' <cos(x - mu)> is the
    target's exp(-v0 / 2) within 4 errors."""
    from theoryc.runtime.models.likelihood import carry_log_density
    schedule = u1().schedules["ve"]
    mu, v0 = 1.0, 0.3

    def score(x, t):
        return wrapped_normal_score(x - mu, v0 + schedule.xi(t).reshape(-1, 1))

    def carry(x1):
        log_u = torch.full((len(x1),), -math.log(2 * math.pi), dtype=torch.float64)
        return carry_log_density(score, x1, log_u, schedule, steps=200, probes=0, project=wrap)

    gen = torch.Generator().manual_seed(2)
    x1 = (torch.rand(4000, 1, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    x, log_q = carry(x1)
    assert x.min() >= -math.pi and x.max() < math.pi
    eps = 1e-5
    (hi, _), (lo, _) = carry(x1[:200] + eps), carry(x1[:200] - eps)
    jacobian = wrap(hi - lo)[:, 0] / (2 * eps)
    assert torch.allclose(log_q[:200], -math.log(2 * math.pi) - torch.log(jacobian), atol=5e-3)
    c = torch.cos(x[:, 0] - mu)
    assert abs(float(c.mean()) - math.exp(-v0 / 2)) < 4 * float(c.std()) / math.sqrt(len(c))


def test_plaquette_adjoint_is_the_jacobian_transpose():
    gen = torch.Generator().manual_seed(1)
    for lattice in ((4, 6), (3, 4, 5)):
        dim = len(lattice)
        links = torch.randn(2, dim, *lattice, generator=gen, dtype=torch.float64, requires_grad=True)
        h = torch.randn(2, dim * (dim - 1) // 2, *lattice, generator=gen, dtype=torch.float64)
        (grad,) = torch.autograd.grad((plaquettes(links) * h).sum(), links)
        assert torch.allclose(plaquette_adjoint(h, dim), grad, atol=1e-12)


def test_gauge_covariant_score():
    """The score of a gauge link field depends on the plaquettes only (gauge invariant) and has
    no component along a gauge direction (the density is constant along gauge orbits)."""
    th = u1()
    model = build_torus_model(th, schedule=th.schedules["ve"], seed=3, dtype=torch.float64)
    for p in model.net.parameters():          # leave the zero start: a generic network
        torch.nn.init.normal_(p, std=0.3)
    gen = torch.Generator().manual_seed(2)
    links = (torch.rand(3, 2, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    alpha = torch.randn(3, 8, 8, generator=gen, dtype=torch.float64)
    moved = torch.stack([links[:, 0] + alpha - torch.roll(alpha, -1, 1),
                         links[:, 1] + alpha - torch.roll(alpha, -1, 2)], 1)
    t = torch.full((3,), 0.2, dtype=torch.float64)
    with torch.no_grad():
        s, s_moved = model.score(links, t), model.score(moved, t)
    assert float(s.abs().max()) > 1e-3
    assert torch.allclose(s, s_moved, atol=1e-10)
    along = (s[:, 0] * (alpha - torch.roll(alpha, -1, 1))
             + s[:, 1] * (alpha - torch.roll(alpha, -1, 2))).sum((1, 2))
    assert float(along.abs().max()) < 1e-10
    # periodic in every link
    assert torch.allclose(model.score(links + 2 * math.pi, t), s, atol=1e-9)


def test_schedules_on_angles_are_checked():
    with pytest.raises(SamplerError, match="drift"):
        th = u1(VP)
        build_torus_model(th, schedule=th.schedules["vp"])
    th = u1(VE.replace("sigma = 8", "sigma = 2"))          # sqrt(Xi(1)) = 1.47
    with pytest.raises(SamplerError, match="uniform prior"):
        build_torus_model(th, schedule=th.schedules["ve"])


def test_train_sample_and_model_file_through_the_api(tmp_path):
    """`theoryc train --model diffusion` / `sample --sampler diffusion` on an angle theory: a few
    steps end to end (plumbing; the physics is the slow test's), the file round trip exact."""
    th = theoryc.load_text(XY_SMALL)
    run = theoryc.sample(th, sampler="hmc", n=50, chains=4, warmup=20, seed=1, progress=False)
    ens = tmp_path / "xy.h5"
    theoryc.sample(th, sampler="hmc", n=50, chains=4, warmup=20, seed=1, progress=False,
                   output=ens)
    path = tmp_path / "xy.pt"
    trained = theoryc.train(th, "diffusion", data=ens, output=path, steps=30, batch_size=16,
                            width=8, depth=1, progress=False)
    assert getattr(trained.model, "on_torus", False)
    model = load_model(path, schedules=th.schedules, dtype=torch.float64)
    x = torch.as_tensor(np.asarray(run.configs))[0, :5].to(torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    assert torch.allclose(model.score(x, t), trained.model.to(torch.float64).score(x, t),
                          atol=1e-6)
    out = theoryc.sample(th, "diffusion", n=20, model=path, steps=20, progress=False)
    configs = np.asarray(out.configs)
    assert configs.shape == (1, 20, 1, 4, 4)
    assert configs.min() >= -math.pi and configs.max() < math.pi
    assert np.isfinite(np.asarray(out.observables["e"])).all()
    # --exact: probability-flow ODE samples with log q (16 features would default to the exact
    # trace; one diluted probe here), corrected by independent Metropolis
    chain = theoryc.sample(th, "diffusion", n=20, model=path, steps=5, exact=True, probes=1,
                           metropolis=True, progress=False)
    configs = np.asarray(chain.configs)
    assert configs.min() >= -math.pi and configs.max() < math.pi
    assert chain.kind == "markov" and 0 < chain.summary["acceptance"] <= 1
    assert chain.settings["arch"]["divergence"] == "diluted"


def exact(name):
    with open(REFERENCE) as fh:
        return json.load(fh)[name]


@pytest.fixture(scope="module")
def u1_trained():
    """2-d U(1), L = 8, beta = 2: 16 x 500 HMC trajectories and a torus diffusion model trained
    on them (2000 steps of 128, width 32, depth 2; ~2 min alone); shared by the slow tests."""
    th = u1()
    hmc = theoryc.sample(th, sampler="hmc", n=500, chains=16, warmup=200, seed=1, progress=False)
    summary = theoryc.measure(hmc, theory=th).summary
    model = train_torus_diffusion(th, torch.as_tensor(np.asarray(hmc.configs)),
                                  schedule=th.schedules["ve"], steps=2000, batch_size=128,
                                  width=32, depth=2, lr=3e-3, progress=False)
    return th, summary, model


@pytest.mark.slow
def test_u1_diffusion_reproduces_exact_plaquette_and_q2(u1_trained):
    """The raw samples: 2000 of 200 EM steps (~1 min) give <cos P> within 3 sigma of the exact
    0.697775 and <Q^2> within 5% of 1.23930 plus 3 sigma. The raw model does not meet the issue's
    5% in every run: measured with these data (<Q^2> 1.204(19)), sampling seed 5 (this test's)
    gives <cos P> 0.6948, <Q^2> 1.293(41) (+4%), seed 0 1.305(42) (+5%), 4000 training steps
    1.294-1.316 (BENCHMARKS.md "Diffusion on angles": the excess is spurious plaquette-plaquette
    correlation); the exact samples of the next test remove it. Each sigma combines the
    samples' own error with the training ensemble's (a model learnt from a finite ensemble
    inherits its fluctuation), in quadrature."""
    ref = exact("u1_2d")
    th, summary, model = u1_trained
    data_err = summary["observables"]["plaq"]["error"]
    data_q2_err = summary["estimates"]["chi_t"]["error"] * th.volume
    run = sample_torus_diffusion(model, 2000, steps=200, progress=False, seed=5)
    obs = th.observables(run.configs[0].to(torch.float64))
    plaq, q2 = obs["plaq"].numpy(), (obs["Q"] ** 2).numpy()
    err = math.hypot(plaq.std() / math.sqrt(len(plaq)), data_err)
    q2_err = math.hypot(q2.std() / math.sqrt(len(q2)), data_q2_err)
    print(f"diffusion u1: plaq {plaq.mean():.5f}({err:.5f}) exact {ref['plaq']:.6f}; "
          f"Q^2 {q2.mean():.4f}({q2_err:.4f}) exact {ref['Q2']:.5f}")
    assert run.configs.min() >= -math.pi and run.configs.max() < math.pi
    assert abs(plaq.mean() - ref["plaq"]) < 3 * err
    assert abs(q2.mean() - ref["Q2"]) < 0.05 * ref["Q2"] + 3 * q2_err


@pytest.mark.slow
def test_u1_exact_diffusion_samples_reproduce_plaquette_and_q2(u1_trained):
    """The same model's exact samples: 4096 probability-flow ODE samples (40 Heun steps, one
    diluted probe, float32; ~4 min alone) with log-weights -S - log q. `theoryc.measure`'s
    reweighted <cos P> and <Q^2> = V chi_t are within 3 sigma of the exact values, with their
    own errors only (reweighting to the action removes what the model inherited from its
    data), and <Q^2>'s error is below 4% of it. Measured: ESS 0.575, <cos P> 0.69866(107),
    <Q^2> 1.2006(323) (-3.1%, -1.2 sigma). At 20 Heun steps the ODE's log q misses the Heun
    map's exact log-density by a spread of 0.055 that correlates with the plaquette (+0.78;
    0.014 at 40 steps, BENCHMARKS.md), which left <cos P> 0.69475(113), 2.7 sigma low."""
    from theoryc.runtime.models.likelihood import sample_exact
    ref = exact("u1_2d")
    th, _, model = u1_trained
    run = sample_exact(th, model, 4096, steps=40, seed=3, dtype=torch.float32, batch_size=256,
                       progress=False)
    assert run.settings["arch"]["divergence"] == "diluted"
    summary = theoryc.measure(run, theory=th).summary
    plaq = summary["observables"]["plaq"]
    q2, q2_err = (summary["estimates"]["chi_t"][k] * th.volume for k in ("mean", "error"))
    print(f"exact diffusion u1: ESS {summary['sampler']['ess']:.3f}, plaq {plaq['mean']:.5f}"
          f"({plaq['error']:.5f}), Q^2 {q2:.4f}({q2_err:.4f})")
    assert np.asarray(run.configs).min() >= -math.pi and np.asarray(run.configs).max() < math.pi
    assert summary["sampler"]["ess"] > 0.3
    assert abs(plaq["mean"] - ref["plaq"]) < 3 * plaq["error"]
    assert abs(q2 - ref["Q2"]) < 3 * q2_err and q2_err < 0.04 * ref["Q2"]
