"""The checked tree: every name resolved, every index known to be a site or a direction.

The compiler lowers this tree to SymPy; nothing here knows SymPy or torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import Span


@dataclass(frozen=True)
class Const:
    value: complex | float | int
    text: str = ""             # the literal as written ("0.1"), or "pi"


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class Shift:
    """One term of a site offset: `coef * direction`, where the direction is a bound index
    (`mu`) or a fixed axis (`e0` -> axis 0), and coef an integer or an integer expression of
    integer indices (`t*e0` of a correlator C(t))."""
    coef: "int | Node"
    index: str | None = None
    axis: int | None = None


@dataclass(frozen=True)
class IndexVar:
    """An integer index (a vector observable's argument, or r of sum(r in A..B)) as a value."""
    name: str


@dataclass(frozen=True)
class RangeReduce:
    """sum(r in lo..hi)[body] (or mean) over the integers lo .. hi; unrolled by the compiler."""
    index: str
    lo: int
    hi: int
    body: "Node"
    mean: bool


@dataclass(frozen=True)
class Coordinate:
    """pos(x + shifts, axis): the integer coordinate 0 .. N_axis - 1 of a site."""
    site: str
    shifts: tuple[Shift, ...]
    axis: int


@dataclass(frozen=True)
class FieldAt:
    """A field at the site `site + sum(shifts)`; site is None in a 0-d theory or a symmetry map."""
    field: int
    site: str | None
    shifts: tuple[Shift, ...] = ()


@dataclass(frozen=True)
class LinkAt:
    """A link field on the link (x + shifts, x + shifts + direction): `A(x + nu, mu)`."""
    field: int
    site: str
    shifts: tuple[Shift, ...]
    index: str | None = None           # a bound direction (mu), or
    axis: int | None = None            # a fixed one (e0)


@dataclass(frozen=True)
class PairReduce:
    """sum(mu < nu)[body] (or mean) over the pairs of distinct positive directions; unrolled."""
    first: str
    second: str
    body: "Node"
    mean: bool


@dataclass(frozen=True)
class SiteReduce:
    """sum(x)[body] or mean(x)[body] over all sites."""
    index: str
    body: "Node"
    mean: bool


@dataclass(frozen=True)
class DirectionReduce:
    """sum(mu)[body] (or mean) over the `dim` positive directions; unrolled by the compiler."""
    index: str
    body: "Node"
    mean: bool


@dataclass(frozen=True)
class Apply:
    func: str                  # exp log sqrt sin cos tan sinh cosh tanh abs re im conj
    arg: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str                    # + - * / ^
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Neg:
    operand: "Node"


@dataclass(frozen=True)
class ObservableRef:
    """An earlier observable; a component `C(t + 1)` of a vector one (the index wraps around)."""
    name: str
    index: "Node | None" = None


@dataclass(frozen=True)
class AverageOf:
    """<expr> in an estimate; `key` is its canonical text, used to name the averaged input."""
    expr: "Node"
    key: str                   # canonical text (dsl/printer.py), never copied from the file


@dataclass(frozen=True)
class Var:
    """The state `x` or the time `t` of a schedule."""
    name: str


Node = Union[Const, ParamRef, FieldAt, SiteReduce, DirectionReduce, Apply, BinOp, Neg,
             ObservableRef, AverageOf, Var, IndexVar, RangeReduce, Coordinate, LinkAt, PairReduce]


@dataclass(frozen=True)
class IndexRange:
    """The argument of a vector observable or estimate and the integers lo .. hi it takes."""
    name: str
    lo: int
    hi: int

    @property
    def values(self) -> range:
        return range(self.lo, self.hi + 1)


@dataclass(frozen=True)
class FieldDecl:
    name: str
    kind: str                  # 'real', 'spin', 'angle', or 'link' (an angle on each link)
    span: Span


@dataclass(frozen=True)
class SymmetryDecl:
    maps: tuple[tuple[int, Node], ...]     # (field index, image expression)
    text: str
    span: Span


@dataclass(frozen=True)
class ScheduleDecl:
    name: str
    params: dict                           # local name -> value
    drift: Node
    diffusion: Node
    span: Span
    drift_span: Span
    diffusion_span: Span


@dataclass(frozen=True)
class CheckedTheory:
    name: str
    lattice: tuple[int, ...]
    fields: tuple[FieldDecl, ...]
    params: dict                           # name -> value (int, float or complex), in order
    action: Node
    action_span: Span
    observables: tuple[tuple[str, Node], ...]
    estimates: tuple[tuple[str, Node], ...]
    symmetries: tuple[SymmetryDecl, ...]
    schedules: tuple[ScheduleDecl, ...]
    source: str = field(default="", compare=False)
    spans: dict = field(default_factory=dict, compare=False)   # 'observable M' -> Span of its expression
    indices: dict = field(default_factory=dict)     # 'observable C' / 'estimate m' -> IndexRange
    gauge: tuple[str, ...] = ()                      # link fields declared gauge invariant
    gauge_span: dict = field(default_factory=dict, compare=False)   # link name -> Span of 'gauge'
    data_only: bool = False          # no action: a data set's shape and schedules (action is 0)

    @property
    def channels(self) -> tuple[tuple[int, int | None], ...]:
        """The components of a configuration: (field, None) for a site field, (field, mu) for
        each of the dim directions of a link field, in declaration order."""
        out = []
        for i, f in enumerate(self.fields):
            out += [(i, mu) for mu in range(self.dim)] if f.kind == "link" else [(i, None)]
        return tuple(out)

    def channel(self, field: int, axis: int | None = None) -> int:
        return self.channels.index((field, axis))
    filename: str = field(default="<theory>", compare=False)

    @property
    def dim(self) -> int:
        return len(self.lattice)

    @property
    def volume(self) -> int:
        v = 1
        for n in self.lattice:
            v *= n
        return v
