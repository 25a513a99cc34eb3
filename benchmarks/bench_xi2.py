"""The second-moment correlation length xi2 of the shipped phi4_2d (32x32, kappa = 0.21,
lambda = 0.022) from HMC, with its Gamma-method error, and the wall time it took.

    python benchmarks/bench_xi2.py [--n 4000] [--chains 16] [--L 32] [--seed 0] [--threads 1]

Prints xi2, chi2 (the seed's table: 2.516(46)) and m_eff's plateau (runtime/stats/correlators.py)
with their errors, the HMC acceptance and the wall times of sampling and measuring.
"""
from __future__ import annotations

import argparse
import time

import torch

import theoryc
from theoryc.runtime.stats.correlators import plateau
from theoryc.runtime.stats.summary import format_value_error


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    theory = theoryc.load("phi4_2d", L=args.L)
    start = time.perf_counter()
    run = theoryc.sample(theory, "hmc", n=args.n, chains=args.chains, seed=args.seed,
                         progress=False)
    sampled = time.perf_counter() - start
    result = theoryc.measure(run, theory)
    measured = time.perf_counter() - start - sampled
    est = result.summary["estimates"]
    fit = plateau(run.observables["C"], run.log_weights)
    print(f"phi4_2d {args.L}x{args.L}, params {theory.params}, HMC {args.chains} chains x "
          f"{args.n}, seed {args.seed}, acceptance {run.summary.get('acceptance', float('nan')):.3f}")
    for name in ("xi2", "chi2"):
        print(f"  {name:<8} {format_value_error(est[name]['mean'], est[name]['error'])}")
    if fit is not None:
        print(f"  m_eff plateau t = {fit.t_min}..{fit.t_max}: "
              f"{format_value_error(fit.mass.mean, fit.mass.error)}")
    print(f"  wall: sampling {sampled:.1f} s, measuring {measured:.1f} s "
          f"({args.threads} thread(s))")


if __name__ == "__main__":
    main()
