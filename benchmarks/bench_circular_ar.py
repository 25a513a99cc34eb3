"""Sampling speed of the von Mises autoregressive network (runtime/models/circular_ar.py) on XY:
the incremental sampler (van.MadeStepper: one first-layer column update per angle) against the
direct one (a full MADE pass per angle), measured side by side in one run.

    python benchmarks/bench_circular_ar.py [--device cuda] [--threads 1] [--sizes 4 8 16]

Prints configurations per second of each and their ratio, per lattice size L (n = L^2 angles),
for the default network (one masked layer, 6 components, a reference angle) and batch 256.
"""
from __future__ import annotations

import argparse
import time

import torch

from theoryc.runtime.models.circular_ar import CircularAR, sample_angles_reference


def rate(draw, model, batch, device, repeats):
    draw(model, batch, torch.Generator(device=device).manual_seed(0))      # warm up
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for r in range(repeats):
        draw(model, batch, torch.Generator(device=device).manual_seed(r))
    if device != "cpu":
        torch.cuda.synchronize()
    return repeats * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={args.threads} float32 batch={args.batch}")
    print(f"{'L':>3s} {'angles':>6s} {'incremental/s':>14s} {'direct/s':>10s} {'ratio':>6s}")
    for size in args.sizes:
        torch.manual_seed(0)
        model = CircularAR((1, size, size), depth=1, components=6, reference=True).to(args.device)
        fast = rate(lambda m, b, g: m.sample_angles(b, g), model, args.batch, args.device,
                    args.repeats)
        slow = rate(sample_angles_reference, model, args.batch, args.device, args.repeats)
        print(f"{size:3d} {size * size:6d} {fast:14.0f} {slow:10.0f} {fast / slow:6.1f}",
              flush=True)


if __name__ == "__main__":
    main()
