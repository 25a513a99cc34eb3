"""Diffusion on angles, 2-d U(1) at L = 8, beta = 2 (issue 10 item 5): where the model's <Q^2>
bias comes from. Trains the torus diffusion model on an HMC ensemble, samples it with a few
seeds/solvers and prints, next to the exact values, what Q^2 is made of:
Q^2 = V / (4 pi^2) sum_r C(r) with C(r) = <P(x) P(x + r)> of the wrapped plaquettes, so <P^2> and
the neighbour correlations C(e), C(e + e') say whether a wrong <Q^2> is a wrong single-plaquette
distribution or spurious plaquette-plaquette correlations (the exact theory has none at L = 8
but the O(1/V) of the constraint sum_x P(x) = 2 pi Q).

Then the exact samples that remove the bias: the probability-flow ODE's samples with their
log q (40 Heun steps, one diluted probe; likelihood.py), as log-weights -S - log q and as an
independent-Metropolis chain, each measured by `theoryc.measure` (Gamma-method errors).

  python benchmarks/bench_torus_diffusion.py            # the slow test's size (~15 CPU-min)
  python benchmarks/bench_torus_diffusion.py --gpu      # longer, wider training on cuda
  python benchmarks/bench_torus_diffusion.py --quick    # seconds: checks the script runs
  python benchmarks/bench_torus_diffusion.py --exact-only --n-exact 8192   # the exact rows only
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import theoryc
from theoryc.runtime.models.circular import wrap
from theoryc.runtime.models.lattice_gauge import plaquettes
from theoryc.runtime.models.likelihood import sample_exact
from theoryc.runtime.models.torus_diffusion import sample_torus_diffusion, train_torus_diffusion

ROOT = Path(__file__).parents[1]
VE = "\nschedule ve {\n    param sigma = 8\n    drift     = 0\n    diffusion = sigma^t\n}\n"


def plaquette_stats(configs) -> dict:
    c = torch.as_tensor(np.asarray(configs)).reshape(-1, 2, 8, 8).to(torch.float64)
    p = wrap(plaquettes(c)[:, 0])
    q2 = (p.sum((1, 2)) / (2 * math.pi)) ** 2
    return {"n": len(q2), "cosP": float(torch.cos(p).mean()), "P2": float((p**2).mean()),
            "Ce": float((p * torch.roll(p, 1, 1)).mean()),
            "Cd": float((p * torch.roll(p, (1, 1), (1, 2))).mean()),
            "Q2": float(q2.mean()), "Q2_err": float(q2.std() / math.sqrt(len(q2)))}


def show(label: str, s: dict) -> None:
    print(f"{label:34s} n={s['n']:6d} <cos P> {s['cosP']:.4f}  <P^2> {s['P2']:.4f}  "
          f"C(e) {s['Ce']:+.4f}  C(e+e') {s['Cd']:+.4f}  "
          f"<Q^2> {s['Q2']:.4f}({s['Q2_err']:.4f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="cuda, 16 x 5000 HMC, 20000 steps, width 64")
    ap.add_argument("--quick", action="store_true", help="a seconds-long check of the script")
    ap.add_argument("--exact-only", action="store_true", help="skip the raw sampler's rows")
    ap.add_argument("--n-exact", type=int, default=None, help="exact samples per row")
    args = ap.parse_args()
    device = "cuda" if args.gpu else "cpu"
    n_hmc, steps, width, depth, n_samples = ((5000, 20000, 64, 4, 10000) if args.gpu
                                             else (20, 20, 8, 1, 50) if args.quick
                                             else (500, 2000, 32, 2, 2000))
    th = theoryc.load_text((ROOT / "theories" / "u1_2d.theory").read_text() + VE)
    exact = json.loads((ROOT.parent / "shared" / "reference" / "exact.json").read_text())["u1_2d"]
    print(f"exact                              <cos P> {exact['plaq']:.6f}  <Q^2> {exact['Q2']:.5f}")
    on_gpu = {"device": device} if args.gpu else {}
    hmc = theoryc.sample(th, sampler="hmc", n=n_hmc, chains=16, warmup=200, seed=1,
                         progress=False, **on_gpu)
    show("HMC training data", plaquette_stats(hmc.configs))
    t0 = time.perf_counter()
    model = train_torus_diffusion(th, torch.as_tensor(np.asarray(hmc.configs)),
                                  schedule=th.schedules["ve"], steps=steps, batch_size=128,
                                  width=width, depth=depth, lr=3e-3, progress=False,
                                  device=device)
    print(f"training: {steps} steps of 128, width {width}, depth {depth}: "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    raw_rows = () if args.exact_only else (("em", 200, 0), ("em", 200, 5), ("em", 400, 7),
                                            ("ode", 100, 0))
    for solver, n_steps, seed in raw_rows:
        t0 = time.perf_counter()
        run = sample_torus_diffusion(model, n_samples, solver=solver, steps=n_steps, seed=seed,
                                     progress=False, device=device)
        show(f"{solver} {n_steps} steps, seed {seed} ({time.perf_counter() - t0:.0f} s)",
             plaquette_stats(run.configs))
    probe_noise(model, 16 if args.quick else 128)
    for steps in (20, 40):
        heun_log_q_error(th, model, 4 if args.quick else 48, steps)
    n_exact = args.n_exact or (16 if args.quick else 4096)
    for metropolis in (False, True):
        t0 = time.perf_counter()
        run = sample_exact(th, model, n_exact, steps=40, metropolis=metropolis, seed=3,
                           progress=False, device=device, dtype=torch.float32, batch_size=256)
        show_exact("exact, " + ("independent Metropolis" if metropolis else "log-weights"),
                   theoryc.measure(run, theory=th).summary, time.perf_counter() - t0)


def probe_noise(model, n: int) -> None:
    """The noise of log q from the divergence's probes: the same n ODE trajectories (20 Heun
    steps, float64) with two probe seeds; std of the difference / sqrt 2, per estimator."""
    from theoryc.runtime.models.likelihood import carry_log_density, prior_draw, probe_colours
    model = model.to(torch.float64)
    x1, log_u, project = prior_draw(model, n, torch.Generator().manual_seed(0))
    for label, probes, spacing in (("4 plain probes", 4, 1), ("1 probe, dilution 2", 1, 2),
                                   ("1 probe, dilution 4", 1, 4)):
        t0 = time.perf_counter()
        log_q = [carry_log_density(model.score, x1, log_u, model.schedule, steps=20,
                                   t_end=model.t_eps, probes=probes, project=project,
                                   colours=probe_colours(model.config_shape, spacing),
                                   generator=torch.Generator().manual_seed(seed))[1]
                 for seed in (1, 2)]
        noise = float((log_q[0] - log_q[1]).std()) / math.sqrt(2)
        print(f"log q noise, {label:20s} {noise:.3f}  ({(time.perf_counter() - t0) / 2:.0f} s "
              f"per {n} samples, float64)", flush=True)
    model.to(torch.float32)


def heun_log_q_error(th, model, n: int, steps: int) -> None:
    """log q of the ODE (divergence integrated, dilution 4: its noise ~0.01) against the exact
    log-density of the discrete Heun map that makes the samples, log u - log |det dx_end/dx_1|
    (autograd, one backward pass per feature). Their difference biases reweighted averages by
    about -cov(difference, O), hence its correlation with the plaquette."""
    from theoryc.runtime.models.likelihood import carry_log_density, prior_draw, probe_colours
    from theoryc.runtime.models.sde import integrate_reverse
    model = model.to(torch.float64)
    x1, log_u, project = prior_draw(model, n, torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    x, log_q = carry_log_density(model.score, x1, log_u, model.schedule, steps=steps,
                                 t_end=model.t_eps, probes=1, project=project,
                                 colours=probe_colours(model.config_shape, 4),
                                 generator=torch.Generator().manual_seed(1))
    z = x1.clone().requires_grad_(True)
    # the same Heun steps with the graph kept (no wrap: it only shifts by 2 pi)
    y = integrate_reverse(model.score, z, model.schedule, solver="ode", ode_method="heun",
                          steps=steps, t_end=model.t_eps, rho=2.0).flatten(1)
    rows = [torch.autograd.grad(y[:, j].sum(), z, retain_graph=True)[0].flatten(1)
            for j in range(y.shape[1])]
    exact = log_u - torch.linalg.slogdet(torch.stack(rows, 1))[1]
    error = (log_q - exact).detach()
    cos_p = torch.cos(plaquettes(x)).flatten(1).mean(1)
    corr = float(torch.corrcoef(torch.stack([error, cos_p]))[0, 1])
    print(f"log q - exact log q of the Heun map, {steps} steps: mean {float(error.mean()):+.4f} "
          f"spread {float(error.std()):.4f}, correlation with cos P {corr:+.2f} "
          f"({n} samples, {time.perf_counter() - t0:.0f} s)", flush=True)
    model.to(torch.float32)


def show_exact(label: str, summary: dict, seconds: float) -> None:
    sampler, plaq = summary["sampler"], summary["observables"]["plaq"]
    chi = summary["estimates"]["chi_t"]
    n = summary["run"]["chains"] * summary["run"]["configurations"]
    rate = f"{n} in {seconds:.0f} s ({n / seconds:.1f}/s)"
    print(f"{label:34s} acceptance {sampler.get('acceptance', float('nan')):.3f} "
          f"ESS {sampler['ess']:.3f}  <cos P> {plaq['mean']:.5f}({plaq['error']:.5f})  "
          f"<Q^2> {chi['mean'] * 64:.4f}({chi['error'] * 64:.4f})  {rate}", flush=True)


if __name__ == "__main__":
    main()
