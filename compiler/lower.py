"""Lower the checked tree to SymPy.

A lattice expression becomes a per-configuration expression F in *reduction symbols* R_k, each
R_k = sum_x L_k(x) a site sum of a local density L_k written in *field symbols* phi[s] (the field
at the shifted site x + s). Direction sums are unrolled here, so densities only hold fixed shifts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..dsl import checked as C
from ..dsl.errors import TheoryError

FUNCTIONS = {"exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos,
             "tan": sp.tan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh, "abs": sp.Abs,
             "re": sp.re, "im": sp.im, "conj": sp.conjugate}
NON_HOLOMORPHIC = ("abs", "re", "im", "conj")


class Internal(sp.Symbol):
    """A symbol the compiler makes (site sums R0, their factors dS_dR0, averages avg0). Its own
    class keeps it distinct from a user's complex parameter of the same name, which is a plain
    Symbol with the same (no) assumptions and would otherwise be the very same SymPy symbol."""


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

    def at(self, f: int, shift: tuple[int, ...]) -> sp.Symbol:
        key = FieldSymbol(f, self.wrapped(shift))
        if key not in self.fields:
            name = f"{self.field_names[f]}[{','.join(map(str, shift))}]" if self.dim else self.field_names[f]
            sym = sp.Symbol(name, real=True) if self.real_fields else sp.Symbol(name)
            self.fields[key], self.meaning[sym] = sym, key
        return self.fields[key]

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
        self.observables: dict[str, sp.Symbol] = {}
        self.averages: dict[str, tuple[sp.Symbol, C.Node]] = {}
        self.variables: dict[str, sp.Symbol] = {}
        self.local_params: dict = {}
        self.count = 0                     # reduction symbols are numbered across the theory

    def lower(self, node: C.Node) -> Lowered:
        self.reductions = []
        expr = self.node(node, {})
        return Lowered(expr, list(self.reductions))

    def node(self, n: C.Node, env: dict) -> sp.Expr:
        if isinstance(n, C.Const):
            return constant(n)
        if isinstance(n, C.ParamRef):
            value = self.theory.params.get(n.name, self.local_params.get(n.name))
            return self.symbols.param(n.name, value)
        if isinstance(n, C.FieldAt):
            return self.field_at(n, env)
        if isinstance(n, C.SiteReduce):
            return self.site_reduce(n, env)
        if isinstance(n, C.DirectionReduce):
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
            return self.observables[n.name]
        if isinstance(n, C.AverageOf):
            if n.key not in self.averages:
                self.averages[n.key] = (Internal(f"avg{len(self.averages)}"), n.expr)
            return self.averages[n.key][0]
        if isinstance(n, C.Var):
            # Internal: the schedule's t and x are never the parameter of the same name.
            return self.variables.setdefault(n.name, Internal(n.name, real=True))
        raise AssertionError(n)

    def field_at(self, n: C.FieldAt, env: dict) -> sp.Expr:
        if n.site is None:
            return self.symbols.at(n.field, (0,) * self.theory.dim)
        shift = list(env[n.site])
        for s in n.shifts:
            axis = s.axis if s.index is None else env[s.index]
            shift[axis] += s.coef
        return self.symbols.at(n.field, tuple(shift))

    def site_reduce(self, n: C.SiteReduce, env: dict) -> sp.Expr:
        density = self.node(n.body, {**env, n.index: (0,) * self.theory.dim})
        if n.mean:
            density = density / self.theory.volume
        if not any(self.symbols.is_field(s) for s in density.free_symbols):
            return density * self.theory.volume          # the same at every site
        sym = Internal(f"R{self.count}")
        self.count += 1
        self.reductions.append(Reduction(sym, density))
        return sym


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
