"""Generative sampling: the reference path against the fast one, side by side in one run.

    python benchmarks/bench_generative.py [--device cpu|cuda] [--threads 1] [--repeats 5]

Cases (networks at the README examples' sizes, random weights: speed does not depend on them):
- EBM score, 0-d complex quartic (TimeMLP width 64, depth 3, batch 2048): autograd's
  gradient of the energy against TimeMLP.value_and_vjp (samples/s of one score evaluation);
- EBM reverse SDE, the same model: sample_diffusion (EM) of 8192 samples, 100 steps, both paths;
- HMC force on the EBM (4 chains, the README's `--sampler hmc --model ebm.pt`): forces/s;
- VAN Ising 8x8 (MADE hidden 2, Z2): sample_spins of 256 (the training batch) and 20000,
  the full-recompute reference against the incremental sampler.
The two paths are timed in interleaved blocks (best block of each), so machine load hits both
alike; the ratio column is what to read on a shared machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakes import quartic_0d  # noqa: E402

from theoryc.runtime.models.diffusion import EnergyPotential, build_model, sample_diffusion  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def side_by_side(label, unit, count, old, new, repeats):
    """Time old and new in interleaved blocks after a warm-up call of each; print the best
    block's rates and their ratio."""
    old(), new()
    t_old = t_new = float("inf")
    for _ in range(repeats):
        t_old = min(t_old, timed(old))
        t_new = min(t_new, timed(new))
    print(f"{label:44s} {count / t_old:12.0f} {count / t_new:12.0f} {unit:10s} "
          f"{t_old / t_new:6.2f}x", flush=True)


def ebm_model(device):
    theory = quartic_0d()
    data = torch.complex(torch.randn(4000, 1), 0.4 * torch.randn(4000, 1))
    model = build_model(theory, data, schedule=theory.schedules["ve"], flavour="energy",
                        device=device)
    return theory, model


def with_path(model, analytic, fn):
    def run():
        model.analytic_gradient = analytic
        try:
            return fn()
        finally:
            model.analytic_gradient = True
    return run


def bench_ebm(device, repeats):
    theory, model = ebm_model(device)
    batch = 2048
    x = torch.randn(batch, 2, device=device)
    t = torch.tensor(0.05, device=device).expand(batch)
    def score():
        for _ in range(20):
            model.score(x, t)
    side_by_side("EBM score, 0-d (MLP 64x3, batch 2048, x20)", "samples/s", 20 * batch,
                 with_path(model, False, score), with_path(model, True, score), repeats)
    n, steps = 8192, 100
    draw = lambda: sample_diffusion(model, n, steps=steps, progress=False)  # noqa: E731
    side_by_side(f"EBM reverse SDE, {n} x {steps} EM steps", "samples/s", n,
                 with_path(model, False, draw), with_path(model, True, draw), max(2, repeats // 2))
    pot = EnergyPotential(model, theory)
    phi = torch.randn(4, 2, dtype=torch.float64, device=device)

    def forces():
        for _ in range(200):
            pot.force(phi)
    side_by_side("HMC force on the EBM, 4 chains (x200)", "forces/s", 200,
                 with_path(model, False, forces), with_path(model, True, forces), repeats)


def bench_van(device, repeats):
    from theoryc.runtime.models.van import VAN
    try:
        from theoryc.runtime.models.van import sample_spins_reference
    except ImportError:
        return
    van = VAN((1, 8, 8), hidden=2, depth=2, z2=True).to(device)
    for n in (256, 20000):
        gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
        side_by_side(f"VAN Ising 8x8 sample_spins({n})", "configs/s", n,
                     lambda: sample_spins_reference(van, n, gen()),
                     lambda: van.sample_spins(n, gen()), repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'case':44s} {'reference':>12s} {'fast':>12s} {'unit':10s} {'ratio':>7s}")
    with torch.no_grad():
        bench_ebm(args.device, args.repeats)
        bench_van(args.device, args.repeats)


if __name__ == "__main__":
    main()
