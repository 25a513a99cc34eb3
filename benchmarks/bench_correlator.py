"""The cost of the LANGUAGE.md correlator C(t) (all components) against one force evaluation,
on the shipped phi4_2d: 64x64, 64 chains, one thread by default (issue 11: at most 3x).

    python benchmarks/bench_correlator.py [--L 64] [--batch 64] [--dtype float32] [--threads 1]

C(t) alone is timed through a theory whose only observable is the shipped C(t); the full
`observables` of the shipped theory (M, phi2, C, G0, G1) is timed too. Checked against C(t)
written out in torch before anything is timed.
"""
from __future__ import annotations

import argparse
import time

import torch

import theoryc

C_ONLY = """theory correlator_only
param L = 64
lattice L x L
field phi : real
action = sum(x)[ phi(x)^2 ]
observable C(t)  = mean(x)[ phi(x) * sum(r in 0..L-1)[ phi(x + t*e0 + r*e1) ] ]
"""


def per_call(fns: dict, repeats: int, rounds: int = 9) -> dict:
    """Seconds per call of each function: the best of `rounds` blocks of `repeats` calls, the
    functions' blocks interleaved round by round (a machine shared with other work slows all of
    them alike instead of whichever happened to run at the time)."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats)
    return best


def correlator_by_hand(phi: torch.Tensor) -> torch.Tensor:
    """C(t) = (1/V) sum_x phi(x) sum_r phi(x + t e0 + r e1), from the time-slice sums."""
    f = phi[:, 0]
    slices = f.sum(2)
    L0 = slices.shape[1]
    return torch.stack([(slices * torch.roll(slices, -t, 1)).sum(1) for t in range(L0)], 1) / f[0].numel()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    shipped = theoryc.load("phi4_2d", L=args.L)
    only = theoryc.load_text(C_ONLY, "correlator_only.theory", L=args.L)
    phi = torch.randn(args.batch, *shipped.shape, generator=torch.Generator().manual_seed(0),
                      dtype=dtype)
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    assert torch.allclose(only.observables(phi)["C"], correlator_by_hand(phi), rtol=tol, atol=tol)
    times = per_call({"force": lambda: shipped.force(phi), "C": lambda: only.observables(phi),
                      "all": lambda: shipped.observables(phi)}, args.repeats)
    t_force, t_c, t_all = times["force"], times["C"], times["all"]
    print(f"phi4_2d {args.L}x{args.L}, batch {args.batch}, {args.dtype}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"  force                   {t_force * 1e3:8.2f} ms/call")
    print(f"  C(t), all {args.L} t        {t_c * 1e3:8.2f} ms/call   = {t_c / t_force:.2f} x force"
          "   (goal <= 3)")
    print(f"  every observable        {t_all * 1e3:8.2f} ms/call   = {t_all / t_force:.2f} x force")


if __name__ == "__main__":
    main()
