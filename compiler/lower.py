"""Lower the checked tree to SymPy.

A lattice expression becomes a per-configuration expression F in *reduction symbols* R_k, each
R_k = sum_x L_k(x) a site sum of a local density L_k written in *field symbols* phi[s] (the field
at the shifted site x + s). Direction sums are unrolled here, so densities only hold fixed shifts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp

from ..dsl import checked as C
from ..dsl.errors import TheoryError
from .budget import MAX_UNROLLED_TERMS, current

# wrap(a), the representative of an angle in [-pi, pi): an undefined function for SymPy (it is
# never differentiated: the checker keeps it out of the action); proofs evaluate it through
# `unwrapped` and generated code calls support.wrap.
Wrap = sp.Function("Wrap")


def unwrapped(expr: sp.Expr) -> sp.Expr:
    """expr with every wrap(a) written as a - 2 pi floor(a / (2 pi) + 1/2), which SymPy evaluates."""
    return expr.replace(Wrap, lambda a: a - 2 * sp.pi * sp.floor(a / (2 * sp.pi) + sp.Rational(1, 2)))


FUNCTIONS = {"exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos,
             "tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh, "abs": sp.Abs,
             "re": sp.re, "im": sp.im, "conj": sp.conjugate, "wrap": Wrap}
NON_HOLOMORPHIC = ("abs", "re", "im", "conj")


class Internal(sp.Symbol):
    """A symbol the compiler makes (site sums R0, their factors dS_dR0, averages avg0). Its own
    class keeps it distinct from a user's complex parameter of the same name, which is a plain
    Symbol with the same (no) assumptions and would otherwise be the very same SymPy symbol."""


DERIVED = 1 << 20      # field numbers from here on are derived fields (Symbols.derived)


@dataclass(frozen=True)
class FieldSymbol:
    field: int
    shift: tuple[int, ...]


@dataclass
class Symbols:
    """The SymPy symbols of one theory and what each stands for."""
    field_names: tuple[str, ...]
    dim: int
    real_fields: bool
    extents: tuple[int, ...] = ()                      # the lattice; () leaves shifts as they are
    fields: dict = field(default_factory=dict)       # FieldSymbol -> sp.Symbol
    meaning: dict = field(default_factory=dict)      # sp.Symbol -> FieldSymbol
    params: dict = field(default_factory=dict)       # name -> sp.Symbol
    # Derived fields: sums of a local density along one axis (sum(r in 0..N-1)[phi(x + r*e1)],
    # or a factor pulled out of a site sum), each constant along its axis: (axis, density).
    derived: list = field(default_factory=list)

    def at(self, f: int, shift: tuple[int, ...]) -> sp.Symbol:
        """The field f (or, for f < 0, the coordinate pos(., -1 - f)) at the site x + shift."""
        shift = self.wrapped(shift)
        if f < 0:                          # a coordinate depends only on its own axis
            shift = tuple(s if a == -1 - f else 0 for a, s in enumerate(shift))
        elif f >= DERIVED:                 # a derived field is constant along its axis
            axis = self.derived[f - DERIVED][0]
            shift = tuple(0 if a == axis else s for a, s in enumerate(shift))
        key = FieldSymbol(f, shift)
        if key not in self.fields:
            label = self.label(f)
            name = f"{label}[{','.join(map(str, shift))}]" if self.dim else label
            sym = sp.Symbol(name, real=True) if self.real_fields else sp.Symbol(name)
            self.fields[key], self.meaning[sym] = sym, key
        return self.fields[key]

    def label(self, f: int) -> str:
        if f < 0:
            return f"pos{-1 - f}"
        if f == DERIVED - 1:
            return "w"                     # the gauge function of compiler/invariance.py
        return self.field_names[f] if f < DERIVED else f"D{f - DERIVED}"

    def axis_sum(self, axis: int, density: sp.Expr) -> sp.Expr:
        """sum_r density(x + r e_axis) over a period, as a derived field at x. The density is
        anchored at its first field's shift, so the same density at other shifts is one field."""
        syms = sorted((self.meaning[s] for s in density.free_symbols if s in self.meaning),
                      key=lambda k: k.shift)
        anchor = syms[0].shift if syms else (0,) * self.dim
        density = self.shifted(density, tuple(-a for a in anchor))
        if (axis, density) not in self.derived:
            self.derived.append((axis, density))
        return self.at(DERIVED + self.derived.index((axis, density)), anchor)

    def varying(self, expr: sp.Expr) -> frozenset:
        """The axes along which expr may vary from site to site."""
        axes = set()
        for sym in expr.free_symbols:
            if sym not in self.meaning:
                continue
            f = self.meaning[sym].field
            if f < 0:
                axes.add(-1 - f)
            elif f >= DERIVED:
                axis, density = self.derived[f - DERIVED]
                axes |= self.varying(density) - {axis}
            else:
                axes |= set(range(self.dim))
        return frozenset(axes)

    def wrapped(self, shift) -> tuple[int, ...]:
        """The shift as its representative in (-N/2, N/2] along each axis: on a periodic lattice
        x + N e_k is x, so phi(x + mu) and phi(x - mu) are one site when N = 2."""
        if not self.extents:
            return tuple(shift)
        out = []
        for s, n in zip(shift, self.extents):
            r = s % n
            out.append(r - n if r > n // 2 else r)
        return tuple(out)

    def param(self, name: str, value) -> sp.Symbol:
        if name not in self.params:
            real = not isinstance(value, complex)
            self.params[name] = sp.Symbol(name, real=True) if real else sp.Symbol(name)
        return self.params[name]

    def shifted(self, expr: sp.Expr, by: tuple[int, ...]) -> sp.Expr:
        """expr evaluated at x + by: every field symbol phi[s] becomes phi[s + by]."""
        subs = {}
        for sym in expr.free_symbols:
            if sym in self.meaning:
                fs = self.meaning[sym]
                subs[sym] = self.at(fs.field, tuple(a + b for a, b in zip(fs.shift, by)))
        return expr.xreplace(subs)

    def is_field(self, sym) -> bool:
        return sym in self.meaning


@dataclass(frozen=True)
class Reduction:
    symbol: sp.Symbol
    density: sp.Expr          # sum over sites of this (already divided by the volume for mean)


@dataclass
class Lowered:
    """A per-configuration expression and the site sums it needs (in evaluation order)."""
    expr: sp.Expr
    reductions: list[Reduction]


class Lowerer:
    def __init__(self, theory: C.CheckedTheory, symbols: Symbols):
        self.theory, self.symbols = theory, symbols
        self.reductions: list[Reduction] = []
        self.observables: dict[str, sp.Expr | list] = {}   # a vector observable: one per component
        self.averages: dict[str, tuple[sp.Symbol, C.Node, dict]] = {}   # key -> (symbol, node, env)
        self.variables: dict[str, sp.Symbol] = {}
        self.local_params: dict = {}
        self.count = 0                     # reduction symbols are numbered across the theory
        self.vector_lo: dict[str, int] = {}  # vector observable -> its first index
        self.average_of: dict = {}           # per-configuration expression -> average symbol
        # Observables are lowered with structure kept (derived fields, factored site sums): they
        # are evaluated, never differentiated, unlike the action.
        self.structured = False
        self.terms = 0                       # unrolled so far (budget.MAX_UNROLLED_TERMS)

    def lower(self, node: C.Node, env: dict | None = None) -> Lowered:
        self.reductions = []
        expr = self.node(node, dict(env or {}))
        return Lowered(expr, list(self.reductions))

    def unrolled(self, count: int) -> None:
        """Direction, pair and range sums are unrolled; their terms are counted against a budget
        (nested sums multiply: sum(mu)[sum(nu)[...]] ten deep in 8 dimensions is 8^10 terms)."""
        self.terms += count
        if self.terms > MAX_UNROLLED_TERMS:
            span, what = current()
            raise TheoryError(span, f"{what} unrolls to more than {MAX_UNROLLED_TERMS} terms",
                              "nest fewer sums over directions or ranges.")

    def node(self, n: C.Node, env: dict) -> sp.Expr:
        if isinstance(n, C.Const):
            return constant(n)
        if isinstance(n, C.ParamRef):
            value = self.theory.params.get(n.name, self.local_params.get(n.name))
            return self.symbols.param(n.name, value)
        if isinstance(n, C.FieldAt):
            return self.field_at(n, env)
        if isinstance(n, C.LinkAt):
            return self.link_at(n, env)
        if isinstance(n, C.PairReduce):
            self.unrolled(self.theory.dim * (self.theory.dim - 1) // 2)
            terms = [self.node(n.body, {**env, n.first: a, n.second: b})
                     for a in range(self.theory.dim) for b in range(a + 1, self.theory.dim)]
            return sp.Add(*terms) / len(terms) if n.mean else sp.Add(*terms)
        if isinstance(n, C.SiteReduce):
            return self.site_reduce(n, env)
        if isinstance(n, C.DirectionReduce):
            self.unrolled(self.theory.dim)
            terms = [self.node(n.body, {**env, n.index: axis}) for axis in range(self.theory.dim)]
            total = sp.Add(*terms)
            return total / self.theory.dim if n.mean else total
        if isinstance(n, C.Apply):
            return FUNCTIONS[n.func](self.node(n.arg, env))
        if isinstance(n, C.BinOp):
            a, b = self.node(n.left, env), self.node(n.right, env)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b, "^": lambda: a ** b}[n.op]()
        if isinstance(n, C.Neg):
            return -self.node(n.operand, env)
        if isinstance(n, C.ObservableRef):
            value = self.observables[n.name]
            if n.index is None:
                return value
            return value[(self.integer(n.index, env) - self.vector_lo[n.name]) % len(value)]
        if isinstance(n, C.AverageOf):
            return self.average(n, env)
        if isinstance(n, C.IndexVar):
            return sp.Integer(env[n.name])
        if isinstance(n, C.RangeReduce):
            self.unrolled(n.hi - n.lo + 1)
            terms = [self.node(n.body, {**env, n.index: v}) for v in range(n.lo, n.hi + 1)]
            total = self.period_sum(terms) if self.structured else None
            if total is None:
                total = sp.Add(*terms)
            return total / len(terms) if n.mean else total
        if isinstance(n, C.Coordinate):
            return self.symbols.at(-1 - n.axis, self.site_shift(n.site, n.shifts, env))
        if isinstance(n, C.Var):
            # Internal: the schedule's t and x are never the parameter of the same name.
            return self.variables.setdefault(n.name, Internal(n.name, real=True))
        raise AssertionError(n)

    def average(self, n: C.AverageOf, env: dict) -> sp.Expr:
        """The symbol of an average; one per distinct per-configuration expression, so <C(t + 1)>
        at t = 0 and <C(t)> at t = 1 are one input, labelled <C(1)>."""
        integers = {k: v for k, v in env.items() if isinstance(v, int)}
        inner = self.node(n.expr, integers)             # observables only: no site sums
        if inner not in self.average_of:
            key = n.key
            if integers:
                key = f"<{inner.name}>" if isinstance(inner, sp.Symbol) else \
                    key + "".join(f"[{k}={v}]" for k, v in sorted(integers.items()))
            sym = Internal(f"avg{len(self.averages)}")
            self.averages[key] = (sym, n.expr, integers)
            self.average_of[inner] = sym
        return self.average_of[inner]

    def field_at(self, n: C.FieldAt, env: dict) -> sp.Expr:
        channel = self.theory.channel(n.field)
        if n.site is None:
            return self.symbols.at(channel, (0,) * self.theory.dim)
        return self.symbols.at(channel, self.site_shift(n.site, n.shifts, env))

    def link_at(self, n: C.LinkAt, env: dict) -> sp.Expr:
        axis = n.axis if n.index is None else env[n.index]
        return self.symbols.at(self.theory.channel(n.field, axis), self.site_shift(n.site, n.shifts, env))

    def site_shift(self, site: str, shifts, env: dict) -> tuple[int, ...]:
        shift = list(env[site])
        for s in shifts:
            axis = s.axis if s.index is None else env[s.index]
            shift[axis] += s.coef if isinstance(s.coef, int) else self.integer(s.coef, env)
        return tuple(shift)

    def integer(self, n: C.Node, env: dict) -> int:
        """The value of an index expression (t + 1) where the indices have values."""
        return int(self.node(n, env))

    def site_reduce(self, n: C.SiteReduce, env: dict) -> sp.Expr:
        density = self.node(n.body, {**env, n.index: (0,) * self.theory.dim})
        if n.mean:
            density = density / self.theory.volume
        if not any(self.symbols.is_field(s) for s in density.free_symbols):
            return density * self.theory.volume          # the same at every site
        if not self.structured:
            return self.reduction(density)
        groups: dict = {}
        for term in sp.Add.make_args(density):
            term, summed = self.factored(term)
            # a term constant along an axis is a smaller tensor, each entry standing for N_k
            # sites; along an axis summed by factoring, it already holds the sum
            copies = math.prod(n for k, n in enumerate(self.theory.lattice)
                               if k not in self.symbols.varying(term) and k not in summed)
            groups.setdefault(self.symbols.varying(term), []).append(term * copies)
        total = sp.Integer(0)
        for axes, terms in groups.items():
            total += self.reduction(sp.Add(*terms)) if axes else sp.Add(*terms)
        return total

    def reduction(self, density: sp.Expr) -> sp.Expr:
        sym = Internal(f"R{self.count}")
        self.count += 1
        self.reductions.append(Reduction(sym, density))
        return sym

    def factored(self, term: sp.Expr) -> tuple[sp.Expr, set]:
        """sum_x A(x) B(x) with B constant along axis k is sum_x B(x) (sum_k A)(x): the factors
        that vary along k are summed along k first, so what is left is a smaller tensor (this
        makes a correlator sum_x phi(x) P(x + t e0) cost O(N) per t, not O(volume))."""
        factors, summed = list(sp.Mul.make_args(term)), set()
        while True:
            for k in range(self.theory.dim):
                var = [f for f in factors if k in self.symbols.varying(f)]
                const = [f for f in factors if k not in self.symbols.varying(f)]
                if var and any(self.symbols.varying(f) for f in const):
                    factors = const + [self.symbols.axis_sum(k, sp.Mul(*var))]
                    summed.add(k)
                    break
            else:
                return sp.Mul(*factors), summed

    def period_sum(self, terms: list) -> sp.Expr | None:
        """terms[r] = f(x + r e_k) for r over a whole period of axis k: a derived field."""
        base = terms[0]
        if len(terms) < 2 or not all(s in self.symbols.meaning or s in set(self.symbols.params.values())
                                     for s in base.free_symbols):
            return None
        for k, extent in enumerate(self.theory.lattice):
            unit = tuple(1 if a == k else 0 for a in range(self.theory.dim))
            if extent == len(terms) and all(
                    t == self.symbols.shifted(base, tuple(r * u for u in unit)) for r, t in enumerate(terms)):
                return self.symbols.axis_sum(k, base)
        return None


def constant(n: C.Const) -> sp.Expr:
    """Exact SymPy numbers: 0.1 stays 1/10 so that symmetry proofs and simplification are exact."""
    if n.text == "pi":
        return sp.pi
    if isinstance(n.value, complex):
        return sp.I * sp.Rational(n.text[:-1])
    if n.text and n.text[0].isdigit() or n.text.startswith("."):
        return sp.Rational(n.text)
    return sp.Integer(n.value) if isinstance(n.value, int) else sp.Float(n.value)


def holomorphy_check(node: C.Node, span, where: str):
    """A complex action must be holomorphic in the fields for its drift to exist."""
    from ..dsl.checker import walk
    for n in walk(node):
        if isinstance(n, C.Apply) and n.func in NON_HOLOMORPHIC:
            raise TheoryError(span, f"the {where} is complex, and {n.func}() is not holomorphic, so "
                              "complex Langevin has no drift for it",
                              "write a complex action with analytic functions only (exp, log, powers, ...).")


def to_sympy(value) -> sp.Expr:
    """A parameter's Python value as an exact SymPy number (0.1 -> 1/10, 1+1j -> 1 + I)."""
    if isinstance(value, complex):
        return to_sympy(value.real) + sp.I * to_sympy(value.imag)
    if isinstance(value, int):
        return sp.Integer(value)
    return sp.Rational(repr(float(value)))
