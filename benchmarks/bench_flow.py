"""Training throughput of reverse-KL flows and VANs on an L = 8 lattice (default: cpu, 1 thread).

    python benchmarks/bench_flow.py [--device cuda] [--threads 1] [--steps 30]

Prints training steps per second (each step: sample a batch, action, loss, backward, Adam) and
sampling throughput (configurations per second) for batch 64 and 256.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import fakes  # noqa: E402
import fakes_flow  # noqa: E402

from theoryc.runtime.models.sampling import sample_flow  # noqa: E402
from theoryc.runtime.models.variational import train_flow  # noqa: E402


def steps_per_second(theory, steps, batch_size, device, **arch):
    train_flow(theory, steps=2, batch_size=batch_size, device=device, progress=False, **arch)
    start = time.perf_counter()
    model = train_flow(theory, steps=steps, batch_size=batch_size, device=device, progress=False,
                       **arch)
    if device != "cpu":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start), model


def samples_per_second(theory, model, batch_size, device):
    n = 8 * batch_size
    start = time.perf_counter()
    sample_flow(theory, model, n, device=device, batch_size=batch_size, progress=False)
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("flow phi4 L=8 (16 layers, 16 ch)", fakes_flow.phi4_mass_form(L=8),
              dict(n_layers=16, hidden=16)),
             ("flow phi4 L=8 (16 layers, 8 ch)", fakes_flow.phi4_mass_form(L=8),
              dict(n_layers=16, hidden=8)),
             ("VAN ising L=8 (MADE, 2/spin, z2)", fakes.ising_2d(L=8), dict(hidden=2, depth=2))]
    print(f"device={args.device} threads={args.threads} float32")
    print(f"{'model':36s} {'batch':>5s} {'train steps/s':>14s} {'samples/s':>10s}")
    for name, theory, arch in cases:
        for batch in (64, 256):
            rate, model = steps_per_second(theory, args.steps, batch, args.device, **arch)
            sampling = samples_per_second(theory, model, batch, args.device)
            print(f"{name:36s} {batch:5d} {rate:14.1f} {sampling:10.0f}", flush=True)


if __name__ == "__main__":
    main()
