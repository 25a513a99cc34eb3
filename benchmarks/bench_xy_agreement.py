"""XY at L = 8, beta = 1: HMC, Langevin, the torus coupling flow and the von Mises autoregressive
network side by side, as tests/test_xy_agreement.py runs them (same settings and seeds by
default); prints the README's table (e, chi, log Z, acceptance, ESS, training CPU-seconds).

    python benchmarks/bench_xy_agreement.py                      # the test's sizes, ~2 CPU-min
    python benchmarks/bench_xy_agreement.py --device cuda --scale 4   # 4x training and chains

--scale multiplies the training steps and the chain lengths.
"""
from __future__ import annotations

import argparse
import time

import theoryc

XY_FLOW = dict(steps=600, batch_size=64, lr=3e-3, n_layers=8, lr_final_fraction=0.03,
               temper=0.85)      # tests/test_torus_flows.py's recipe (q towards p^0.85)


def timed(fn):
    start = time.process_time()
    return fn(), time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    s, dev = args.scale, args.device
    th = theoryc.load("xy_2d", L=8, beta=1)
    ar, ar_s = timed(lambda: theoryc.train(th, "flow", autoregressive=True, steps=400 * s,
                                           batch_size=256, lr=1e-2, device=dev,
                                           progress=False).model)
    flow, flow_s = timed(lambda: theoryc.train(th, "flow", **{**XY_FLOW, "steps": 600 * s},
                                               device=dev, progress=False).model)
    runs = {name: theoryc.sample(th, sampler="flow", model=m, n=2000 * s, chains=16, seed=1,
                                 device=dev, progress=False)
            for name, m in (("autoregressive + IMH", ar), ("torus flow + IMH", flow))}
    runs["HMC"] = theoryc.sample(th, sampler="hmc", n=2000 * s, chains=16, warmup=200, seed=2,
                                 device=dev, progress=False)
    runs["Langevin (every 20)"] = theoryc.sample(th, sampler="langevin", n=600 * s, chains=16,
                                                 warmup=2000, every=20, seed=3, device=dev,
                                                 progress=False)
    train_s = {"autoregressive + IMH": f"{400 * s} x 256, {ar_s:.0f} CPU-s",
               "torus flow + IMH": f"{600 * s} x 64, {flow_s:.0f} CPU-s"}
    print(f"device={dev} scale={s}")
    print("| sampler | e | chi | log Z | F_q | acceptance (ESS) | training |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, run in runs.items():
        table = theoryc.measure(run, theory=th).summary
        e, chi = table["observables"]["e"], table["estimates"]["chi"]
        extra = ["", "", "", ""]
        if name in train_s:
            z, f = run.summary["log_z"], run.summary["free_energy"]
            extra = [f"{z['mean']:.3f} +- {z['error']:.3f}", f"{f['mean']:.3f} +- {f['error']:.3f}",
                     f"{run.summary['acceptance']:.2f} ({run.summary['ess']:.4f})", train_s[name]]
        print(f"| {name}, 16 x {run.observables['e'].shape[1]} | {e['mean']:.4f} +- "
              f"{e['error']:.4f} | {chi['mean']:.2f} +- {chi['error']:.2f} | " + " | ".join(extra)
              + " |", flush=True)


if __name__ == "__main__":
    main()
