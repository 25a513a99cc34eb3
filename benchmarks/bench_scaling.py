"""Strong and weak scaling of HMC chains over torchrun ranks on the cpu, and what the chain-block
random streams cost one process, measured side by side in one run.

    python benchmarks/bench_scaling.py [--ranks 1 2] [--L 16] [--chains 32] [--n 200] [--reps 2]

The work: the compiled phi4_2d on L x L (kappa 0.21, lambda 0.022), float64, step size tuned over
50 warm-up trajectories, `--n` kept trajectories per chain, no configurations stored (observables
and statistics only), one thread per rank. Strong scaling: `--chains` chains in all on each
number of ranks; weak scaling: `--chains` chains per rank. The figure is chain-trajectories per
second of production (the file's timing, rank 0's clock: it includes the gathers of every block
to rank 0). Each rank is a process with OMP_NUM_THREADS=1, so N ranks want N free cores: on a
shared machine the ratios say as much about the neighbours as about theoryc.

Streams: one process, the same HMC run with the chains' random numbers drawn block by block
(parallel/streams.py, min(chains, 8) blocks: what makes the ensemble independent of the number
of ranks) and from one generator for all chains (one block); the ratio is blocks / one
generator in seconds per trajectory (> 1: the blocks cost that factor).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chain_rate(ranks: int, chains: int, args, workdir: Path) -> float:
    """Chain-trajectories per second of production of one torchrun job."""
    out = workdir / f"r{ranks}_c{chains}_{time.monotonic_ns()}.h5"
    cmd = ["sample", "phi4_2d", "--set", f"L={args.L}", "--sampler", "hmc", "--chains",
           str(chains), "--n", str(args.n), "--warmup", "50", "--no-configs", "--quiet",
           "-o", str(out)]
    if ranks == 1:
        launch = [sys.executable, "-m", "theoryc"]
    else:
        launch = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node",
                  str(ranks), "--master-port", str(free_port()), "-m", "theoryc", "--"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*launch, *cmd], check=True, env=env, capture_output=True, cwd=workdir)
    with h5py.File(out) as f:
        seconds = json.loads(f.attrs["timing"])["seconds"]
    out.unlink()
    return chains * args.n / seconds


def streams_ratio(args) -> float:
    """Seconds per trajectory with the default chain blocks / with one block (one generator for
    all chains, THEORYC_CHAIN_STREAMS=1), one process."""
    import torch
    import theoryc
    from theoryc.runtime.chains.hmc import run_hmc
    from theoryc.runtime.parallel.streams import STREAMS_ENV

    torch.set_num_threads(1)
    th = theoryc.load("phi4_2d", L=args.L)
    times = {"blocks": [], "one": []}
    saved = os.environ.pop(STREAMS_ENV, None)
    try:
        for _ in range(args.reps):
            for kind in times:
                os.environ.pop(STREAMS_ENV, None)
                if kind == "one":
                    os.environ[STREAMS_ENV] = "1"
                run = run_hmc(th, n=args.n, chains=args.chains, warmup=50, progress=False,
                              store_configs=False)
                times[kind].append(run.timing["seconds_per_trajectory"])
    finally:
        os.environ.pop(STREAMS_ENV, None)
        if saved is not None:
            os.environ[STREAMS_ENV] = saved
    return statistics.median(times["blocks"]) / statistics.median(times["one"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    print(f"phi4_2d {args.L}x{args.L}, HMC, {args.n} kept trajectories, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = []
        for ranks in args.ranks:
            strong = statistics.median(chain_rate(ranks, args.chains, args, work)
                                       for _ in range(args.reps))
            weak = statistics.median(chain_rate(ranks, args.chains * ranks, args, work)
                                     for _ in range(args.reps))
            rows.append((ranks, strong, weak))
    base_strong, base_weak = rows[0][1], rows[0][2]
    print(f"{'ranks':>5} {'strong chains/s':>16} {'speed-up':>9} {'weak chains/s':>14} "
          f"{'efficiency':>10}")
    for ranks, strong, weak in rows:
        print(f"{ranks:>5} {strong:>16.1f} {strong / base_strong:>9.2f} {weak:>14.1f} "
              f"{weak / (base_weak * ranks):>10.2f}")
    print(f"one process, {args.chains} chains in 8 blocks / in one (s per trajectory): "
          f"{streams_ratio(args):.3f}")


if __name__ == "__main__":
    main()
