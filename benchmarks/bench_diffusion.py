"""Diffusion-model throughput: training (samples/s through DSM steps) and generation (samples/s
through a full reverse integration), for a 0-d theory and 8x8 (and 32x32 with --big) lattices.

    python benchmarks/bench_diffusion.py [--device cpu|cuda] [--threads 1] [--big]

Numbers depend on the machine and its load; the defaults are small enough for a shared CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakes import double_gaussian_0d, phi4_lattice  # noqa: E402

from theoryc.runtime.models.diffusion import sample_diffusion, train_diffusion  # noqa: E402


def bench(label, theory, data, *, flavour, steps, batch, n_sample, sample_steps, solver, device):
    model = train_diffusion(theory, data, schedule=theory.schedules["ve"], flavour=flavour,
                            steps=steps, batch_size=batch, progress=False, device=device)
    train_rate = model.history["samples_per_second"]
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    sample_diffusion(model, n_sample, solver=solver, steps=sample_steps, progress=False,
                     batch_size=n_sample)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    evals = n_sample * sample_steps * (2 if solver in ("pc", "ode") else 1)
    print(f"{label:28s} {flavour:6s} train {train_rate:10.0f} samples/s (batch {batch})   "
          f"sample[{solver} x{sample_steps}] {n_sample / dt:9.1f} samples/s "
          f"({evals / dt:10.0f} score evals/s)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--big", action="store_true", help="also 32x32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    dg = double_gaussian_0d()
    x0 = torch.randn(20_000, 1)
    for flavour in ("score", "energy"):
        bench("0-d double Gaussian", dg, x0, flavour=flavour, steps=200, batch=512,
              n_sample=4096, sample_steps=100, solver="em", device=dev)
    lattices = [(8, 8)] + ([(32, 32)] if args.big else [])
    for lat in lattices:
        th = phi4_lattice(lat)
        data = torch.randn(512, 1, *lat)
        for flavour in ("score", "energy"):
            bench(f"phi4 {lat[0]}x{lat[1]} (conv 32x4)", th, data, flavour=flavour, steps=20,
                  batch=64 if lat == (8, 8) else 16, n_sample=64, sample_steps=20,
                  solver="em", device=dev)


if __name__ == "__main__":
    main()
