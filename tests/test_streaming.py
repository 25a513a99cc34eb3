"""Streamed ensembles: memory and checkpoints do not grow with the run, and a run killed at any
moment (SIGKILL, no chance to clean up) and resumed writes the same file as an uninterrupted run.

Each run is a separate Python process, as a user's would be: the kill tests drive `theoryc sample`
through `python -m theoryc.cli`; the memory test reads the child's own peak RSS (ru_maxrss).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
VARIABLE_ATTRS = {"created", "timing"}      # when it ran and how fast: the only differences


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**ENV, "THEORYC_CACHE": str(tmp_path_factory.mktemp("cache"))}


def file_contents(path) -> dict:
    """Every dataset (as bytes) and every attribute but the variable ones."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                a = obj[()]
                out[name] = (a.dtype.str, a.shape, a.tobytes())
        f.visititems(visit)
        out["attrs"] = {k: (v.tobytes() if isinstance(v, np.ndarray) else v)
                        for k, v in f.attrs.items() if k not in VARIABLE_ATTRS}
    return out


def sample_command(args, output):
    return [sys.executable, "-m", "theoryc.cli", "sample", *map(str, args), "--quiet",
            "-o", str(output)]


def mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else -1


def sampling_time(command, checkpoint: Path, env) -> float:
    """Run `command` to the end; seconds from its first checkpoint to its exit."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and not checkpoint.exists():
        time.sleep(0.01)
    start = time.perf_counter()
    assert proc.wait() == 0, proc.stderr.read()
    return time.perf_counter() - start


def run_and_kill(command, checkpoint: Path, delay: float, env) -> bool:
    """Start `command`; once it is sampling (it has written a new checkpoint) wait `delay`
    seconds more and SIGKILL it. True if it was killed, False if it finished first."""
    before = mtime(checkpoint)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and mtime(checkpoint) == before:
        time.sleep(0.01)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


RUNS = {
    "hmc": ("phi4_2d", "--set", "L=8", "--sampler", "hmc", "--n", 4000, "--chains", 4,
            "--warmup", 200, "--seed", 3),
    "langevin": ("phi4_2d", "--set", "L=8", "--sampler", "langevin", "--n", 3000, "--chains", 8,
                 "--every", 8, "--warmup", 200, "--seed", 4, "--save-every", 3),
    "complex_langevin": ("complex_quartic", "--sampler", "langevin", "--n", 1200, "--chains",
                         128, "--every", 10, "--warmup", 100, "--seed", 5, "--no-configs"),
}


@pytest.mark.parametrize("sampler", sorted(RUNS))
def test_sigkill_at_random_moments_then_resume_gives_the_same_file(tmp_path, env, sampler):
    """Kill the run twice at random moments of its sampling (some land in a block write or a
    checkpoint), resume after each kill, and compare with an uninterrupted run: datasets bit for
    bit, attributes but `created`/`timing`."""
    args = RUNS[sampler]
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    ckpt = Path(f"{parts}.ckpt")
    span = sampling_time(sample_command(args, whole), Path(f"{whole}.ckpt"), env)
    rng = np.random.default_rng(sum(map(ord, sampler)))
    killed = 0
    for fraction in (0.2, 0.3):     # of the sampling time of the uninterrupted run
        delay = span * fraction * (0.5 + rng.random())
        resume = ("--resume",) if killed else ()
        killed += run_and_kill(sample_command((*args, *resume), parts), ckpt, delay, env)
    # on a loaded machine a resumed run may finish before its moment comes; one kill at least
    assert killed >= 1, "the runs finished before they could be killed: make them longer"
    done = subprocess.run(sample_command((*args, "--resume"), parts), env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not ckpt.exists() and not Path(f"{parts}.tmp").exists()
    a, b = file_contents(whole), file_contents(parts)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


MEMORY_CHILD = """
import json, os, resource, sys
import fakes, theoryc
from theoryc.runtime.chains import driver
sizes = []
real = driver.save_checkpoint
def measured(path, state):
    real(path, state)
    sizes.append(os.path.getsize(path))
driver.save_checkpoint = measured
sampler, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
theory = fakes.phi4_lattice((16, 16), kappa=0.2, lam=0.02)
options = dict(warmup=50, every=2) if sampler == "langevin" else dict(warmup=50)
run = theoryc.sample(theory, sampler, n=n, chains=16, output=out, seed=1, progress=False,
                     **options)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "checkpoint_bytes": max(sizes), "shape": run.chains_and_n}))
"""


@pytest.mark.parametrize("sampler", ["hmc", "langevin"])
def test_peak_memory_and_checkpoint_size_do_not_grow_with_n(tmp_path, sampler):
    """16 chains of 16x16 float64: 2000 configurations are 66 MB, 200 are 6.6 MB; one block of
    100 is 3.3 MB. Held in memory, the longer run would peak ~60 MB higher; streamed, the peak
    RSS differs by less than 20 MB (allocator and HDF5 cache noise), and the checkpoint (sampler
    state only) has the same size to within a few hundred bytes."""
    figures = {}
    for n in (200, 2000):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, sampler, str(n),
                              str(tmp_path / f"{n}.h5")], env=ENV, capture_output=True,
                             text=True, check=True)
        figures[n] = json.loads(out.stdout.strip().splitlines()[-1])
        assert figures[n]["shape"] == [16, n]
    grow = figures[2000]["rss_mb"] - figures[200]["rss_mb"]
    assert grow < 20, figures
    assert abs(figures[2000]["checkpoint_bytes"] - figures[200]["checkpoint_bytes"]) < 1000, figures
    # fields and force (HMC), fields, drift and noise (bm): 16 x 256 x 8 bytes each
    assert figures[2000]["checkpoint_bytes"] < 150_000
