"""The bias of the probability-flow ODE's log q, and what it leaves in reweighted diffusion samples.

    python benchmarks/bench_exact_diffusion.py [--threads 1] [--n 2000] [--device cpu]

1. log q against exact densities (no network): the double Gaussian's exact mixture score
   (1 feature) and a correlated Gaussian in 16 dimensions (exact score -(f^2 C + xi)^-1 x):
   mean and spread over samples of log q - log p_exact, for Heun steps and Hutchinson probes.
2. A briefly trained model of the free phi4 field on 4x4 (kappa 0.2; exact <phi^2> from the
   inverse Hessian of the action): raw and reweighted <phi^2> with the ratio estimator's error,
   Kish's ESS and samples per second for the same steps/probes grid, measured side by side.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakes import double_gaussian_0d, phi4_lattice  # noqa: E402
from test_sde import mixture_score  # noqa: E402
from theoryc.runtime.models.diffusion import train_diffusion  # noqa: E402
from theoryc.runtime.models.likelihood import flow_with_log_density, sample_exact  # noqa: E402
from theoryc.runtime.models.sde import prior_sample  # noqa: E402
from theoryc.runtime.stats.reweighting import weights  # noqa: E402

F64 = torch.float64


def mixture_errors(steps, n=2000):
    schedule = double_gaussian_0d().schedules["ve"]
    mean, var = torch.zeros(1, dtype=F64), torch.tensor([1.0625], dtype=F64)
    x1 = prior_sample(schedule, n, mean, var, torch.Generator().manual_seed(1))
    x, log_q = flow_with_log_density(mixture_score(schedule), x1, schedule, mean, var, steps=steps)
    te = torch.tensor(1e-3, dtype=F64)
    f, s2 = schedule.f(te), schedule.f(te) ** 2 * 0.0625 + schedule.xi(te)
    y = x[:, 0]
    exact = (torch.logaddexp(-(y - f) ** 2 / (2 * s2), -(y + f) ** 2 / (2 * s2))
             - 0.5 * torch.log(2 * math.pi * s2) - math.log(2))
    return log_q - exact


def correlated_errors(steps, probes, dim=16, n=1000):
    schedule = double_gaussian_0d().schedules["vp"]
    g = torch.Generator().manual_seed(5)
    b = torch.randn(dim, dim, generator=g, dtype=F64) / math.sqrt(dim)
    cov = b @ b.T + 0.2 * torch.eye(dim, dtype=F64)
    eye = torch.eye(dim, dtype=F64)

    def cov_t(t):
        return schedule.f(t)[:, None, None] ** 2 * cov + schedule.xi(t)[:, None, None] * eye

    def score(x, t):
        return -torch.linalg.solve(cov_t(t), x.unsqueeze(-1)).squeeze(-1)

    zero, var = torch.zeros(dim, dtype=F64), torch.diagonal(cov).clone()
    c1 = cov_t(torch.ones(1, dtype=F64))[0]
    x1 = torch.randn(n, dim, generator=g, dtype=F64) @ torch.linalg.cholesky(c1).T
    one = torch.ones((), dtype=F64)
    diag_p1 = torch.distributions.Normal(zero, (schedule.f(one) ** 2 * var
                                                + schedule.xi(one)).sqrt()).log_prob(x1).sum(1)
    shift = torch.distributions.MultivariateNormal(zero, c1).log_prob(x1) - diag_p1
    x, log_q = flow_with_log_density(score, x1, schedule, zero, var, steps=steps, probes=probes,
                                     generator=g)
    exact = torch.distributions.MultivariateNormal(zero, cov_t(torch.full((1,), 1e-3, dtype=F64))[0])
    return log_q + shift - exact.log_prob(x)


def table_exact_densities():
    print("1. log q - log p_exact over samples: mean (spread)")
    print("| density | features | probes | 10 steps | 20 steps | 40 steps | 80 steps |")
    print("|---|---|---|---|---|---|---|")
    cells = [f"{e.mean():+.1e} ({e.std():.1e})" for e in (mixture_errors(s) for s in (10, 20, 40, 80))]
    print(f"| double Gaussian, VE | 1 | exact | {' | '.join(cells)} |")
    for probes in (0, 1, 4):
        cells = [f"{e.mean():+.1e} ({e.std():.1e})"
                 for e in (correlated_errors(s, probes) for s in (10, 20, 40, 80))]
        print(f"| correlated Gaussian, VP | 16 | {probes or 'exact'} | {' | '.join(cells)} |")


def free_field(lattice, n):
    theory = phi4_lattice(lattice, 0.2, 0.0)
    vol = math.prod(lattice)
    hess = torch.autograd.functional.hessian(
        lambda v: theory.action(v.reshape(1, 1, *lattice))[0], torch.zeros(vol, dtype=F64))
    cov = torch.linalg.inv(hess)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(n, vol, generator=g, dtype=F64) @ torch.linalg.cholesky(cov).T
    return theory, data.reshape(-1, 1, *lattice).float(), float(torch.diagonal(cov).mean())


def table_reweighting(n, device):
    lattice = (4, 4)
    theory, data, exact = free_field(lattice, 20000)
    model = train_diffusion(theory, data, schedule=theory.schedules["ve"], steps=300,
                            batch_size=128, width=16, depth=1, progress=False)
    print(f"\n2. free phi4 4x4, 300 training steps; exact <phi^2> = {exact:.4f}; {n} samples")
    print("| ODE steps | probes | raw <phi^2> | reweighted <phi^2> | ESS | samples/s |")
    print("|---|---|---|---|---|---|")
    for steps, probes in ((10, 1), (20, 1), (40, 1), (20, 4), (20, 0)):
        t0 = time.perf_counter()
        run = sample_exact(theory, model, n, steps=steps, probes=probes, seed=1, progress=False,
                           device=device, batch_size=1000)
        rate = n / (time.perf_counter() - t0)
        o = (run.configs[0, :, 0].double() ** 2).flatten(1).mean(1).numpy()
        w = weights(run.log_weights[0])
        w /= w.sum()
        rw = float((w * o).sum())
        err = math.sqrt(float((w**2 * (o - rw) ** 2).sum()))
        print(f"| {steps} | {probes or 'exact (16)'} | {o.mean():.4f}({o.std() / math.sqrt(n) * 1e4:.0f})"
              f" | {rw:.4f}({err * 1e4:.0f}) | {run.summary['ess']:.2f} | {rate:.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table_exact_densities()
    table_reweighting(args.n, args.device)


if __name__ == "__main__":
    main()
