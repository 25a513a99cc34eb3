"""The one driver loop for every Markov-chain sampler.

A sampler is a kernel (NumPyro/BlackJAX style) with
    init(phi, generator) -> state
    step(state, generator, params) -> (state, info)   info: {name: per-chain tensor or number}
    fields(state) -> phi;  transform(state, fn) -> state   (fn maps fields; caches follow)
    record(state, info, params) -> {stat: per-chain}      figures kept with each configuration
    summary(stats, params, settings) -> dict;  state_dict(state) / load_state(d, device)
and, optionally, `averaged`: info names the driver averages over the `every` steps of a kept
configuration. A step may reuse the buffers of the state it is given (the driver never keeps an
old state); the kernel object itself never changes. Parameters (step size, ...) come from an
adaptation object (chains/adaptation.py) during warm-up and are frozen for production.

Everything else is here, once: seeding, warm-up, thinning (`every`), symmetry moves, chain health,
the progress bar, blocks of kept configurations (observables measured per block, written to the
sink: a streamed HDF5 file or memory) and checkpoints. The checkpoint cadence has one unit: kept
configurations (`block` of them; during warm-up, the same number of steps' worth). A checkpoint
holds the sampler state and how many configurations are written, never the data, so its size
and cost do not depend on how far the run has got; a resumed run is bitwise the same as an
uninterrupted one.

Under torchrun (runtime/parallel/) each rank runs whole blocks of chains with their own random
streams (a kernel with `chain_streams = True` draws through parallel/streams.py and keeps only
per-chain tensors in its state); rank 0 gathers every block into the one file and every
checkpoint's chains, so a checkpoint resumes on any number of ranks; what couples the chains
(warm-up adaptation, the runaway stop, health at the end) sees all ranks' chains in one order.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import SamplerError
from ..io import interrupt
from ..io.attrs import to_jsonable
from ..io.checkpoint import load_run_checkpoint, save_checkpoint
from ..io.ensemble import EnsembleFile, SamplerRun, file_attrs, series_array, series_specs
from ..parallel import collectives
from ..parallel.streams import ChainSplit, ChainStreams, n_streams, split_chains
from ..parallel.world import world
from .health import ChainHealth
from .moves import apply_symmetries, per_chain

DEFAULT_BLOCK = 100          # kept configurations per block and per checkpoint
BLOCK_BYTES = 64 << 20       # ... fewer when one block of configurations would exceed this


@dataclass
class Plan:
    """What a run does, in kernel steps: `warmup` steps, then `n` kept configurations per chain,
    one every `every` steps; every `save_every`-th kept configuration is stored (observables and
    statistics of all); `block` kept configurations per block/checkpoint."""
    n: int
    chains: int
    warmup: int = 0
    every: int = 1
    save_every: int = 1
    store_configs: bool = True
    block: int = DEFAULT_BLOCK
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        if self.n < 1 or self.chains < 1 or self.every < 1 or self.warmup < 0:
            raise SamplerError("need n >= 1, chains >= 1, every >= 1 and warmup >= 0")
        if self.save_every < 1:
            raise SamplerError("--save-every must be >= 1")
        self.device = torch.device(self.device)

    def block_for(self, bytes_per_config: int) -> int:
        """Kept configurations per block: `block`, fewer if the buffer would be too large, and a
        multiple of save_every (so that stored configurations never straddle two blocks)."""
        fit = max(1, BLOCK_BYTES // max(1, bytes_per_config * self.chains))
        b = max(1, min(self.block, fit, self.n))
        return max(self.save_every, b - b % self.save_every)

    @property
    def n_stored(self) -> int:
        return self.n // self.save_every if self.store_configs else 0

    def dict(self) -> dict:
        return {"n": self.n, "chains": self.chains, "warmup": self.warmup, "every": self.every,
                "save_every": self.save_every, "store_configs": self.store_configs,
                "seed": self.seed}


@dataclass
class Output:
    """Where the configurations go: `path` streams to OUT.tmp and renames it onto OUT at the end;
    without a path the run is kept in memory (then a checkpoint streams to CHECKPOINT.h5, read
    back at the end). `attrs`: theory_name, theory_source, params, sampler, ... of the file.
    `observe(configs (chains, b, *shape)) -> {name: (chains, b)}` measures each block."""
    path: str | os.PathLike | None = None
    attrs: dict = field(default_factory=dict)
    observe: Callable | None = None


def run_chains(kernel, start: Callable, plan: Plan, adaptation, settings: dict, *,
               output: Output | None = None, symmetries=(), health: ChainHealth | None = None,
               checkpoint=None, resume: bool | dict = False, progress: bool = True,
               label: str = "") -> SamplerRun:
    """Run `kernel` on `plan.chains` chains started at `start(generator)`.

    `settings` (JSON-able) describe the run; a checkpoint made with other settings is refused.
    resume: True continues from `checkpoint` (if it exists), or the checkpoint already read from
    it (a dict), so that it is read once.
    """
    output = output or Output()
    run = _Run(kernel, plan, adaptation, settings, output, list(symmetries), health, checkpoint)
    run.begin(start, resume)
    try:
        run.loop(progress, label or settings.get("sampler", "chains"))
        return run.finish()
    finally:
        run.sink.close()


class _Run:
    """The state of one run, in one place so that it can be checkpointed and restored."""

    def __init__(self, kernel, plan, adaptation, settings, output, symmetries, health, checkpoint):
        self.kernel, self.plan, self.adaptation = kernel, plan, adaptation
        self.settings = {**plan.dict(), **settings}   # a kernel may count steps its own way
        self.output, self.symmetries = output, symmetries
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.world = world()
        self.streams = getattr(kernel, "chain_streams", False)
        self.split = self.chain_split()
        # rank 0 writes the file and the checkpoints; the others send it their blocks
        self.sink = _Sink(output.path if self.world.is_main else None,
                          self.checkpoint if self.world.is_main else None)
        self.health = None if health is None else ChainHealth(
            self.split.hi - self.split.lo, plan.device, health.max_abs, health.max_bad_fraction)
        self.generator = (ChainStreams(plan.seed, self.split, plan.device) if self.streams
                          else torch.Generator(device=plan.device))
        self.t = 0                    # kernel steps done, warm-up first
        self.written = 0              # kept configurations in the sink
        self.seconds = 0.0            # production wall time (timing only)
        self.stopped = None           # why the run stopped early, if it did

    def chain_split(self) -> ChainSplit:
        """The chains this rank runs: whole blocks of chains with their own random streams
        (parallel/streams.py) for a kernel that draws through them, else all of them."""
        p = self.plan
        if self.streams:
            self.settings["chain_streams"] = n_streams(p.chains)   # the layout decides the ensemble
            return split_chains(p.chains, self.world)
        if self.world.spread:
            raise SamplerError(f"sampler {self.settings.get('sampler')} runs in one process; "
                               "start it without torchrun")
        return ChainSplit(p.chains, (0, p.chains), ((0, 1),))

    # -- start or resume
    def begin(self, start: Callable, resume: bool | dict) -> None:
        if not self.streams:
            self.generator.manual_seed(self.plan.seed)
        self.state = self.kernel.init(start(self.generator), self.generator)
        self.astate = self.adaptation.init()
        self.final = self.adaptation.final(self.astate) if self.plan.warmup == 0 else None
        if resume and self.checkpoint is not None:
            # every rank reads the checkpoint rank 0 wrote (on a file system they share), or
            # takes it as its caller read it (`resume` a dict: theoryc.sample's check)
            snap = load_run_checkpoint(self.checkpoint, self.settings["sampler"], self.settings,
                                       resume if isinstance(resume, dict) else None)
            usable = snap is not None and (snap["written"] == 0 or self.sink.reopen())
            if collectives.from_main(usable):
                self.restore(snap)

    def all_rows(self, d: dict | None, gather=collectives.gather_rows) -> dict | None:
        """The per-chain tensors of `d` with every rank's chains (rank 0; elsewhere None)."""
        if d is None or not self.world.spread:
            return d
        n = self.split.hi - self.split.lo
        return {k: gather(v, self.split.counts) if _per_chain(v, n) else v for k, v in d.items()}

    def my_rows(self, d: dict | None) -> dict | None:
        """This rank's chains of a checkpoint's per-chain tensors (which hold all chains)."""
        if d is None or not self.streams:
            return d
        lo, hi, n = self.split.lo, self.split.hi, self.plan.chains
        return {k: v[lo:hi] if _per_chain(v, n) else v for k, v in d.items()}

    def snapshot(self) -> dict:
        """The run's state with all chains (on rank 0), whatever the number of ranks: a
        checkpoint resumes on any number of them."""
        generator = self.generator.get_state()
        if self.streams and self.world.spread:
            generator = collectives.gather_rows(generator, self.split.block_counts)
        return {"sampler": self.settings["sampler"], "settings": self.settings, "t": self.t,
                "written": self.written, "state": self.all_rows(self.kernel.state_dict(self.state)),
                "generator": generator, "adaptation": self.astate,
                "final": self.final,
                "health": None if self.health is None else self.all_rows(self.health.state_dict()),
                "seconds": self.seconds,
                # the file's attributes (theory, parameters, provenance): what `measure
                # --partial` labels the interrupted run with, and what --resume compares
                "attrs": json.dumps(to_jsonable(self.output.attrs))}

    def restore(self, snap: dict) -> None:
        self.state = self.kernel.load_state(self.my_rows(snap["state"]), self.plan.device)
        b = self.split.blocks
        self.generator.set_state(snap["generator"][b.start:b.stop] if self.streams
                                 else snap["generator"])
        self.astate, self.final = snap["adaptation"], snap["final"]
        self.t, self.written, self.seconds = snap["t"], snap["written"], snap["seconds"]
        if self.health is not None:
            self.health.load(self.my_rows(snap["health"]))

    def save(self) -> None:
        if self.checkpoint is not None:
            snap = self.snapshot()          # every rank: it gathers the chains to rank 0
            if self.world.is_main:
                save_checkpoint(self.checkpoint, snap)

    # -- the loop
    def loop(self, progress: bool, label: str) -> None:
        p = self.plan
        total = p.warmup + p.n * p.every
        self.warm_chunk = p.block_for(1) * p.every      # warm-up checkpoints: as many steps
        phi = self.kernel.fields(self.state)
        self.block = p.block_for(phi[0].numel() * phi.element_size())
        sync = getattr(self.kernel, "sync_every", 1)   # blocks hold whole pieces of a kernel's
        self.block = max(sync, self.block - self.block % sync)  # own synchronisation
        self.buffer, self.sums = None, {}
        bar = tqdm(total=total, initial=self.t, disable=not progress, desc=label, unit="step")
        with bar, interrupt.safe_points():
            self.tick = time.perf_counter()
            while self.t < total and self.stopped is None:
                if interrupt.requested() and not self.world.spread:
                    self.stop_for_signal()
                if self.t >= p.warmup and hasattr(self.kernel, "advance_block"):
                    self.advance_block(bar)
                    self.clock()
                    continue
                warm = self.t < p.warmup
                params = self.adaptation.params(self.astate) if warm else self.final
                self.state, info = self.kernel.step(self.state, self.generator, params)
                self.t += 1
                bar.update(1)
                if warm:
                    self.after_warm_step(info)
                else:
                    self.after_step(info, params)

    def stop_for_signal(self) -> None:
        """SIGINT/SIGTERM (io/interrupt.py): at a whole kept configuration (or a warm-up step),
        write what is kept and the checkpoint, then stop; mid-configuration, step on to one."""
        p = self.plan
        j = self.t - p.warmup
        if j > 0 and j % p.every:
            return
        if j > 0 and j // p.every > self.written and not hasattr(self.kernel, "advance_block"):
            self.flush(j // p.every)
        else:
            self.save()
        raise interrupt.Interrupted(interrupt.requested(), self.checkpoint)

    def stop_together(self) -> None:
        """torchrun: a signal reaches the ranks at different steps, so they stop together at
        the next checkpoint (just written) when it has reached any of them."""
        if self.world.spread and collectives.any_rank(interrupt.requested() is not None):
            raise interrupt.Interrupted(interrupt.requested() or "SIGTERM", self.checkpoint)

    def clock(self) -> None:
        now = time.perf_counter()
        self.seconds, self.tick = self.seconds + now - self.tick, now

    def after_warm_step(self, info: dict) -> None:
        p = self.plan
        # the adaptation sees what it reads (its `reads`) of every rank's chains, in one
        # order: the same parameters as in one process, to the last bit
        read = {name: info[name] for name in self.adaptation.reads}
        if self.world.spread:
            read = self.all_rows(read, collectives.all_rows)
        self.astate = self.adaptation.update(self.astate, read)
        if self.t == p.warmup:
            self.final = self.adaptation.final(self.astate)
        if self.t % p.every == 0 or self.t == p.warmup:
            self.between_configs(0)
        if self.t % self.warm_chunk == 0 or self.t == p.warmup:
            self.reset_bad(may_stop=False)
            self.save()
            self.stop_together()
            self.tick = time.perf_counter()      # production time starts here

    def after_step(self, info: dict, params: dict) -> None:
        """Production: keep every `every`-th state (with `averaged` info over its steps), flush
        full blocks."""
        p = self.plan
        for name in getattr(self.kernel, "averaged", ()):
            self.sums[name] = self.sums.get(name, 0) + info[name]
        j = self.t - p.warmup
        if j % p.every:
            return
        k = j // p.every - 1                    # this kept configuration's index
        if self.sums:
            info = {**info, **{name: v / p.every for name, v in self.sums.items()}}
            self.sums = {}
        self.keep(k, info, params)
        self.between_configs(k)
        if (k + 1) % self.block == 0 or k + 1 == p.n:
            self.flush(k + 1)
            self.clock()

    def advance_block(self, bar) -> None:
        """A kernel with its own per-chain clocks (complex Langevin) makes a whole block of kept
        configurations at once: `advance_block(state, generator, params, count)`."""
        p, sync = self.plan, self.kernel.sync_every
        end = min(self.written + self.block - self.written % self.block, p.n)
        parts = []
        k = self.written
        while k < end:       # pieces of `sync` configurations: the results do not depend on the
            b = min(sync - k % sync, end - k)          # block (checkpoint) size
            self.state, *part = self.kernel.advance_block(self.state, self.generator,
                                                          self.final, b)
            parts.append(part)
            k += b
            self.t += b * p.every
            bar.update(b * p.every)
        configs = torch.cat([c for c, _, _ in parts], 1)
        stats = {name: torch.cat([s[name] for _, s, _ in parts], 1) for name in parts[0][1]}
        failed = torch.cat([f for _, _, f in parts], 1)
        if self.health is not None:
            for j in range(end - self.written):
                self.health.check(configs[:, j], self.written + j, failed[:, j])
        self.buffer = _Buffer.filled(configs, stats)
        self.flush(end)

    def between_configs(self, index: int) -> None:
        """After every `every` steps: the health check (device-side) and the symmetry moves."""
        if self.health is not None:
            self.health.check(self.kernel.fields(self.state), index,
                              self.kernel.failed(self.state) if hasattr(self.kernel, "failed")
                              else None)
        if self.symmetries:
            self.state = apply_symmetries(self.kernel, self.state, self.symmetries,
                                          self.generator)

    def reset_bad(self, may_stop: bool = True) -> None:
        """Reset chains that went bad (fields to 0, caches recomputed); stop if too many (from
        the first block of kept configurations on, so that a stopped run has some)."""
        if self.health is None:
            return
        mask = self.health.to_reset()
        if mask is not None:
            self.state = self.kernel.transform(
                self.state, lambda t: torch.where(per_chain(mask, t), torch.zeros_like(t), t))
        if not may_stop:
            return
        p = self.plan
        n_bad = collectives.total(self.health.n_bad)        # over all ranks: all stop together
        if self.health.too_many(n_bad, p.chains):
            self.stopped = (f"stopped after {self.written} of {p.n} configurations: "
                            f"{n_bad} of {p.chains} chains ran away")

    # -- blocks
    def keep(self, k: int, info: dict, params: dict) -> None:
        stats = self.kernel.record(self.state, info, params)
        phi = self.kernel.fields(self.state)
        if self.buffer is None:
            self.buffer = _Buffer(phi, stats, self.block, self.output.observe is not None
                                  or self.plan.store_configs)
        self.buffer.put(k - self.written, phi, stats)

    def flush(self, count: int) -> None:
        """Write kept configurations written..count-1 to the sink, then checkpoint."""
        p, b = self.plan, count - self.written
        configs, stats = self.buffer.take(b)
        series = {f"stats/{k}": v for k, v in stats.items()}
        if self.output.observe is not None:
            series.update({f"observables/{k}": series_array(v)
                           for k, v in self.output.observe(configs).items()})
        stored = None
        if p.store_configs:
            stored = configs[:, p.save_every - 1::p.save_every].to("cpu", copy=True).numpy()
        if self.world.spread:     # rank 0 gathers the block (h5py has one writer per file)
            stored = collectives.gather_array(stored, self.split.counts)
            series = {k: collectives.gather_array(v, self.split.counts) for k, v in series.items()}
        if self.world.is_main:
            if not self.sink.is_open:
                self.sink.create(p, series_specs(series),
                                 (configs.shape[2:], stored.dtype) if stored is not None else None)
            self.sink.write(self.written, stored, series, self.written // p.save_every)
        self.written = count
        if self.world.spread or not interrupt.requested():   # a stop's early flush: chains are
            self.reset_bad()               # reset where an uninterrupted run resets them (block ends)
        self.save()
        self.stop_together()

    # -- the end
    def finish(self) -> SamplerRun:
        if self.written == 0:
            raise SamplerError(self.stopped or "the run kept no configuration")
        health = self.all_chains_health()
        if not self.world.is_main:
            return None                  # rank 0 has written the file and reports the run
        good = np.ones(self.plan.chains, bool) if health is None else health.good()
        n_done = self.written
        stats = self.sink.read_prefix("stats", good, n_done)
        summary = {**self.kernel.summary(stats, self.final, self.settings),
                   "status": self.stopped or "completed"}
        if health is not None:
            summary.update(health.report())
        settings = {**self.settings, **self.kernel.final_settings(self.final),
                    "device": str(self.plan.device), "ranks": self.world.size}
        timing = self.kernel.timing(self.seconds, stats, self.plan)
        run = SamplerRun(configs=None, stats=stats, summary=summary, settings=settings,
                         timing=timing)
        attrs = file_attrs(run, {**self.output.attrs, "save_every": self.plan.save_every})
        return self.sink.finish(run, attrs, good, n_done, self.plan)

    def all_chains_health(self) -> ChainHealth | None:
        """The health record of every chain (on rank 0; the local one in one process)."""
        if self.health is None or not self.world.spread:
            return self.health
        d = self.all_rows(self.health.state_dict())
        if not self.world.is_main:
            return None
        health = ChainHealth(self.plan.chains, "cpu", self.health.max_abs,
                             self.health.max_bad_fraction)
        health.load(d)
        return health


def _per_chain(v, chains: int) -> bool:
    """A per-chain tensor: chains first (what a chain_streams kernel keeps in its state)."""
    return isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == chains


class _Buffer:
    """One block of kept configurations and their statistics, on the sampler's device."""

    def __init__(self, phi, stats: dict, size: int, keep_configs: bool):
        chains = phi.shape[0]
        self.configs = (torch.empty((chains, size, *phi.shape[1:]), dtype=phi.dtype,
                                    device=phi.device) if keep_configs else None)
        self.stats = {k: torch.empty((chains, size), dtype=torch.float64, device=phi.device)
                      for k in stats}

    @classmethod
    def filled(cls, configs, stats: dict) -> "_Buffer":
        buffer = cls.__new__(cls)
        buffer.configs, buffer.stats = configs, stats
        return buffer

    def put(self, j: int, phi, stats: dict) -> None:
        if self.configs is not None:
            self.configs[:, j] = phi
        for name, v in stats.items():
            self.stats[name][:, j] = v

    def take(self, b: int):
        configs = None if self.configs is None else self.configs[:, :b]
        # copies: the buffer is reused for the next block
        return configs, {k: v[:, :b].to("cpu", copy=True).numpy() for k, v in self.stats.items()}


class _Sink:
    """The streamed file (OUT.tmp, or CHECKPOINT.h5.tmp for an in-memory run with a checkpoint)
    or, without either, memory."""

    def __init__(self, path, checkpoint: Path | None):
        self.in_memory = path is None
        target = path if path is not None else (
            None if checkpoint is None else checkpoint.with_name(checkpoint.name + ".h5"))
        self.file = None if target is None else EnsembleFile(target)
        self.blocks: list = []
        self.is_open = False

    def create(self, plan: Plan, series: dict, configs) -> None:
        self.series_names = list(series)
        if self.file is not None:
            self.file.create(plan.chains, plan.n, series,
                             None if configs is None else (plan.n_stored, *configs))
        self.is_open = True

    def reopen(self) -> bool:
        self.is_open = self.file is not None and self.file.reopen()
        return self.is_open

    def write(self, start: int, stored, series: dict, stored_start: int) -> None:
        if self.file is None:
            self.blocks.append((stored, series))
            return
        self.file.write(start, stored, series, stored_start)
        self.file.flush()

    def read_prefix(self, group: str, good: np.ndarray, n: int) -> dict:
        """Every series of `group` ("stats", "observables") for the good chains, first n."""
        if self.file is None:
            names = [k for k in self.series_names if k.startswith(group + "/")]
            return {k.split("/", 1)[1]: np.concatenate([s[k] for _, s in self.blocks], 1)[good, :n]
                    for k in names}
        return {name.split("/", 1)[1]: self.file.file[name][:, :n][good]
                for name in self.file.names if name.startswith(group + "/")}

    def finish(self, run: SamplerRun, attrs: dict, good: np.ndarray, n: int,
               plan: Plan) -> SamplerRun:
        run.observables = self.read_prefix("observables", good, n) or None
        n_stored = n // plan.save_every
        if self.file is None:
            if plan.store_configs:
                configs = np.concatenate([c for c, _ in self.blocks], 1)[good, :n_stored]
                run.configs = torch.from_numpy(np.ascontiguousarray(configs))
            return run
        lengths = {name: n for name in self.file.names}
        lengths["configs"] = n_stored
        self.file.keep(good, lengths)
        if self.in_memory:              # a checkpointed in-memory run: read it back, drop the file
            if plan.store_configs:
                run.configs = torch.from_numpy(self.file.read("configs"))
            self.file.discard()
            return run
        self.file.finish(attrs)
        run.path = self.file.path
        return run

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
