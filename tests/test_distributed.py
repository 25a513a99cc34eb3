"""Runs split over the ranks of a torchrun job (cpu, gloo, 2 processes as a subprocess): the same
ensemble bit for bit as one process, checkpoints that resume on another number of ranks, a killed
rank that ends the job without an output file, and data-parallel training that follows the
one-process loss curve."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from theoryc.runtime.errors import SamplerError
from theoryc.runtime.parallel.streams import ChainStreams, randn, split_chains
from theoryc.runtime.parallel.world import World

# phi^4 on 8 x 8: 64 sites per chain, so every rank's tensors fill whole vector registers and
# torch's vectorised loops round each element as they do in one process
HMC = ["sample", "phi4_2d", "--set", "L=8", "--sampler", "hmc", "--warmup", "30", "--quiet"]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "THEORYC_COLLECTIVE_TIMEOUT": "60"}


def theoryc_cmd(args, ranks: int = 1) -> list[str]:
    if ranks == 1:
        return [sys.executable, "-m", "theoryc", *args]
    torchrun = Path(sys.executable).with_name("torchrun")
    return [str(torchrun), "--nproc-per-node", str(ranks), "--master-port", str(free_port()),
            "-m", "theoryc", "--", *args]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, ranks: int, cwd) -> subprocess.CompletedProcess:
    out = subprocess.run(theoryc_cmd(args, ranks), cwd=cwd, env=env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def datasets(path) -> dict:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, d: out.__setitem__(name, d[()]) if isinstance(d, h5py.Dataset)
                     else None)
    return out


def assert_same_ensemble(a, b) -> None:
    da, db = datasets(a), datasets(b)
    assert da.keys() == db.keys()
    for name in da:
        assert np.array_equal(da[name], db[name], equal_nan=True), name


# ----------------------------------------------------------------------- streams, in process

def test_chain_streams_do_not_depend_on_the_number_of_ranks():
    """Chain i's numbers are the same whichever rank draws them, and whatever the ranks."""
    def draws(size):
        parts = []
        for rank in range(size):
            streams = ChainStreams(7, split_chains(10, World(rank, size)), "cpu")
            parts.append(torch.cat([randn((streams.chains, 3), streams, dtype=torch.float64)
                                    for _ in range(2)], 1))
        return torch.cat(parts)
    one = draws(1)
    for size in (2, 3, 8):
        assert torch.equal(draws(size), one), size
    assert not torch.equal(one[0], one[1])          # chains of one block differ too


def test_more_ranks_than_chain_blocks_is_refused():
    with pytest.raises(SamplerError, match="random-stream blocks"):
        split_chains(3, World(0, 4))


# ----------------------------------------------------------------------- torchrun, 2 ranks

def test_hmc_on_two_ranks_is_bitwise_one_process(tmp_path):
    args = [*HMC, "--n", "20", "--chains", "8"]
    run([*args, "-o", "one.h5"], 1, tmp_path)
    out = run([*args, "-o", "two.h5"], 2, tmp_path)
    assert out.stdout.count("wrote two.h5") == 1          # rank 0 reports, the others do not
    assert_same_ensemble(tmp_path / "one.h5", tmp_path / "two.h5")
    with h5py.File(tmp_path / "two.h5") as f:
        assert f["configs"].shape == (8, 20, 1, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["sample", "phi4_2d", "--set", "L=8", "--sampler", "langevin", "--chains", "6", "--n", "20",
     "--warmup", "40", "--every", "5"],
    # complex Langevin (asynchronous per-chain clocks, a warm-up drift reference over all
    # chains): 0-d, so 16 chains per rank fill the vector registers (see the README)
    ["sample", "complex_quartic", "--sampler", "langevin", "--chains", "32", "--n", "40", "--warmup", "100"],
], ids=["langevin", "complex-langevin"])
def test_langevin_on_two_ranks_is_bitwise_one_process(tmp_path, args):
    run([*args, "--quiet", "-o", "one.h5"], 1, tmp_path)
    run([*args, "--quiet", "-o", "two.h5"], 2, tmp_path)
    assert_same_ensemble(tmp_path / "one.h5", tmp_path / "two.h5")


def written(checkpoint: Path) -> int:
    try:
        return int(torch.load(checkpoint, weights_only=True)["written"])
    except Exception:        # not there yet, or being replaced
        return 0


