"""theoryc --compile against a hand-written HMC, eager and under torch.compile, in one run.

    python benchmarks/bench_compile.py [--device cpu] [--threads 1] [--reps 5] [--L 32] [--chains 64]
    python benchmarks/bench_compile.py --check [--device cuda]     # compiled == eager on a device

The work (issue 13): the compiled phi4_2d (kappa 0.21, lambda 0.022), 64 chains, float32, fixed
step 0.1, 10 leapfrog steps per trajectory, 32x32. The hand-written HMC is what a physicist would
write with the generated action and force: a `leapfrog(x, p)` of the whole trajectory, a
`hamiltonian(x, p)` and a loop drawing momenta and testing each chain in float64 (force and
action recomputed at each trajectory's start). "hand compiled" is the same script with those two
functions wrapped in `torch.compile`, as a physicist trying torch.compile would do (the whole
trajectory in one graph, unrolled: the most a compiler can be given). theoryc runs `run_hmc(...,
compile=True)` through its chain driver, with the symmetry move and five statistics recorded per
trajectory. Timings alternate between the contenders, `--reps` times; ratios are of medians
(>= 1: theoryc --compile is faster). Compile times (first call, this process) are printed too.
Langevin (BAOAB limit, every 10th step kept) eager and --compile on the same lattice follow.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import theoryc
from theoryc.runtime.chains.hmc import run_hmc
from theoryc.runtime.chains.langevin import run_langevin

STEP, N_STEPS = 0.1, 10


def handwritten(theory, compiled: bool):
    """The hand-written HMC's two hot functions, eager or under torch.compile."""
    def leapfrog(x, p):
        q = p - 0.5 * STEP * theory.force(x)
        for i in range(N_STEPS):
            x = x + STEP * q
            q = q - (STEP if i < N_STEPS - 1 else 0.5 * STEP) * theory.force(x)
        return x, q

    def hamiltonian(x, p):
        return theory.action(x).double() + 0.5 * p.double().square().flatten(1).sum(1)
    if compiled:
        return torch.compile(leapfrog), torch.compile(hamiltonian)
    return leapfrog, hamiltonian


def handwritten_hmc(fns, phi, n: int, generator: torch.Generator) -> torch.Tensor:
    leapfrog, hamiltonian = fns
    kept = []
    for _ in range(n):
        p = torch.randn(phi.shape, generator=generator, dtype=phi.dtype, device=phi.device)
        h0 = hamiltonian(phi, p)
        x, q = leapfrog(phi, p)
        h1 = hamiltonian(x, q)
        u = torch.rand(phi.shape[0], generator=generator, dtype=torch.float64, device=phi.device)
        accept = torch.log(u) < h0 - h1
        phi = torch.where(accept.view(-1, *([1] * (phi.dim() - 1))), x, phi)
        kept.append(phi)
    return torch.stack(kept, 1)            # the ensemble, as theoryc returns it


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_handwritten(theory, fns, n: int, chains: int, device) -> float:
    g = torch.Generator(device=device).manual_seed(0)
    phi = 0.1 * torch.randn((chains, *theory.shape), generator=g, device=device)
    sync(device)
    start = time.perf_counter()
    handwritten_hmc(fns, phi, n, g)
    sync(device)
    return (time.perf_counter() - start) / n


def time_theoryc(theory, n: int, chains: int, device, compile: bool):
    run = run_hmc(theory, n=n, chains=chains, warmup=0, step_size=STEP,
                  trajectory_length=STEP * N_STEPS, trajectory_jitter=0.0, dtype=torch.float32, device=device,
                  progress=False, compile=compile, store_configs=True)
    assert run.summary["n_steps"] == N_STEPS
    return run.timing["seconds_per_trajectory"], run.timing.get("compile_seconds", 0.0)


def time_langevin(theory, n: int, chains: int, device, compile: bool) -> float:
    run = run_langevin(theory, n=n, chains=chains, warmup=0, every=10, dtype=torch.float32,
                       device=device, progress=False, compile=compile)
    return run.timing["seconds_per_step"]


def check(device) -> None:
    """The compiled samplers against the eager ones on `device`, float64, same seeds: the
    largest difference of any configuration (rounding: < 1e-9; a wrong step: O(0.1))."""
    theory = theoryc.load("phi4_2d", L=8, kappa=0.21, **{"lambda": 0.022})
    worst = 0.0
    for name, run in (("hmc leapfrog", lambda c: run_hmc(theory, n=20, chains=8, warmup=20, device=device,
                                                         progress=False, compile=c)),
                      ("hmc omelyan", lambda c: run_hmc(theory, n=20, chains=8, warmup=20, device=device,
                                                        integrator="omelyan", progress=False, compile=c)),
                      ("langevin bm", lambda c: run_langevin(theory, n=20, chains=8, warmup=20, every=5,
                                                             device=device, progress=False, compile=c))):
        diff = float((run(False).configs - run(True).configs).abs().max())
        worst = max(worst, diff)
        print(f"{name:>14}: max |compiled - eager| = {diff:.2e}")
    if worst > 1e-9:
        raise SystemExit(f"compiled and eager samplers differ by {worst:.2e} on {device}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--n", type=int, default=200, help="trajectories per timing")
    ap.add_argument("--check", action="store_true", help="only check compiled == eager on --device")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        return check(args.device)
    theory = theoryc.load("phi4_2d", L=args.L, kappa=0.21, **{"lambda": 0.022})
    eager, compiled = handwritten(theory, False), handwritten(theory, True)
    start = time.perf_counter()
    time_handwritten(theory, compiled, 2, args.chains, args.device)     # compiles
    hand_compile = time.perf_counter() - start
    _, ours_compile = time_theoryc(theory, 2, args.chains, args.device, compile=True)
    time_langevin(theory, 2, args.chains, args.device, compile=True)
    time_handwritten(theory, eager, 20, args.chains, args.device)        # warm the allocator
    times = {"hand eager": [], "hand compiled": [], "theoryc eager": [], "theoryc --compile": []}
    steps = {False: [], True: []}
    for _ in range(args.reps):
        times["hand eager"].append(time_handwritten(theory, eager, args.n, args.chains, args.device))
        times["hand compiled"].append(time_handwritten(theory, compiled, args.n, args.chains, args.device))
        times["theoryc eager"].append(time_theoryc(theory, args.n, args.chains, args.device, False)[0])
        times["theoryc --compile"].append(time_theoryc(theory, args.n, args.chains, args.device, True)[0])
        for c in (False, True):
            steps[c].append(time_langevin(theory, args.n, args.chains, args.device, c))
    med = {k: statistics.median(v) for k, v in times.items()}
    ours = med["theoryc --compile"]
    print(f"phi4_2d {args.L}x{args.L}, {args.chains} chains, float32, {N_STEPS} leapfrog steps, "
          f"{args.device}, {args.threads} thread(s), medians of {args.reps}")
    print(f"{'':>18} {'ms/traj':>8} {'theoryc --compile faster by':>28}")
    for k, v in med.items():
        print(f"{k:>18} {1e3 * v:8.3f} {v / ours:28.2f}")
    print(f"compile seconds: hand {hand_compile:.1f}, theoryc {ours_compile:.1f} "
          "(theoryc's second compile in this process comes from torch's caches)")
    eager, fused = (statistics.median(steps[c]) for c in (False, True))
    print(f"langevin bm: eager {1e3 * eager:.3f} ms/step, --compile {1e3 * fused:.3f} ms/step, "
          f"faster by {eager / fused:.2f}")


if __name__ == "__main__":
    main()
