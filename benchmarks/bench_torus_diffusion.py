"""Diffusion on angles, 2-d U(1) at L = 8, beta = 2 (issue 10 item 5): where the model's <Q^2>
bias comes from. Trains the torus diffusion model on an HMC ensemble, samples it with a few
seeds/solvers and prints, next to the exact values, what Q^2 is made of:
Q^2 = V / (4 pi^2) sum_r C(r) with C(r) = <P(x) P(x + r)> of the wrapped plaquettes, so <P^2> and
the neighbour correlations C(e), C(e + e') say whether a wrong <Q^2> is a wrong single-plaquette
distribution or spurious plaquette-plaquette correlations (the exact theory has none at L = 8
but the O(1/V) of the constraint sum_x P(x) = 2 pi Q).

  python benchmarks/bench_torus_diffusion.py            # the slow test's size (~5 CPU-min)
  python benchmarks/bench_torus_diffusion.py --gpu      # longer, wider training on cuda
  python benchmarks/bench_torus_diffusion.py --quick    # seconds: checks the script runs
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
    for solver, n_steps, seed in (("em", 200, 0), ("em", 200, 5), ("em", 400, 7), ("ode", 100, 0)):
        t0 = time.perf_counter()
        run = sample_torus_diffusion(model, n_samples, solver=solver, steps=n_steps, seed=seed,
                                     progress=False, device=device)
        show(f"{solver} {n_steps} steps, seed {seed} ({time.perf_counter() - t0:.0f} s)",
             plaquette_stats(run.configs))


if __name__ == "__main__":
    main()
