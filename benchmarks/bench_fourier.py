"""Fourier-accelerated HMC against plain HMC near the critical point, side by side in one run.

phi4_2d (hopping form) at L = 64, lambda = 0.022, kappa = 0.26 (default): the mean-field
critical point is kappa = (1 - 2 lambda)/4 = 0.239 and fluctuations move it up, so 0.26 lies in
the symmetric phase close to it; the second-moment correlation length xi2 measured here says how
close. Both samplers: 16 chains, trajectory length 1, step tuned to acceptance 0.8 during warm-up,
float64, one thread. Printed: seconds per trajectory, tau_int (Gamma method) of M^2 and phi2 in
trajectories, seconds per independent configuration (s/traj x 2 tau_int / chains), the ratio, and
the results of both (equal within errors).

    OMP_NUM_THREADS=1 python benchmarks/bench_fourier.py [--kappa 0.26] [--n 400]
"""
from __future__ import annotations

import argparse
import time

import torch

import theoryc
from theoryc.runtime.stats.gamma import gamma_method

CORRELATION = """
observable G0    = volume * M^2
observable G1    = (sum(x)[ phi(x) * cos(2*pi*pos(x, 0)/L) ]^2 + sum(x)[ phi(x) * sin(2*pi*pos(x, 0)/L) ]^2) / volume
estimate xi2      = sqrt(<G0> / <G1> - 1) / (2 * sin(pi / L))
"""


def run(theory, fourier: bool, n: int, chains: int, warmup: int, seed: int):
    start = time.perf_counter()
    result = theoryc.sample(theory, sampler="hmc", n=n, chains=chains, warmup=warmup, seed=seed,
                            progress=False, fourier_acceleration=fourier)
    seconds = time.perf_counter() - start
    per_trajectory = seconds / ((n + warmup) * 1.0)
    out = {"s/traj": per_trajectory}
    for name, series in (("M^2", result.observables["M"] ** 2), ("phi2", result.observables["phi2"])):
        g = gamma_method(series)
        out[name] = (g.mean, g.error, g.tau_int)
        out[f"s/indep {name}"] = per_trajectory * 2 * g.tau_int / chains
    g0, g1 = gamma_method(result.observables["G0"]).mean, gamma_method(result.observables["G1"]).mean
    import math
    out["xi2"] = math.sqrt(max(g0 / g1 - 1, 0)) / (2 * math.sin(math.pi / theory.lattice[0]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=64)
    ap.add_argument("--kappa", type=float, default=0.26)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    text = theoryc.api.read_theory("phi4_2d")[0].decode()
    if "observable G1" not in text:            # the shipped phi4_2d may carry them already
        text += CORRELATION
    th = theoryc.load_text(text, L=args.L, kappa=args.kappa)
    rows = {name: run(th, fourier, args.n, args.chains, args.warmup, seed=1)
            for name, fourier in (("plain", False), ("fourier", True))}
    print(f"phi4_2d L={args.L} kappa={args.kappa} lambda=0.022, {args.chains} chains x {args.n}")
    for name, r in rows.items():
        print(f"{name:>8}: s/traj {r['s/traj']:.4f}  xi2 {r['xi2']:.2f}  " + "  ".join(
            f"<{k}> {r[k][0]:.5f}({r[k][1]:.5f}) tau {r[k][2]:.1f}  s/indep {r[f's/indep {k}']:.4f}"
            for k in ("M^2", "phi2")))
    for k in ("M^2", "phi2"):
        ratio = rows["plain"][f"s/indep {k}"] / rows["fourier"][f"s/indep {k}"]
        print(f"seconds per independent configuration of {k}: plain / fourier = {ratio:.1f}")


if __name__ == "__main__":
    main()
