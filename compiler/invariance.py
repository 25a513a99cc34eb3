"""Proofs that angles are angles and gauge fields are gauge fields.

- Periodicity: an expression of an angle variable theta (a site field `: angle`, or one
  component of a link field) must not change under theta -> theta + 2 pi, for each angle
  variable of each site density on its own.
- Gauge invariance of a link field A: under A(x, mu) -> A(x, mu) + w(x + mu) - w(x), with w an
  arbitrary function of the site, each site density may change only by a lattice total
  difference (its change is reduced modulo translations, as for symmetries).
What SymPy does not simplify to zero is evaluated at random points to 30 digits.
"""
from __future__ import annotations

import sympy as sp

from ..dsl.errors import TheoryError
from .budget import expand
from .derive import field_symbols
from .lower import DERIVED, Lowered, Symbols
from .symmetry import numerically_zero, readable, short, translate_canonical

GAUGE = DERIVED - 1        # the field number of the gauge function w(x) in the proofs


def expressions(low: Lowered) -> list[sp.Expr]:
    return [r.density for r in low.reductions] + [low.expr]


def prove_periodic(symbols: Symbols, low: Lowered, angles: set[int], span, what: str, values: dict):
    for expr in expressions(low):
        for sym in field_symbols(symbols, expr):
            if symbols.meaning[sym].field not in angles:
                continue
            change = expr.xreplace({sym: sym + 2 * sp.pi}) - expr
            if change == 0 or expand(change) == 0 or numerically_zero(change, symbols, values):
                continue
            raise TheoryError(span, f"{what} is not 2 pi-periodic in the angle {readable(sym, symbols)}",
                              "an angle enters through periodic functions, e.g. cos(theta(x + mu) - theta(x)); "
                              "for an unbounded variable declare it real.")


def prove_gauge(symbols: Symbols, low: Lowered, base: int, span, what: str, name: str, values: dict):
    dim = symbols.dim
    for expr in expressions(low):
        subs = {}
        for sym in field_symbols(symbols, expr):
            fs = symbols.meaning[sym]
            mu = fs.field - base
            if 0 <= mu < dim:
                step = tuple(s + (1 if a == mu else 0) for a, s in enumerate(fs.shift))
                subs[sym] = sym + symbols.at(GAUGE, step) - symbols.at(GAUGE, fs.shift)
        if not subs:
            continue
        change = translate_canonical(symbols, expand(expr.xreplace(subs) - expr))
        if change == 0 or numerically_zero(change, symbols, values):
            continue
        raise TheoryError(span, f"{what} is not invariant under gauge transformations of '{name}'",
                          f"it changes by {short(readable(change, symbols))}; build it from plaquettes or "
                          "closed loops of links, or remove 'gauge'.")