def rank_pid(parent: int, rank: int) -> int | None:
    """The worker process of torchrun `parent` with LOCAL_RANK=rank."""
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (child / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == parent and f"LOCAL_RANK={rank}".encode() in environ:
            return int(child.name)
    return None


@pytest.mark.slow
def test_killed_rank_ends_the_job_and_its_checkpoint_resumes_on_one_rank(tmp_path):
    """SIGKILL one rank mid-run: the job fails, no OUT is left; --resume on one process then
    finishes the run bitwise as an uninterrupted one (the checkpoint holds every chain)."""
    args = [*HMC, "--n", "3000", "--chains", "8"]
    job = subprocess.Popen(theoryc_cmd([*args, "-o", "two.h5"], 2), cwd=tmp_path, env=env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while written(tmp_path / "two.h5.ckpt") < 100 and time.time() < deadline:
        time.sleep(0.2)
    pid = rank_pid(job.pid, 1)
    assert pid is not None and job.poll() is None, "the job ended before a checkpoint"
    os.kill(pid, signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "two.h5" not in os.listdir(tmp_path), err[-2000:]
    run([*args, "--resume", "-o", "two.h5"], 1, tmp_path)
    run([*args, "-o", "one.h5"], 1, tmp_path)
    assert_same_ensemble(tmp_path / "one.h5", tmp_path / "two.h5")


HANG = """
import sys, time
from theoryc.runtime.parallel import collectives
from theoryc.runtime.parallel.world import init_from_env
from theoryc.runtime.errors import SamplerError
w = init_from_env()
if w.rank == 1:
    time.sleep(120)            # a hung rank: never joins the collective
try:
    collectives.any_rank(True)
except SamplerError as err:           # one line, naming the timeout
    print("stopped:", err, file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_hung_collective_times_out(tmp_path):
    """THEORYC_COLLECTIVE_TIMEOUT bounds every exchange: rank 0 gives up on a rank that hangs."""
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    torchrun = Path(sys.executable).with_name("torchrun")
    t0 = time.time()
    out = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port",
                          str(free_port()), str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=110, env={**env(), "THEORYC_COLLECTIVE_TIMEOUT": "3"})
    assert out.returncode != 0, out.stderr[-2000:]
    assert "stopped: rank 0: an exchange with the other ranks failed" in out.stderr
    assert "THEORYC_COLLECTIVE_TIMEOUT=3 s" in out.stderr
    assert time.time() - t0 < 100          # well before the hung rank would wake up


# ----------------------------------------------------------------- data-parallel training

def window_mean(history, last: int):
    """Mean and standard error of the last `last` logged losses (each an average over
    log_every steps; neighbouring entries are nearly independent after the first steps)."""
    x = np.asarray(history["loss"][-last:])
    return x.mean(), x.std(ddof=1) / math.sqrt(x.size)


def sample_phi2(model, n: int = 4000):
    """<phi^2> of the model's raw samples with its standard error."""
    x, _ = model.sample(n, torch.Generator().manual_seed(1))
    v = x.detach().double().pow(2).flatten(1).mean(1)
    return float(v.mean()), float(v.std() / math.sqrt(n))


def assert_agree(a, b, what):
    """Two (mean, error) pairs within 3 combined sigma."""
    assert abs(a[0] - b[0]) < 3 * math.hypot(a[1], b[1]), (what, a, b)


@pytest.mark.slow
def test_flow_trained_on_two_ranks_follows_one_rank_with_twice_the_batch(tmp_path):
    from theoryc.runtime.models import load_model
    common = ["train", "phi4_2d", "--set", "L=4", "--model", "flow", "--steps", "300",
              "--layers", "2", "--hidden", "16", "--quiet"]
    run([*common, "--batch-size", "64", "-o", "one.pt"], 1, tmp_path)
    run([*common, "--batch-size", "32", "-o", "two.pt"], 2, tmp_path)
    one, two = load_model(tmp_path / "one.pt"), load_model(tmp_path / "two.pt")
    # the loss curve: the same within its noise over the last 10 logged windows (100 steps)
    assert_agree(window_mean(one.history, 10), window_mean(two.history, 10), "loss")
    assert_agree(sample_phi2(one), sample_phi2(two), "<phi^2>")


@pytest.mark.slow
def test_diffusion_trained_on_two_ranks_follows_one_rank_with_twice_the_batch(tmp_path):
    from theoryc import load
    from theoryc.runtime.models import load_model
    from theoryc.runtime.models.diffusion import sample_diffusion
    # a 2 x 2 lattice keeps the network cheap; 2000 configurations of data
    run(["sample", "phi4_2d", "--set", "L=2", "--sampler", "hmc", "--chains", "8", "--n", "250",
         "--quiet", "-o", "data.h5"], 1, tmp_path)
    common = ["train", "phi4_2d", "--set", "L=2", "--model", "diffusion", "--data", "data.h5",
              "--steps", "200", "--quiet"]
    run([*common, "--batch-size", "128", "-o", "one.pt"], 1, tmp_path)
    run([*common, "--batch-size", "64", "-o", "two.pt"], 2, tmp_path)
    th = load("phi4_2d", L=2)
    one, two = (load_model(tmp_path / f, schedules=th.schedules) for f in ("one.pt", "two.pt"))
    assert_agree(window_mean(one.history, 3), window_mean(two.history, 3), "loss")

    def phi2(model):
        x = sample_diffusion(model, 2000, steps=50, progress=False).configs[0]
        v = x.double().pow(2).flatten(1).mean(1)
        return float(v.mean()), float(v.std() / math.sqrt(v.numel()))
    assert_agree(phi2(one), phi2(two), "<phi^2>")
