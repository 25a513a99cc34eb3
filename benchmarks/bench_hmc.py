"""HMC throughput on the seed's phi^4 (kappa = 0.21, lambda = 0.022), default cpu, 1 thread.

    python benchmarks/bench_hmc.py [--device cuda] [--threads 1] [--n 200] [--theory fake|compiled]

Prints, per lattice size and number of chains, the tuned step size, steps per trajectory,
acceptance and wall time per trajectory (all chains together) and per chain-trajectory.
`--theory compiled` uses `theoryc.load("phi4_2d", L=...)` (the generated force) instead of
the autograd fake, so the two can be compared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import fakes  # noqa: E402

from theoryc.runtime.hmc import run_hmc  # noqa: E402


def make_theory(kind: str, L: int):
    if kind == "compiled":
        import theoryc
        return theoryc.load("phi4_2d", L=L, kappa=0.21, **{"lambda": 0.022})
    return fakes.phi4_lattice((L, L), kappa=0.21, lam=0.022)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--theory", choices=["fake", "compiled"], default="fake")
    ap.add_argument("--integrator", default="leapfrog")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'L':>4} {'chains':>6} {'eps':>7} {'steps':>5} {'acc':>5} {'ms/traj':>8} {'ms/chain-traj':>13}")
    for L in (8, 16, 32, 64):
        theory = make_theory(args.theory, L)
        for chains in (1, 8, 64):
            start = time.perf_counter()
            run = run_hmc(theory, n=args.n, chains=chains, warmup=100, seed=0, device=args.device,
                          integrator=args.integrator, progress=False)
            total = time.perf_counter() - start
            s = run.summary
            ms = 1e3 * s["seconds_per_trajectory"]
            print(f"{L:>4} {chains:>6} {s['step_size']:7.4f} {s['n_steps']:>5} "
                  f"{s['acceptance']:5.2f} {ms:8.3f} {ms / chains:13.4f}   (total {total:.1f} s)")


if __name__ == "__main__":
    main()
