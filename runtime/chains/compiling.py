"""`--compile`: a sampler's step functions under `torch.compile`, with their compile time measured.

The samplers hand their whole update (a theory's fused steps, compiler/fused.py, and the
arithmetic around them) to `torch.compile`, which fuses it into few kernels. Shapes are static
(`dynamic=False`) and step sizes are 0-d tensors, so a run compiles each function once, in the
kernel's `init`, whose wall time is reported as `compile_seconds` (the production timing excludes
it). torch caches what it compiles on disk (inductor's FX-graph cache, under
$TORCHINDUCTOR_CACHE_DIR), so a second process with the same theory and shapes compiles much
faster. On CUDA the functions run as CUDA graphs (mode "reduce-overhead"): one launch per call.
"""
from __future__ import annotations

import functools
import time

import torch

from ..errors import SamplerError

Tensor = torch.Tensor

# what tests may override (backend "eager" checks the plumbing without inductor's C++ compile)
OPTIONS = {"fullgraph": True, "dynamic": False}


def fused_step(theory, name: str):
    """The theory's generated fused step `name`, or a one-line refusal."""
    fn = getattr(theory, name, None)
    if fn is None:
        raise SamplerError(f"theory '{theory.name}' has no fused step '{name}' (compiler/fused.py): "
                           "load it with this theoryc's compiler, or run without --compile")
    return fn


def scalar(value: float, like: Tensor) -> Tensor:
    """A step size as a 0-d tensor of the fields' dtype and device: a new value is new data for
    the compiled function, not a recompilation, and it rounds as the eager `alpha=value` does.
    Made once per value (a step size is frozen after warm-up): on a GPU a new one is a host-to-
    device copy every step. The compiled steps never write to their step-size arguments."""
    return _scalar(float(value), like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


class Compiled:
    """`fn` under torch.compile; `warm(*args)` compiles it on example arguments and times that.

    kept=True: the outputs outlive the next sampler step (they become the chain state), so on
    CUDA graphs, whose outputs live in memory the next step's replays reuse, they are copied out.
    """

    def __init__(self, fn, device: torch.device, kept: bool = False):
        self.cuda = torch.device(device).type == "cuda"
        options = {**OPTIONS, **({"mode": "reduce-overhead"} if self.cuda else {})}
        self.fn = torch.compile(fn, **options)
        self.kept = kept and self.cuda
        self.seconds = 0.0

    def __call__(self, *args):
        out = self.fn(*args)
        if not self.kept:
            return out
        return tuple(t.clone() if isinstance(t, Tensor) else t for t in out)

    def warm(self, *args) -> None:
        start = time.perf_counter()
        self.fn(*args)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start


def new_step() -> None:
    """Before a sampler step on CUDA graphs: the outputs of the previous step (already copied into
    the chain state) may be overwritten."""
    if torch.cuda.is_available():
        torch.compiler.cudagraph_mark_step_begin()
