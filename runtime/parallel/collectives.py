"""Exchanges between the ranks that split one run's chains, on the cpu (gloo).

Rows are chains: rank r holds `counts[r]` consecutive chains, rank 0 the first. Every function
is the identity (or the local value) in a world of one, so callers need no special case. Tensors
gloo cannot carry (bool, complex) travel as uint8 / real views; rows are padded to the largest
count, since gather and all_gather move equal shapes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .world import collective_failure, cpu_group, is_collective_failure, world


def _exchange(call, *args, **kwargs):
    """A torch.distributed call whose failure (a dead peer, the timeout) is one clear line."""
    try:
        return call(*args, **kwargs)
    except RuntimeError as err:
        if is_collective_failure(err):
            raise collective_failure(err) from None
        raise


def _wire(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().to("cpu")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.contiguous()


def _unwire(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.is_complex():
        t = torch.view_as_complex(t.contiguous())
    return t.to(like.dtype)


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    pad = torch.zeros((rows - t.shape[0], *t.shape[1:]), dtype=t.dtype)
    return torch.cat([t, pad])


def gather_rows(t: torch.Tensor, counts: list[int]) -> torch.Tensor | None:
    """Rank 0: every rank's rows, in rank order (on the cpu); other ranks: None."""
    w = world()
    if not w.spread:
        return t
    rows = max(counts)
    wire = _padded(_wire(t), rows)
    parts = [torch.empty_like(wire) for _ in counts] if w.is_main else None
    _exchange(dist.gather, wire, parts, dst=0, group=cpu_group())
    if not w.is_main:
        return None
    return _unwire(torch.cat([p[:c] for p, c in zip(parts, counts)]), t)


def all_rows(t: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every rank's rows, in rank order, on every rank (on t's device)."""
    w = world()
    if not w.spread:
        return t
    wire = _padded(_wire(t), max(counts))
    parts = [torch.empty_like(wire) for _ in counts]
    _exchange(dist.all_gather, parts, wire, group=cpu_group())
    return _unwire(torch.cat([p[:c] for p, c in zip(parts, counts)]), t).to(t.device)


def gather_array(a: np.ndarray | None, counts: list[int]) -> np.ndarray | None:
    """gather_rows for a numpy array (chains first)."""
    if a is None or not world().spread:
        return a
    out = gather_rows(torch.from_numpy(np.ascontiguousarray(a)), counts)
    return None if out is None else out.numpy()


def total(x):
    """The sum of a number over the ranks (ints stay exact)."""
    if not world().spread:
        return x
    t = torch.tensor([x], dtype=torch.int64 if isinstance(x, (int, np.integer)) else torch.float64)
    _exchange(dist.all_reduce, t, group=cpu_group())
    return t.item()


def any_rank(flag: bool) -> bool:
    """Whether the flag is set on some rank."""
    if not world().spread:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], dtype=torch.int64)
    _exchange(dist.all_reduce, t, op=dist.ReduceOp.MAX, group=cpu_group())
    return bool(t.item())


def from_main(flag: bool) -> bool:
    """Rank 0's value of a flag, on every rank."""
    if not world().spread:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], dtype=torch.int64)
    _exchange(dist.broadcast, t, src=0, group=cpu_group())
    return bool(t.item())
