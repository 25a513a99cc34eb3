"""Generated phi4_2d force vs a hand-written torch force vs autograd, measured side by side.

    python benchmarks/bench_force.py [--batch 64] [--L 32] [--dtype float32] [--device cpu]

Prints the time per call of each and the ratios; also the cold and cached `theoryc compile` times.
All three are checked to agree before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

import theoryc


def hand_written_force(phi: torch.Tensor, kappa: float, lam: float) -> torch.Tensor:
    """What a physicist would write for dS/dphi of the seed's hopping-parameter phi^4."""
    f = phi[:, 0]
    neighbours = (torch.roll(f, 1, 1) + torch.roll(f, -1, 1) + torch.roll(f, 1, 2) + torch.roll(f, -1, 2))
    return (-2 * kappa * neighbours + 2 * (1 - 2 * lam) * f + 4 * lam * f ** 3).unsqueeze(1)


def autograd_force(theory, phi: torch.Tensor) -> torch.Tensor:
    x = phi.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(theory.action(x).sum(), x)
    return g


def per_call(fn, repeats: int) -> float:
    """Best of 5 blocks of `repeats` calls, in seconds per call."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(5):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def compile_times() -> tuple[float, float]:
    """Wall time of `theoryc compile phi4_2d` in a fresh process: cold (empty cache), then cached."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "THEORYC_CACHE": cache}
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "theoryc.cli", "compile", "phi4_2d"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return times[0], times[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time the generated force wrapped by torch.compile (slow to compile)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    theory = theoryc.load("phi4_2d", L=args.L)
    kappa, lam = theory.params["kappa"], theory.params["lambda"]
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(args.batch, *theory.shape, generator=gen, dtype=dtype).to(args.device)

    generated, hand, auto = theory.force(phi), hand_written_force(phi, kappa, lam), autograd_force(theory, phi)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(generated, hand, atol=tol) and torch.allclose(generated, auto, atol=tol)

    t_gen = per_call(lambda: theory.force(phi), args.repeats)
    t_hand = per_call(lambda: hand_written_force(phi, kappa, lam), args.repeats)
    t_auto = per_call(lambda: autograd_force(theory, phi), args.repeats)
    t_fused = None
    if args.torch_compile:
        fused = theory.torch_compiled()
        assert torch.allclose(fused.force(phi), generated, atol=tol)
        t_fused = per_call(lambda: fused.force(phi), args.repeats)
    cold, cached = compile_times()
    print(f"phi4_2d force, batch {args.batch}, {args.L}x{args.L}, {args.dtype}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  generated     {t_gen * 1e6:9.1f} us/call")
    print(f"  hand-written  {t_hand * 1e6:9.1f} us/call")
    print(f"  autograd      {t_auto * 1e6:9.1f} us/call")
    if t_fused is not None:
        print(f"  generated + torch.compile {t_fused * 1e6:9.1f} us/call")
    print(f"  generated / hand-written = {t_gen / t_hand:.2f}   (goal <= 1.1)")
    print(f"  autograd / generated     = {t_auto / t_gen:.2f}   (goal >= 3)")
    print(f"theoryc compile phi4_2d: cold {cold:.2f} s (goal < 3), cached {cached:.2f} s (goal < 0.5)")


if __name__ == "__main__":
    main()
