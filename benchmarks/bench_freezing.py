"""Topological freezing on 2-d U(1): tau_int(Q) of HMC against the gauge-equivariant flow after
independent Metropolis (issue 10), at several beta, side by side in one run.

    python benchmarks/bench_freezing.py [--L 8] [--betas 3 5 7] [--n 10000] [--chains 16]
        [--flow-steps 1500] [--flow-layers 0] [--device cpu] [--threads 1]

Per beta: HMC (the default adapted step, `--n` trajectories x `--chains` after 500 of warm-up) and
the gauge flow (runtime/models/gauge_flow.py: its PlaquetteMarginal layer plus `--flow-layers`
plaquette couplings, trained by reverse KL for `--flow-steps` steps of 64, then `--n` x `--chains`
independent-Metropolis steps). Printed as a markdown table: training seconds, sampling seconds,
acceptance, ESS (the flow's Kish ESS per proposal; for HMC n / (2 tau_int(Q)) per trajectory),
tau_int(Q) (Gamma method, in steps), changes of Q per 1000 steps, <Q^2> +- error and the exact
<Q^2> (../shared/reference/compute_exact.py, when present). Where HMC's Q never changes, its
tau_int is not measurable ("frozen": larger than the run) and its <Q^2> is that of one sector.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import theoryc

EXACT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "compute_exact.py"


def exact_q2(L, beta):
    """<Q^2> of the exact solution, or None without the reference script."""
    if not EXACT.is_file():
        return None
    spec = importlib.util.spec_from_file_location("compute_exact", EXACT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():      # quad's round-off notes on the g(n) of large n (~0)
        warnings.simplefilter("ignore")
        return module.u1_2d(L, beta)["Q2"]


def q_figures(run, th):
    """(tau_int(Q), <Q^2> result, changes of Q per 1000 steps) of a run."""
    summary = theoryc.measure(run, theory=th).summary
    q = np.rint(np.asarray(run.observables["Q"], dtype=np.float64))
    changes = float(np.mean(q[:, 1:] != q[:, :-1])) * 1000
    tau = summary["observables"]["Q"]["tau_int"] if changes > 0 else math.inf
    q2 = summary["estimates"]["chi_t"]
    volume = th.params["L"] ** 2
    return tau, {"mean": q2["mean"] * volume, "error": q2["error"] * volume}, changes


def hmc_row(th, args):
    start = time.perf_counter()
    run = theoryc.sample(th, sampler="hmc", n=args.n, chains=args.chains, warmup=500, seed=2,
                         device=args.device, progress=False)
    seconds = time.perf_counter() - start
    tau, q2, changes = q_figures(run, th)
    ess = 1 / (2 * tau) if math.isfinite(tau) else 0.0
    return dict(train=0.0, sample=seconds, acceptance=run.summary.get("acceptance", float("nan")),
                ess=ess, tau=tau, changes=changes, q2=q2)


def flow_row(th, args):
    start = time.perf_counter()
    trained = theoryc.train(th, "flow", steps=args.flow_steps, batch_size=64, lr=1e-2,
                            n_layers=args.flow_layers, hidden=8, device=args.device,
                            progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run = theoryc.sample(th, sampler="flow", model=trained.model, n=args.n, chains=args.chains,
                         seed=1, device=args.device, progress=False)
    seconds = time.perf_counter() - start
    tau, q2, changes = q_figures(run, th)
    return dict(train=train_seconds, sample=seconds, acceptance=run.summary["acceptance"],
                ess=run.summary["ess"], tau=tau, changes=changes, q2=q2)


def fmt_tau(tau):
    return "frozen" if not math.isfinite(tau) else f"{tau:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, default=8)
    parser.add_argument("--betas", type=float, nargs="+", default=[3.0, 5.0, 7.0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--flow-steps", type=int, default=1500)
    parser.add_argument("--flow-layers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"U(1) L={args.L}, {args.chains} chains x {args.n} steps, device={args.device}, "
          f"flow: marginal layer + {args.flow_layers} couplings, {args.flow_steps} training steps")
    print("| beta | sampler | train s | sample s | acceptance | ESS | tau_int(Q) | Q changes "
          "/ 1000 | <Q^2> | exact <Q^2> |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for beta in args.betas:
        th = theoryc.load("u1_2d", L=args.L, beta=beta)
        exact = exact_q2(args.L, beta)
        for name, row in (("HMC", hmc_row), ("flow (IMH)", flow_row)):
            r = row(th, args)
            exact_text = "" if exact is None else f"{exact:.4f}"
            print(f"| {beta:g} | {name} | {r['train']:.0f} | {r['sample']:.0f} | "
                  f"{r['acceptance']:.3f} | {r['ess']:.3f} | {fmt_tau(r['tau'])} | "
                  f"{r['changes']:.2f} | {r['q2']['mean']:.4f}({r['q2']['error']:.4f}) | "
                  f"{exact_text} |", flush=True)


if __name__ == "__main__":
    main()
