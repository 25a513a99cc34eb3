"""The ranks of a job launched by `torchrun` (torch.distributed), or the one process of a plain run.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; `job()` (entered by
`python -m theoryc`) joins the process group from them, with the gloo backend on the cpu and NCCL
where CUDA devices exist, so that rank r's "cuda" is device LOCAL_RANK. Without those variables
nothing is initialised and every helper here describes a world of one. The chain driver's
exchanges of blocks and statistics are small and end on the host, so they use a gloo group on
the cpu whatever the device; gradients (DDP) use the default group.

Every collective is bounded by one timeout, THEORYC_COLLECTIVE_TIMEOUT seconds (default 600): a
rank that hangs or dies makes the others fail with an error instead of waiting forever.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import SamplerError

TIMEOUT_ENV = "THEORYC_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0

_groups: dict = {}


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def spread(self) -> bool:
        """More than one rank takes part."""
        return self.size > 1


def world() -> World:
    """This process's place in the job; a process torchrun started joins it on the first call
    (so the API splits chains without any set-up; `job()` also leaves the job cleanly)."""
    if not (dist.is_available() and dist.is_initialized()):
        return init_from_env() if launched() else World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    return world().is_main


def launched() -> bool:
    """Whether this process was started by torchrun (or another torch.distributed launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def collective_timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise SamplerError(f"{TIMEOUT_ENV}={text!r}: give the collective timeout in seconds (> 0)")
    return timedelta(seconds=seconds)


def init_from_env() -> World:
    """Join the torchrun job described by the environment (idempotent)."""
    if dist.is_initialized() or not launched():
        return world()
    timeout = collective_timeout()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    _groups["cpu"] = dist.new_group(backend="gloo", timeout=timeout) if cuda else None
    return world()


def cpu_group():
    """The process group for exchanges of cpu tensors (gloo): the default one without CUDA."""
    return _groups.get("cpu")


def group_for(device) -> object:
    """The group whose backend handles tensors on `device` (DDP)."""
    return cpu_group() if torch.device(device).type == "cpu" else None


@contextlib.contextmanager
def job():
    """Run a command as one rank of a torchrun job (or as the only process without torchrun).

    A clean end waits for every rank and leaves the group; an error leaves at once (the other
    ranks then fail on their next collective, or torchrun stops them), so one failing rank ends
    the job instead of leaving the others waiting."""
    w = init_from_env()
    clean = False
    try:
        yield w
        clean = True
    except SystemExit as end:
        clean = end.code in (None, 0)
        raise
    finally:
        if w.spread and clean and dist.is_initialized():
            dist.barrier(group=cpu_group())
            dist.destroy_process_group()


def is_collective_failure(err: BaseException) -> bool:
    """An error of an exchange between ranks: a peer died or the timeout ran out."""
    text = str(err)
    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and any(
        s in text for s in ("gloo", "NCCL", "Timed out", "Connection closed", "Connection reset")))


def collective_failure(err: BaseException) -> SamplerError:
    """The one-line error a rank reports when an exchange with the others fails."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    first = first.split("] ", 1)[-1][:160]          # without gloo's source location
    return SamplerError(
        f"rank {world().rank}: an exchange with the other ranks failed ({first}): another rank "
        f"has failed or hangs (an exchange waits at most {TIMEOUT_ENV}="
        f"{collective_timeout().total_seconds():g} s); see its message")
