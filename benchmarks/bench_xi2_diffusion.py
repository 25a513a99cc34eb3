"""xi2 of phi4_2d (32x32, kappa = 0.21, lambda = 0.022) from HMC and from a diffusion model
trained on that HMC ensemble (issue 11: how the forward process destroys the correlations and the
reverse one rebuilds them), sized for a CPU; benchmarks/seed_phi4_32x32_gpu.sh is the full-size
run (its `measure --json` of the generated ensemble holds xi2 and m_eff too).

    python benchmarks/bench_xi2_diffusion.py [--n 8000] [--every 4] [--chains 16]
        [--train-steps 800] [--generated 4096] [--sample-steps 50] [--width 16] [--depth 2]
        [--no-two-point] [--no-zero-mode-head] [--threads 1]

The HMC ensemble is measured on all its trajectories and every `--every`-th configuration is
the training set. The model starts as the Gaussian of the data's power spectrum (two_point;
without it, as independent sites: chi2 came out 19% low, the zero mode's score at small t is
what denoising score matching learns worst) and has the network's zero-mode head.
Prints, for the HMC ensemble and the generated one, xi2, chi2 and m_eff's plateau with their
errors (the generated samples are independent: their errors are plain standard errors), and the
wall times.
"""
from __future__ import annotations

import argparse
import time

import torch

import theoryc
from theoryc.runtime.stats.correlators import plateau
from theoryc.runtime.stats.summary import format_value_error


def report(name, run, theory):
    summary = theoryc.measure(run, theory).summary
    est, obs = summary["estimates"], summary["observables"]
    # xi2 = sqrt(<G0>/<G1> - 1) / (2 sin(pi/L)) is nan where <G0> < <G1>: print both
    cells = [f"{k} {format_value_error(est[k]['mean'], est[k]['error'])}" for k in ("xi2", "chi2")]
    cells += [f"<{k}> {format_value_error(obs[k]['mean'], obs[k]['error'])}" for k in ("G0", "G1")]
    fit = plateau(run.observables["C"], getattr(run, "log_weights", None))
    if fit is not None:
        cells.append(f"m_eff plateau t = {fit.t_min}..{fit.t_max} "
                     f"{format_value_error(fit.mass.mean, fit.mass.error)}")
    print(f"  {name:<10} " + ", ".join(cells))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=800)
    ap.add_argument("--generated", type=int, default=4096)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--two-point", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--zero-mode-head", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    theory = theoryc.load("phi4_2d", L=32, kappa=0.21)
    t0 = time.perf_counter()
    hmc = theoryc.sample(theory, "hmc", n=args.n, chains=args.chains, seed=1, progress=False,
                         save_every=args.every)
    t1 = time.perf_counter()
    trained = theoryc.train(theory, "diffusion", data=torch.as_tensor(hmc.configs),
                            schedule="ve", steps=args.train_steps, batch_size=64,
                            width=args.width, depth=args.depth, two_point=args.two_point,
                            zero_mode_head=args.zero_mode_head, seed=3, progress=False)
    t2 = time.perf_counter()
    generated = theoryc.sample(theory, "diffusion", n=args.generated, model=trained.model,
                               steps=args.sample_steps, seed=4, progress=False)
    t3 = time.perf_counter()
    print(f"phi4_2d 32x32 {theory.params}: HMC {args.chains} x {args.n} (training set: every "
          f"{args.every}th); diffusion (ve, width {args.width}, depth {args.depth}, two-point base "
          f"{args.two_point}, zero-mode head {args.zero_mode_head}) {args.train_steps} steps of "
          f"64, {args.generated} samples x {args.sample_steps} EM steps")
    report("HMC", hmc, theory)
    report("diffusion", generated, theory)
    print(f"  wall: HMC {t1 - t0:.0f} s, training {t2 - t1:.0f} s, generating {t3 - t2:.0f} s "
          f"({args.threads} thread(s))")


if __name__ == "__main__":
    main()
