"""Langevin throughput (default: cpu, 1 thread).

    python benchmarks/bench_langevin.py [--threads 1] [--chains 100000 1000000] [--device cpu]

1. Complex Langevin on the seed's complex quartic model (the compiled theory when the compiler
   is available, else the closed-form fake): chain-steps per second of the full driver (adaptive
   step, asynchronous chains, recording, runaway checks) for many chains, per scheme and dtype.
   A chain-step is one step of one chain (rk2: two drift evaluations).
2. Real Langevin on phi4_2d (L = 32, 64 chains): seconds per site-update of one step of each
   scheme, next to one drift (force) evaluation per site: the overhead of the integrator.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import fakes_langevin  # noqa: E402

from theoryc.runtime.chains.complex_langevin import run_complex_langevin  # noqa: E402
from theoryc.runtime.chains.langevin import KERNELS  # noqa: E402


def load(name, **params):
    try:
        import theoryc
        return theoryc.load(name, **params), "compiled"
    except Exception as err:  # the compiler may be absent in a partial checkout
        print(f"(theoryc.load({name!r}) failed: {err}; using the closed-form fake)")
        fake = {"complex_quartic": fakes_langevin.quartic_fast,
                "phi4_2d": lambda **p: fakes_langevin.phi4_fast((p["L"], p["L"]), p["kappa"],
                                                               p["lambda"])}[name]
        return fake(**params), "fake"


def cl_rate(theory, chains, scheme, dtype, device, steps):
    kw = dict(n=steps // 20, chains=chains, warmup=20, every=20, seed=0, scheme=scheme,
              dtype=dtype, device=device, progress=False)
    run_complex_langevin(theory, **dict(kw, chains=min(chains, 1000)))   # warm caches
    run = run_complex_langevin(theory, **kw)
    return run.timing["chain_steps_per_second"], run.summary


def lattice_rates(theory, chains, dtype, device, steps):
    phi = torch.randn((chains, *theory.shape), dtype=dtype, device=device)
    sites = chains * theory.volume
    gen = torch.Generator(device=device).manual_seed(0)

    def timed(fn):
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if device != "cpu":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps / sites

    out = {"drift": timed(lambda: theory.drift(phi))}
    for name, kernel_cls in KERNELS.items():
        kernel = kernel_cls(theory)
        state = kernel.init(phi.clone(), gen)

        def one_step(kernel=kernel):
            nonlocal state
            state, _ = kernel.step(state, gen, {"step": 0.01})
        out[name] = timed(one_step)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chains", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=200, help="CL steps per measurement")
    ap.add_argument("--L", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s)")

    theory, kind = load("complex_quartic")
    print(f"\ncomplex Langevin, complex_quartic ({kind}), adaptive steps, {args.steps} steps")
    print(f"{'chains':>9} {'scheme':>6} {'dtype':>9} {'chain-steps/s':>14} {'chain steps':>14}")
    for chains in args.chains:
        for scheme in ("em", "rk2"):
            for dtype in (torch.float32, torch.float64):
                rate, summary = cl_rate(theory, chains, scheme, dtype, args.device, args.steps)
                print(f"{chains:>9} {scheme:>6} {str(dtype)[6:]:>9} {rate:>14.3e} "
                      f"{summary['chain_steps']:>14.0f}")

    lattice, kind = load("phi4_2d", L=args.L, kappa=0.21, **{"lambda": 0.022})
    print(f"\nreal Langevin, phi4_2d {args.L}x{args.L} ({kind}), 64 chains: ns per site-update")
    for dtype in (torch.float32, torch.float64):
        rates = lattice_rates(lattice, 64, dtype, args.device, steps=50)
        cells = "  ".join(f"{k} {v * 1e9:6.2f}" for k, v in rates.items())
        ratios = "  ".join(f"{k} {v / rates['drift']:.2f}x" for k, v in rates.items()
                           if k != "drift")
        print(f"{str(dtype)[6:]:>8}: {cells}   (step / one drift: {ratios})")


if __name__ == "__main__":
    main()
