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
        if factor.free_symbols & reduction_symbols:     # S non-linear in this site sum
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


@dataclass(frozen=True)
class Flips:
    """For spin fields: the change of the action when the one spin at (field, x) is flipped,
    s_f(x) -> -s_f(x), as a lattice expression per field; and the site offsets at which two
    flipped spins interact (so that sites an offset apart are never updated together)."""
    fields: tuple[sp.Expr, ...]
    offsets: tuple[tuple[int, ...], ...]


def local_flip(symbols: Symbols, density: sp.Expr, field: int) -> sp.Expr:
    """sum_s [L(phi_f[s] -> -phi_f[s]) - L] (x - s): the change of sum_y L(y) when phi_f(x)
    alone changes sign (shifts are distinct sites, since the lowering wraps them modulo the
    lattice)."""
    terms = []
    for sym in field_symbols(symbols, density, field):
        shift = symbols.meaning[sym].shift
        change = density.xreplace({sym: -sym}) - density
        terms.append(symbols.shifted(change, tuple(-a for a in shift)))
    return sp.Add(*terms)


def derive_flips(symbols: Symbols, action: Lowered, n_fields: int) -> Flips | None:
    """Single-spin-flip changes of a local action S = c_0 + sum_k c_k R_k (constant c_k); None
    when S is a non-linear function of site sums (a flip then changes S everywhere at once)."""
    coefficients = [sp.diff(action.expr, r.symbol) for r in action.reductions]
    reduction_symbols = {r.symbol for r in action.reductions}
    if any(c.free_symbols & reduction_symbols for c in coefficients):
        return None
    per_field = []
    for f in range(n_fields):
        terms = [c * local_flip(symbols, r.density, f) for c, r in zip(coefficients, action.reductions)]
        for sym in field_symbols(symbols, action.expr, f):          # 0-d: fields appear bare
            terms.append(action.expr.xreplace({sym: -sym}) - action.expr)
        per_field.append(sp.Add(*terms))
    offsets = set()
    terms = [t for r in action.reductions for t in sp.Add.make_args(r.density)]
    for term in terms:             # spins interact only within one term of a density
        shifts = [symbols.meaning[s].shift for s in field_symbols(symbols, term)]
        for a in shifts:
            for b in shifts:
                d = symbols.wrapped(tuple(x - y for x, y in zip(a, b)))
                if any(d):
                    offsets.add(d)
                    offsets.add(symbols.wrapped(tuple(-x for x in d)))
    return Flips(tuple(per_field), tuple(sorted(offsets)))


@dataclass(frozen=True)
class QuadraticPart:
    """The quadratic, translation-invariant part of a local action of real site fields,
    S_2 = 1/2 sum_{x,y} phi_f(x) H_f(y - x) phi_f(y), as the stencil H_f: (offset, coefficient)
    pairs per field. Its Fourier transform K_f(p) = sum_d H_f(d) cos(p . d) is the kernel that
    Fourier-accelerated HMC uses as a mass (for phi^4: 2(1 - 2 lambda) - 4 kappa sum_mu cos p_mu)."""
    stencils: tuple[tuple[tuple[tuple[int, ...], sp.Expr], ...], ...]


def derive_quadratic(symbols: Symbols, action: Lowered, n_fields: int) -> QuadraticPart | None:
    """The Hessian of S at phi = 0, or None when S is not a local action (a non-linear function
    of site sums) or when its quadratic part couples different fields."""
    coefficients = [sp.diff(action.expr, r.symbol) for r in action.reductions]
    reduction_symbols = {r.symbol for r in action.reductions}
    if not action.reductions or any(c.free_symbols & reduction_symbols for c in coefficients):
        return None
    stencils = [dict() for _ in range(n_fields)]
    for c, r in zip(coefficients, action.reductions):
        syms = field_symbols(symbols, r.density)
        zero = {s: 0 for s in syms}
        for a in syms:
            da = sp.diff(r.density, a)
            for b in syms:
                h = sp.simplify(sp.diff(da, b).xreplace(zero))
                if h == 0:
                    continue
                fa, fb = symbols.meaning[a], symbols.meaning[b]
                if fa.field != fb.field:
                    return None
                d = symbols.wrapped(tuple(y - x for x, y in zip(fa.shift, fb.shift)))
                stencils[fa.field][d] = stencils[fa.field].get(d, 0) + c * h
    return QuadraticPart(tuple(tuple(sorted((d, sp.expand(v)) for d, v in st.items() if sp.expand(v) != 0))
                               for st in stencils))
