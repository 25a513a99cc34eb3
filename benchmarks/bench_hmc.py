"""theoryc's HMC against a hand-written batched torch HMC on the same work, in one run.

    python benchmarks/bench_hmc.py [--device cpu] [--threads 1] [--reps 5]

The work (issue 9): the compiled phi4_2d (the seed's kappa = 0.21, lambda = 0.022), 64 chains,
float32, fixed step 0.1, 10 leapfrog steps per trajectory, on 32x32 and 8x8. Both use the same
generated action and force, keep every configuration in memory and do a Metropolis test per chain
in float64; the hand-written loop is what a physicist would write in ~40 lines (force and action
recomputed at the start of each trajectory). theoryc also applies its symmetry move (phi -> -phi
with probability 1/2) after each trajectory, records acceptance, dH and step figures per
trajectory, and runs through the one chain driver (blocks, health hooks, checkpoint cadence).
Timings alternate between the two, `--reps` times; the ratio printed is
(hand-written seconds per trajectory) / (theoryc seconds per trajectory), medians: >= 1 means
theoryc is at least as fast.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import theoryc
from theoryc.runtime.chains.hmc import run_hmc

STEP, N_STEPS, CHAINS = 0.1, 10, 64


def handwritten_hmc(theory, phi, n: int, generator: torch.Generator) -> list[torch.Tensor]:
    """n trajectories of leapfrog HMC with a Metropolis test per chain; returns the chain."""
    chains = phi.shape[0]
    kept = []
    for _ in range(n):
        p = torch.randn(phi.shape, generator=generator, dtype=phi.dtype, device=phi.device)
        h0 = theory.action(phi).double() + 0.5 * p.double().square().flatten(1).sum(1)
        x = phi
        q = p - 0.5 * STEP * theory.force(x)
        for i in range(N_STEPS):
            x = x + STEP * q
            q = q - (STEP if i < N_STEPS - 1 else 0.5 * STEP) * theory.force(x)
        h1 = theory.action(x).double() + 0.5 * q.double().square().flatten(1).sum(1)
        u = torch.rand(chains, generator=generator, dtype=torch.float64, device=phi.device)
        accept = torch.log(u) < h0 - h1
        phi = torch.where(accept.view(-1, *([1] * (phi.dim() - 1))), x, phi)
        kept.append(phi)
    return kept


def time_handwritten(theory, n: int, device) -> float:
    g = torch.Generator(device=device).manual_seed(0)
    phi = 0.1 * torch.randn((CHAINS, *theory.shape), generator=g, device=device)
    start = time.perf_counter()
    kept = handwritten_hmc(theory, phi, n, g)
    torch.stack(kept, 1)            # the ensemble, as theoryc returns it
    if device != "cpu":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def time_theoryc(theory, n: int, device, symmetrize: bool) -> tuple[float, float]:
    start = time.perf_counter()
    run = run_hmc(theory, n=n, chains=CHAINS, warmup=0, step_size=STEP,
                  trajectory_length=STEP * N_STEPS, trajectory_jitter=0.0, dtype=torch.float32, device=device,
                  symmetrize=symmetrize, progress=False)
    assert run.summary["n_steps"] == N_STEPS
    return (time.perf_counter() - start) / n, run.summary["acceptance"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'L':>3} {'hand ms/traj':>12} {'theoryc ms/traj':>15} {'ratio':>6} "
          f"{'no moves':>8} {'ratio':>6} {'acc':>5}")
    for L, n in ((32, 200), (8, 1000)):
        theory = theoryc.load("phi4_2d", L=L, kappa=0.21, **{"lambda": 0.022})
        time_handwritten(theory, 20, args.device)          # warm caches and the allocator
        hand, ours, bare = [], [], []
        for _ in range(args.reps):
            hand.append(time_handwritten(theory, n, args.device))
            t, acc = time_theoryc(theory, n, args.device, symmetrize=True)
            ours.append(t)
            bare.append(time_theoryc(theory, n, args.device, symmetrize=False)[0])
        h, o, b = (statistics.median(v) for v in (hand, ours, bare))
        print(f"{L:>3} {1e3 * h:12.3f} {1e3 * o:15.3f} {h / o:6.2f} {1e3 * b:8.3f} {h / b:6.2f} "
              f"{acc:5.2f}")


if __name__ == "__main__":
    main()
