"""Random streams that belong to chains, not to processes: the same ensemble on 1, 2 or 8 ranks.

The chains of a run are cut into `n_streams(chains)` blocks of consecutive chains (min(chains,
8) by default; THEORYC_CHAIN_STREAMS sets the 8), and block b draws all its random numbers from
its own generator, seeded from (seed, b) alone. A rank holds whole blocks, so chain i's numbers
depend on the seed, i and the block layout only, never on how many ranks there are or which one
runs it: on the cpu the configurations are bitwise those of a one-process run. Blocks rather
than a generator per chain keep the cost of drawing at a few calls per draw (one torch call per
block, each filling its rows of one tensor in place). More ranks than blocks are refused.

A kernel draws through `randn` / `rand` below, which take either a ChainStreams or a plain
torch.Generator (a kernel used on its own, or one that keeps its random numbers process-wide).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SamplerError
from .world import World

STREAMS_ENV = "THEORYC_CHAIN_STREAMS"
DEFAULT_STREAMS = 8


def n_streams(chains: int) -> int:
    """The number of chain blocks (random streams) of a run with `chains` chains."""
    text = os.environ.get(STREAMS_ENV, "")
    if text and not (text.isdigit() and int(text) > 0):
        raise SamplerError(f"{STREAMS_ENV}={text!r}: give the number of chain blocks (> 0)")
    return max(1, min(chains, int(text) if text else DEFAULT_STREAMS))


def block_seed(seed: int, block: int) -> int:
    """A 63-bit seed for chain block `block` of a run seeded `seed` (independent streams:
    numpy's SeedSequence hashes the pair)."""
    words = np.random.SeedSequence([int(seed) % (1 << 64), int(block)]).generate_state(2)
    return (int(words[0]) << 31 ^ int(words[1])) & ((1 << 63) - 1)


@dataclass(frozen=True)
class ChainSplit:
    """Which chains (and blocks) each rank holds: rank r the chains lo..hi-1 of its blocks."""
    chains: int
    bounds: tuple[int, ...]       # chain index where each block starts (plus the end)
    block_ranges: tuple[tuple[int, int], ...]   # per rank: first block, one past the last
    rank: int = 0

    @property
    def blocks(self) -> range:
        return range(*self.block_ranges[self.rank])

    @property
    def lo(self) -> int:
        return self.bounds[self.block_ranges[self.rank][0]]

    @property
    def hi(self) -> int:
        return self.bounds[self.block_ranges[self.rank][1]]

    @property
    def counts(self) -> list[int]:
        """Chains per rank."""
        return [self.bounds[b] - self.bounds[a] for a, b in self.block_ranges]

    @property
    def block_counts(self) -> list[int]:
        return [b - a for a, b in self.block_ranges]

    def sizes(self) -> list[int]:
        """Chains in each of this rank's blocks."""
        return [self.bounds[b + 1] - self.bounds[b] for b in self.blocks]


def split_chains(chains: int, w: World) -> ChainSplit:
    k = n_streams(chains)
    if w.size > k:
        raise SamplerError(f"{w.size} ranks, but {chains} chains make only {k} random-stream "
                           f"blocks: use at most {k} ranks, more chains, or {STREAMS_ENV} >= "
                           f"{w.size} (other streams)")
    bounds = tuple(b * chains // k for b in range(k + 1))
    ranges = tuple((r * k // w.size, (r + 1) * k // w.size) for r in range(w.size))
    return ChainSplit(chains, bounds, ranges, w.rank)


class ChainStreams:
    """The generators of one rank's chain blocks; draws (chains, ...) tensors block by block."""

    def __init__(self, seed: int, split: ChainSplit, device):
        self.device, self.split = torch.device(device), split
        self.sizes = split.sizes()
        self.chains = sum(self.sizes)
        self.generators = [torch.Generator(device=self.device).manual_seed(block_seed(seed, b))
                           for b in split.blocks]

    def _fill(self, shape, dtype, device, method: str) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or shape[0] != self.chains:
            raise ValueError(f"a draw for {self.chains} chains needs shape (chains, ...), "
                             f"got {shape}")
        out = torch.empty(shape, dtype=dtype, device=device)
        for g, rows in zip(self.generators, out.split(self.sizes)):
            getattr(rows, method)(generator=g)
        return out

    def randn(self, shape, *, dtype=None, device=None) -> torch.Tensor:
        return self._fill(shape, dtype, device, "normal_")

    def rand(self, shape, *, dtype=None, device=None) -> torch.Tensor:
        return self._fill(shape, dtype, device, "uniform_")

    def get_state(self) -> torch.Tensor:
        """(blocks, state bytes): one row per block, in chain order."""
        return torch.stack([g.get_state() for g in self.generators])

    def set_state(self, states: torch.Tensor) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s.clone())


def randn(shape, generator=None, *, dtype=None, device=None) -> torch.Tensor:
    """torch.randn, drawing chain block by chain block when given a ChainStreams."""
    if isinstance(generator, ChainStreams):
        return generator.randn(shape, dtype=dtype, device=device)
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)


def rand(shape, generator=None, *, dtype=None, device=None) -> torch.Tensor:
    """torch.rand, drawing chain block by chain block when given a ChainStreams."""
    if isinstance(generator, ChainStreams):
        return generator.rand(shape, dtype=dtype, device=device)
    return torch.rand(shape, generator=generator, dtype=dtype, device=device)
