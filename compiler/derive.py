"""Derivatives of a lowered action: the force dS/dphi(x), assembled shift by shift.

With S = F(R_1, ..., R_n) and R_k = sum_x L_k(x), the chain rule gives
    dS/dphi_f(x) = sum_k dF/dR_k * sum_s dL_k/dphi_f[s] evaluated at x - s,
since phi_f(x) enters L_k(y) as phi_f[s] exactly when y = x - s. The holomorphic drift of a
complex action is the same expression (SymPy differentiates analytic functions of complex symbols
by the same rules), evaluated on complex fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..dsl.errors import TheoryError
from .lower import Internal, Lowered, Symbols


@dataclass(frozen=True)
class Force:
    """Per-configuration factors dF/dR_k (named) and, per field, the lattice expression of the force."""
    factors: tuple[tuple[sp.Symbol, sp.Expr], ...]
    fields: tuple[sp.Expr, ...]


def field_symbols(symbols: Symbols, expr: sp.Expr, field: int | None = None) -> list[sp.Symbol]:
    """The field symbols in expr, in a deterministic order (by field, then shift)."""
    found = [s for s in expr.free_symbols if symbols.is_field(s)
             and (field is None or symbols.meaning[s].field == field)]
    return sorted(found, key=lambda s: (symbols.meaning[s].field, symbols.meaning[s].shift))


def local_force(symbols: Symbols, density: sp.Expr, field: int) -> sp.Expr:
    """sum_s dL/dphi_f[s] (x - s): the derivative of sum_y L(y) with respect to phi_f(x)."""
    terms = []
    for sym in field_symbols(symbols, density, field):
        shift = symbols.meaning[sym].shift
        terms.append(symbols.shifted(sp.diff(density, sym), tuple(-a for a in shift)))
    return sp.Add(*terms)


def derive_force(symbols: Symbols, action: Lowered, n_fields: int, span) -> Force:
    reduction_symbols = {r.symbol for r in action.reductions}
    for r in action.reductions:
        if r.density.free_symbols & reduction_symbols:
            raise TheoryError(span, "the action nests one sum over sites inside another, which is "
                              "not a local action", "write the action as sums of local densities.")
    factors, per_field = [], [[] for _ in range(n_fields)]
    for k, r in enumerate(action.reductions):
        factor = sp.diff(action.expr, r.symbol)
        if factor == 0:
            continue
        if not factor.is_number:
            name = Internal(f"dS_d{r.symbol.name}")
            factors.append((name, factor))
            factor = name
        for f in range(n_fields):
            g = local_force(symbols, r.density, f)
            if g != 0:
                per_field[f].append(factor * g)
    for f in range(n_fields):                                   # 0-d: fields appear bare in F
        for sym in field_symbols(symbols, action.expr, f):
            per_field[f].append(sp.diff(action.expr, sym))
    return Force(tuple(factors), tuple(sp.Add(*terms) for terms in per_field))
