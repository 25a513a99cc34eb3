"""The one interface through which every runtime sees a theory.

The runtime never imports the DSL or the compiler. A compiled theory (from `theoryc.load`) and any
hand-made object with these attributes (tests use `tests/fakes.py`) can be sampled, trained on and
measured.

Conventions (DESIGN.md):
- a batch of configurations is a tensor `(batch, n_fields, *lattice)`; `(batch, n_fields)` in 0-d;
- `action(phi)` is `(batch,)`; `force(phi)` is the gradient dS/dphi, same shape as `phi`
  (HMC: `p -= eps * force(phi)`);
- `drift(z)` is `-dS/dz`: for a complex action it is holomorphic and is evaluated on complex `z`;
- `observables(phi)` returns `{name: (batch,)}` in declaration order, real or complex, and
  `(batch, N)` for a vector observable C(t); a compiled theory also has `observable_indices`
  (name -> (lo, hi) of a vector's index) and `estimate_vectors` (name -> its component estimates
  'm_eff(0)', ...), which `measure` uses when present (hand-made theories may omit them);
- every function works on any device and on float32/float64 (complex64/complex128 for complex `z`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Schedule:
    """A forward SDE `dx = -k(t)/2 x dt + g(t) dW` on t in [0, 1] and its perturbation kernel.

    `x_t = f(t) x_0 + sqrt(xi(t)) eps`, with f(t) = exp(-1/2 int_0^t k) and
    xi(t) = int_0^t f(t,s)^2 g(s)^2 ds. All four take and return tensors of t (any shape).
    """
    name: str
    k: Callable[[Tensor], Tensor]
    g: Callable[[Tensor], Tensor]
    f: Callable[[Tensor], Tensor]
    xi: Callable[[Tensor], Tensor]

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift -k(t)/2 x; `t` broadcasts against the batch dimension of x."""
        kt = self.k(t).reshape(-1, *([1] * (x.dim() - 1)))
        return -0.5 * kt * x


@dataclass(frozen=True)
class Estimate:
    """An ensemble-level quantity f(<a_1>, ..., <a_n>) of averages of observable expressions.

    `inputs` names the averaged quantities (keys of `Theory.estimate_inputs(obs)`); `fn` takes a
    sequence of their means (torch scalars, differentiable: errors are propagated with autograd)
    and returns the estimate.
    """
    name: str
    inputs: tuple[str, ...]
    fn: Callable[[Sequence[Tensor]], Tensor]


class Theory(Protocol):
    name: str
    source: str                      # the .theory text it was compiled from ("" for fakes)
    params: Mapping[str, complex | float | int]
    lattice: tuple[int, ...]         # () for a 0-dimensional theory
    field_names: tuple[str, ...]
    field_kinds: tuple[str, ...]     # "real" or "spin", one per field
    is_complex: bool                 # complex action: HMC refuses, Langevin becomes complex Langevin
    observable_names: tuple[str, ...]
    estimates: Mapping[str, Estimate]
    schedules: Mapping[str, Schedule]
    # Exact global moves proved to leave the action invariant with unit Jacobian (phi -> -phi, ...).
    symmetries: Sequence[Callable[[Tensor], Tensor]]

    @property
    def n_fields(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: (n_fields, *lattice)."""
    @property
    def volume(self) -> int: ...

    def action(self, phi: Tensor) -> Tensor: ...
    def force(self, phi: Tensor) -> Tensor: ...
    def drift(self, z: Tensor) -> Tensor: ...
    def observables(self, phi: Tensor) -> dict[str, Tensor]: ...
    def estimate_inputs(self, obs: Mapping[str, Tensor]) -> dict[str, Tensor]: ...
