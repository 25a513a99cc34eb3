"""Prove that a declared global symmetry leaves the action invariant.

The map is applied at every site. Invariance of S = F(R_1..R_n) follows from invariance of each
site sum R_k = sum_x L_k(x), and a site sum is unchanged when the density changes by a lattice
total difference, so the difference L_k' - L_k is reduced modulo translations (each term moved
so that its smallest shift sits at the origin) before it is compared with zero. What SymPy cannot
simplify to zero is evaluated at random points to 30 digits: a non-zero value refuses the file.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import sympy as sp

from ..dsl import checked as C
from ..dsl.errors import TheoryError
from .budget import expand
from .derive import field_symbols
from .lower import Lowered, Lowerer, Symbols, to_sympy, unwrapped


@dataclass(frozen=True)
class ProvedSymmetry:
    text: str
    images: tuple[sp.Expr, ...]      # image of each field, in the fields at the same site
    exact_move: bool                 # unit |Jacobian| and closed on spins: usable as an MCMC move
    how: str                         # 'symbolic' or 'numeric'


def prove_symmetry(decl: C.SymmetryDecl, action: Lowered, lowerer: Lowerer, symbols: Symbols,
                   field_kinds: tuple[str, ...], values: dict) -> ProvedSymmetry:
    dim = lowerer.theory.dim
    origin = (0,) * dim
    images = [symbols.at(f, origin) for f in range(len(field_kinds))]
    for f, node in decl.maps:
        images[lowerer.theory.channel(f)] = lowerer.node(node, {})
    refuse = lambda change: TheoryError(
        decl.span, f"the symmetry '{decl.text}' does not leave the action invariant",
        f"the action changes by {short(change)}; check the map or the action.")
    if not action.reductions:                                   # 0-d: the fields appear in F
        difference = expand(transform(symbols, action.expr, images) - action.expr)
        how = same_function(difference, symbols, values)
        if how is None:
            raise refuse(readable(difference, symbols))
        return ProvedSymmetry(decl.text, tuple(images), exact_move(images, symbols, field_kinds, origin), how)
    sums, how = {}, "symbolic"
    for r in action.reductions:
        image = transform(symbols, r.density, images)
        found = image_of_sum(image, r, action.reductions, symbols, values, lowerer.theory.volume)
        if found is None:
            # Report the sum's own change: when sums do not mix, that is the whole story.
            difference = translate_canonical(symbols, expand(image - r.density))
            raise refuse(readable(difference, symbols))
        sums[r.symbol], step = found
        how = "numeric" if step == "numeric" else how
    # S = F(R_1, ..., R_n): each R_k maps to +-R_j (+ const), so S is invariant when F(R') = F(R),
    # which allows odd sums inside even functions such as (sum_x phi)^2 under phi -> -phi.
    change = expand(action.expr.xreplace(sums) - action.expr)
    step = same_function(change, symbols, values)
    if step is None:
        named = {r.symbol: sp.Symbol(f"sum(x)[{readable(r.density, symbols)}]") for r in action.reductions}
        raise refuse(str(change.xreplace(named)).replace("**", "^"))
    how = "numeric" if step == "numeric" else how
    return ProvedSymmetry(decl.text, tuple(images), exact_move(images, symbols, field_kinds, origin), how)


def image_of_sum(image: sp.Expr, own, reductions, symbols: Symbols, values: dict, volume: int):
    """The image of a site sum, sum_x image(x), as s * R_j + volume * c with s = +-1 and c free of
    fields (the sum itself first), and how that was shown; None when it is none of these."""
    candidates = [own] + [r for r in reductions if r is not own]
    for r in candidates:
        for sign in (1, -1):
            difference = translate_canonical(symbols, expand(image - sign * r.density))
            if not field_symbols(symbols, difference):
                return sign * r.symbol + volume * difference, "symbolic"
    for r in candidates:                  # functions SymPy does not simplify: compare numerically
        for sign in (1, -1):
            difference = translate_canonical(symbols, expand(image - sign * r.density))
            if numerically_zero(difference, symbols, values):
                return sign * r.symbol, "numeric"
    return None


def same_function(difference: sp.Expr, symbols: Symbols, values: dict) -> str | None:
    """'symbolic' or 'numeric' when the difference vanishes identically, None when it does not."""
    if difference == 0:
        return "symbolic"
    return "numeric" if numerically_zero(difference, symbols, values) else None


def transform(symbols: Symbols, expr: sp.Expr, images: list[sp.Expr]) -> sp.Expr:
    """Apply the map at every site: phi_f[s] -> image_f evaluated at shift s."""
    subs = {}
    for sym in field_symbols(symbols, expr):
        fs = symbols.meaning[sym]
        subs[sym] = symbols.shifted(images[fs.field], fs.shift)
    return expr.xreplace(subs)


def translate_canonical(symbols: Symbols, expr: sp.Expr) -> sp.Expr:
    """Move each term of a sum so that its smallest field shift is the origin."""
    terms = []
    for term in sp.Add.make_args(expr):
        shifts = [symbols.meaning[s].shift for s in field_symbols(symbols, term)]
        if shifts:
            low = min(shifts)
            term = symbols.shifted(term, tuple(-a for a in low))
        terms.append(term)
    return sp.Add(*terms)


def numerically_zero(expr: sp.Expr, symbols: Symbols, values: dict) -> bool:
    rng = random.Random(1234)
    subs = {sym: values[name] for name, sym in symbols.params.items() if name in values}
    expr = unwrapped(expr.xreplace({k: to_sympy(v) for k, v in subs.items()}))
    scale = 1.0
    for _ in range(6):
        point = {s: sp.Float(rng.uniform(-1.5, 1.5), 30) for s in expr.free_symbols}
        value = complex(expr.xreplace(point).evalf(30))
        if abs(value) > 1e-18 * scale:
            return False
    return True


def exact_move(images, symbols: Symbols, field_kinds, origin) -> bool:
    """Usable as an exact global Monte Carlo move: volume preserving (|det J| = 1) and, on spin
    fields, mapping spins to spins."""
    fields = [symbols.at(f, origin) for f in range(len(field_kinds))]
    jac = sp.Matrix([[sp.diff(img, v) for v in fields] for img in images])
    det = sp.simplify(jac.det())
    if not (det.is_number and sp.simplify(det**2 - 1) == 0):
        return False
    for img, kind in zip(images, field_kinds):
        if kind == "spin" and not any(img in (v, -v) for v in fields):
            return False
    return True


def readable(expr: sp.Expr, symbols: Symbols) -> str:
    """An expression in the language's own notation: phi[1,0] -> phi(x + e0), ** -> ^."""
    names = {}
    for sym in field_symbols(symbols, expr):
        fs = symbols.meaning[sym]
        name, _, mu = symbols.label(fs.field).partition(":")       # a link's direction: A:1
        if symbols.dim:
            steps = "".join(f" {'+' if k > 0 else '-'} {str(abs(k)) + '*' if abs(k) > 1 else ''}e{a}"
                            for a, k in enumerate(fs.shift) if k)
            name = f"{name}(x{steps}, e{mu})" if mu else f"{name}(x{steps})"
        names[sym] = sp.Symbol(name)
    return str(expr.xreplace(names)).replace("**", "^")


def short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
