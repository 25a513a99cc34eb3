"""Fourier flow vs the RealNVP flow of the same size and training: the anharmonic oscillator.

    python benchmarks/bench_fourier_flow.py [--steps 600] [--layers 8] [--hidden 16] [--n 4000]
                                            [--device cpu] [--threads 1] [--seed 0]

The theory is theories/anharmonic_oscillator.theory (lambda x^4, 64 time sites, a = 0.25; other
values via --lam, --sites, --a; benchmarks/fourier_flow_gpu.sh runs the continuum sequence).
Both flows get the same coupling layers (n_layers, hidden, depth 2, kernel 3), batch, learning
rate and number of steps, trained one after the other in this run by the one trainer (reverse
KL; --realnvp-factor K adds RealNVP trained K times longer); the Fourier flow adds its exact
free-field layer and N mode scales. Each then runs an exact independent-Metropolis chain; HMC
gives the reference <x^2>.
Printed: training seconds, ESS per sample, IMH acceptance, log Z, <x^2> with its Gamma-method
error and its distance from HMC in sigmas (errors of both added in quadrature).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import theoryc
from theoryc.runtime.models.fourier_flow import fourier_flow
from theoryc.runtime.models.sampling import sample_flow
from theoryc.runtime.models.variational import train_flow
from theoryc.runtime.stats.gamma import gamma_method


def x2_of(run, theory) -> tuple[float, float]:
    from theoryc.runtime.measure import measure_observables
    series = measure_observables(theory, run.configs)["x2"]
    g = gamma_method(series)
    return g.mean, g.error


def compare(theory, args, device):
    hmc = theoryc.sample(theory, "hmc", n=args.hmc_n, chains=4, warmup=300, seed=args.seed + 1,
                         progress=False)
    ref = gamma_method(hmc.observables["x2"])
    print(f"HMC  <x^2> = {ref.mean:.5f} +- {ref.error:.5f}  ({4 * args.hmc_n} trajectories)")
    free = fourier_flow(theory, n_layers=args.layers, hidden=args.hidden, device=device)
    run = sample_flow(theory, free, args.n, seed=args.seed + 2, device=device, chains=4,
                      progress=False)
    print(f"untrained Fourier flow (its exact free layer alone): ESS {run.summary['ess']:.3f}, "
          f"acceptance {run.summary['acceptance']:.3f}")
    print(f"{'flow':8s} {'steps':>6s} {'params':>7s} {'train s':>8s} {'ESS':>6s} {'accept':>7s} "
          f"{'log Z':>16s} {'<x^2>':>18s} {'sigmas':>7s}")
    rows = {}
    runs = [("realnvp", args.steps), ("fourier", args.steps)]
    if args.realnvp_factor > 1:          # does RealNVP catch up with more training?
        runs.append(("realnvp", args.realnvp_factor * args.steps))
    for family, steps in runs:
        start = time.perf_counter()
        model = train_flow(theory, steps=steps, n_layers=args.layers, hidden=args.hidden,
                           flow=family, seed=args.seed, device=device, progress=False)
        seconds = time.perf_counter() - start
        run = sample_flow(theory, model, args.n, seed=args.seed + 2, device=device, chains=4,
                          progress=False)
        s = run.summary
        mean, err = x2_of(run, theory)
        sig = (mean - ref.mean) / math.hypot(err, ref.error)
        params = sum(p.numel() for p in model.parameters())
        lz = s["log_z"]
        print(f"{family:8s} {steps:6d} {params:7d} {seconds:8.1f} {s['ess']:6.3f} "
              f"{s['acceptance']:7.3f} {lz['mean']:9.4f}({lz['error']:.4f}) "
              f"{mean:9.5f} +- {err:.5f} {sig:7.2f}", flush=True)
        rows.setdefault(family, dict(ess=s["ess"], acceptance=s["acceptance"], seconds=seconds))
    print(f"Fourier / RealNVP: ESS x{rows['fourier']['ess'] / rows['realnvp']['ess']:.2f}, "
          f"acceptance x{rows['fourier']['acceptance'] / rows['realnvp']['acceptance']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--n", type=int, default=4000, help="IMH steps per chain (4 chains)")
    parser.add_argument("--hmc-n", type=int, default=4000, help="HMC trajectories per chain (4)")
    parser.add_argument("--realnvp-factor", type=int, default=1,
                        help="also train RealNVP for this many times the steps")
    parser.add_argument("--lam", type=float, default=1.0, help="lambda of the x^4 term")
    parser.add_argument("--sites", type=int, default=64)
    parser.add_argument("--a", type=float, default=0.25, help="lattice spacing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    theory = theoryc.load("anharmonic_oscillator", N=args.sites, a=args.a, **{"lambda": args.lam})
    print(f"anharmonic oscillator: N={args.sites} lambda={args.lam} a={theory.params['a']}; "
          f"flows: {args.layers} couplings x {args.hidden} ch, {args.steps} steps, batch 64, "
          f"device={args.device} threads={args.threads}")
    compare(theory, args, args.device)


if __name__ == "__main__":
    main()
