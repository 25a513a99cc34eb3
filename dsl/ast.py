"""The syntax tree of a .theory file: frozen dataclasses, each carrying its source span.

This is what the parser builds, before any name is resolved (see checker.py for the checked tree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .errors import Span


# ---- expressions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Num:
    text: str                  # as written, so the compiler can keep 0.1 exact
    span: Span


@dataclass(frozen=True)
class Imag:
    text: str                  # the real number before the 'i'
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class Call:
    """`f(args)`, or with a body `sum(x)[ ... ]` (a reduction)."""
    func: Name
    args: tuple["Expr", ...]
    body: "Expr | None"
    span: Span


@dataclass(frozen=True)
class Unary:
    op: str                    # '-'
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Binary:
    op: str                    # one of + - * / ^
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Average:
    """`<expr>`: an ensemble average, allowed only in an estimate."""
    expr: "Expr"
    span: Span


@dataclass(frozen=True)
class RangeSum:
    """`sum(r in lo..hi)[ body ]` (or mean): a sum over the integers lo .. hi."""
    func: Name
    index: Name
    lo: "Expr"
    hi: "Expr"
    body: "Expr"
    span: Span


@dataclass(frozen=True)
class PairSum:
    """`sum(mu < nu)[ body ]` (or mean): over the pairs of distinct positive directions."""
    func: Name
    first: Name
    second: Name
    body: "Expr"
    span: Span


Expr = Union[Num, Imag, Name, Call, Unary, Binary, Average, RangeSum, PairSum]


# ---- statements ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TheoryName:
    name: Name
    span: Span


@dataclass(frozen=True)
class Lattice:
    extents: tuple[Num | Name, ...]
    span: Span


@dataclass(frozen=True)
class Field:
    names: tuple[Name, ...]
    type: Name
    span: Span


@dataclass(frozen=True)
class Link:
    """`link A : angle`: a U(1) gauge field, one angle on every link (x, x + mu)."""
    names: tuple[Name, ...]
    type: Name
    span: Span


@dataclass(frozen=True)
class Gauge:
    name: Name
    span: Span


@dataclass(frozen=True)
class Let:
    """`let P(x, mu, nu) = expr`: a local definition, expanded where it is used."""
    name: Name
    args: tuple[Name, ...]
    expr: "Expr"
    span: Span


@dataclass(frozen=True)
class Param:
    name: Name
    expr: Expr
    span: Span


@dataclass(frozen=True)
class SymmetryMap:
    field: Name
    expr: Expr
    span: Span


@dataclass(frozen=True)
class Symmetry:
    maps: tuple[SymmetryMap, ...]
    span: Span


@dataclass(frozen=True)
class Action:
    expr: Expr
    span: Span


@dataclass(frozen=True)
class IndexDecl:
    """The integer argument of a vector observable or estimate: `(t)` or `(t in lo..hi)`."""
    name: Name
    lo: Expr | None
    hi: Expr | None
    span: Span


@dataclass(frozen=True)
class Observable:
    name: Name
    expr: Expr
    span: Span
    index: IndexDecl | None = None


@dataclass(frozen=True)
class Estimate:
    name: Name
    expr: Expr
    span: Span
    index: IndexDecl | None = None


@dataclass(frozen=True)
class ScheduleEntry:
    key: str                   # 'drift' or 'diffusion'
    expr: Expr
    span: Span


@dataclass(frozen=True)
class Schedule:
    name: Name
    items: tuple[Param | ScheduleEntry, ...]
    span: Span


Statement = Union[TheoryName, Lattice, Field, Link, Gauge, Let, Param, Symmetry, Action, Observable,
                  Estimate, Schedule]


@dataclass(frozen=True)
class Module:
    statements: tuple[Statement, ...]
