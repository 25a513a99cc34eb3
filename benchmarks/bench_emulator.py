"""Conditional diffusion as an emulator: generated events per second (the seed's headline).

    python benchmarks/bench_emulator.py [--device cpu] [--threads 1] [--lattice 8] [--n 2000]
                                        [--train-steps 200] [--width 32] [--depth 2]

A conditional model of free fields on a periodic lattice (1-d `--lattice 8`, or 2-d `--lattice
32x32`) at four masses, conditioned on m^2 (runtime/models/conditional.py), trained
`--train-steps` steps; then events per second of sample_conditional for one condition with the
probability-flow ODE (Heun, 40 steps = 80 network evaluations) and the reverse SDE (Euler-Maruyama,
100 steps), and training events per second. Throughput only: the accuracy is tests/test_conditional.py's.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from theoryc.runtime.models.conditional import sample_conditional, train_conditional
from theoryc.runtime.theory import Schedule


def vp_schedule():
    def k(t):
        return 0.1 + 19.9 * t

    def f(t):
        return torch.exp(-0.5 * (0.1 * t + 9.95 * t**2))

    return Schedule("vp", k=k, g=lambda t: k(t).sqrt(), f=f, xi=lambda t: 1 - f(t) ** 2)


class Shape:
    """The little a conditional model needs of a theory: the configuration shape."""

    def __init__(self, lattice):
        self.lattice, self.shape, self.name, self.params = lattice, (1, *lattice), "free", {}


def free_fields(lattice, masses, per_mass):
    """Free fields by FFT: phi(p) ~ N(0, 1 / (p_hat^2 + m^2)) on the periodic lattice."""
    ks = torch.meshgrid(*[torch.arange(n) * 2 * math.pi / n for n in lattice], indexing="ij")
    p2 = sum(4 * torch.sin(k / 2) ** 2 for k in ks)
    xs, cs = [], []
    for m2 in masses:
        noise = torch.fft.fftn(torch.randn(per_mass, *lattice, dtype=torch.float64),
                               dim=tuple(range(1, 1 + len(lattice))))
        x = torch.fft.ifftn(noise / (p2 + m2).sqrt(), dim=tuple(range(1, 1 + len(lattice)))).real
        xs.append(x)
        cs.append(torch.full((per_mass, 1), m2, dtype=torch.float64))
    return torch.cat(xs)[:, None].float(), torch.cat(cs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lattice", default="8")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lattice = tuple(int(v) for v in args.lattice.split("x"))
    x, m2 = free_fields(lattice, [0.5, 1.0, 1.5, 2.0], 2000)
    t0 = time.perf_counter()
    model = train_conditional(Shape(lattice), x, [m2], [{"name": "m2", "kind": "scalar", "width": 1}],
                              schedule=vp_schedule(), steps=args.train_steps,
                              batch_size=args.batch_size, width=args.width, depth=args.depth,
                              device=args.device, progress=False)
    train_rate = args.train_steps * args.batch_size / (time.perf_counter() - t0)
    print(f"lattice {args.lattice}, width {args.width}, depth {args.depth}, device {args.device}")
    print(f"training: {train_rate:.0f} events/s (batch {args.batch_size})")
    for solver, steps in (("ode", 40), ("em", 100)):
        sample_conditional(model, min(args.n, 64), [torch.tensor([[1.0]])], solver=solver,
                           steps=2, progress=False)                       # warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample_conditional(model, args.n, [torch.tensor([[1.0]])], solver=solver, steps=steps,
                           seed=1, progress=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        rate = args.n / (time.perf_counter() - t0)
        print(f"generation, {solver} {steps} steps: {rate:.0f} events/s ({args.n} events)")


if __name__ == "__main__":
    main()
