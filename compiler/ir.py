"""The SymPy stage of the pipeline: everything derived from a checked theory, before code is printed."""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..dsl import checked as C
from ..dsl.errors import TheoryError
from .budget import expand, stage
from .derive import Flips, Force, QuadraticPart, derive_flips, derive_force, derive_quadratic
from .lower import Lowered, Lowerer, Symbols, holomorphy_check, to_sympy
from .schedule import Kernels, derive_schedule
from .invariance import prove_gauge, prove_periodic
from .symmetry import ProvedSymmetry, prove_symmetry


@dataclass
class TheoryIR:
    theory: C.CheckedTheory
    symbols: Symbols
    is_complex: bool
    action: Lowered
    force: Force
    observables: list[tuple[str, sp.Symbol, Lowered]]
    averages: list[tuple[str, sp.Symbol, Lowered]]      # (key '<M^2>', symbol, per-config expression)
    estimates: list[tuple[str, sp.Expr]]               # in the average symbols
    symmetries: list[ProvedSymmetry]
    schedules: list[Kernels]
    flips: Flips | None = None                         # spin theories with a local action
    components: dict = field(default_factory=dict)     # component symbol -> (vector observable, position)
    estimate_vectors: dict = field(default_factory=dict)   # vector estimate -> its component labels
    quadratic: QuadraticPart | None = None             # real site fields with a local action

    def describe(self) -> str:
        """The derived expressions, for `theoryc compile --emit sympy`."""
        out = [f"# theory {self.theory.name}: lattice {self.theory.lattice or '0-d'}, "
               f"{'complex' if self.is_complex else 'real'} action"]
        out += [f"param {k} = {v}" for k, v in self.theory.params.items()]
        out += describe_lowered("S", self.action)
        for (sym, expr) in self.force.factors:
            out.append(f"{sym} = {expr}")
        for f, expr in zip(self.theory.fields, self.force.fields):
            out.append(f"dS/d{f.name}(x) = {expr}")
        for j, (axis, density) in enumerate(self.symbols.derived):
            out.append(f"D{j}(x) = sum along axis {axis} of [ {density} ]  (a derived field)")
        for name, _, low in self.observables:
            out += describe_lowered(name, low)
        for key, sym, low in self.averages:
            out.append(f"{sym} = {key} with per-configuration {low.expr}")
        out += [f"estimate {name} = {expr}" for name, expr in self.estimates]
        for s in self.symmetries:
            out.append(f"symmetry {s.text}: proved {s.how}ally; "
                       f"{'used' if s.exact_move else 'not usable'} as an exact global move")
        for k in self.schedules:
            out.append(f"schedule {k.name}: k(t) = {k.k}, g(t) = {k.g}, "
                       f"f(t) = {k.f if k.f is not None else '(tabulated)'}, "
                       f"Xi(t) = {k.xi if k.xi is not None else '(tabulated)'}")
        return "\n".join(out) + "\n"


def describe_lowered(name: str, low: Lowered) -> list[str]:
    lines = [f"{r.symbol} = sum_x[ {r.density} ]" for r in low.reductions]
    return lines + [f"{name} = {low.expr}"]


def lower_theory(theory: C.CheckedTheory) -> TheoryIR:
    values = dict(theory.params)
    real_fields = not action_is_complex(theory)
    symbols = Symbols(channel_labels(theory), theory.dim, real_fields, theory.lattice)
    n_channels = len(theory.channels)
    lowerer = Lowerer(theory, symbols)
    stage(theory.action_span, "the action")
    action = lowerer.lower(theory.action)
    check_defined(action, theory.action_span, "the action")
    is_complex = uses_imaginary(action, symbols, values)
    if is_complex:
        holomorphy_check(theory.action, theory.action_span, "action")
    force = derive_force(symbols, action, n_channels, theory.action_span)
    observables, components = [], {}
    params = set(symbols.params.values())
    lowerer.structured = True
    for name, node in theory.observables:
        rng = theory.indices.get(f"observable {name}")
        span = theory.spans.get(f"observable {name}")
        stage(span, f"observable '{name}'")
        parts = []
        for v in ([None] if rng is None else rng.values):
            low = lowerer.lower(node, {} if rng is None else {rng.name: v})
            label = name if rng is None else f"{name}({v})"
            check_defined(low, span, f"observable '{label}'")
            sym = sp.Symbol(label)
            if rng is not None:
                components[sym] = (name, v - rng.lo)
            # A constant observable is used by later observables as its value: generated code
            # then folds exp(c) of a constant instead of calling torch on a Python number.
            constant = not low.reductions and low.expr.free_symbols <= params
            parts.append(low.expr if constant else sym)
            observables.append((label, sym, low))
        lowerer.observables[name] = parts[0] if rng is None else parts
        if rng is not None:
            lowerer.vector_lo[name] = rng.lo
    # averages read obs[name]: symbols again, not folded constants
    lowerer.observables = {}
    for label, sym, _ in observables:
        name, _, index = label.partition("(")
        if index:
            lowerer.observables.setdefault(name, []).append(sym)
        else:
            lowerer.observables[name] = sym
    estimates, vectors = [], {}
    for name, node in theory.estimates:
        rng = theory.indices.get(f"estimate {name}")
        span = theory.spans.get(f"estimate {name}")
        stage(span, f"estimate '{name}'")
        for v in ([None] if rng is None else rng.values):
            label = name if rng is None else f"{name}({v})"
            expr = lowerer.lower(node, {} if rng is None else {rng.name: v}).expr
            check_defined(Lowered(expr, []), span, f"estimate '{label}'")
            estimates.append((label, expr))
            if rng is not None:
                vectors.setdefault(name, []).append(label)
    averages = [(key, sym, lowerer.lower(node, env)) for key, (sym, node, env) in lowerer.averages.items()]
    kinds = channel_kinds(theory)
    symmetries = []
    for d in theory.symmetries:
        stage(d.span, f"the symmetry '{d.text}'")
        symmetries.append(prove_symmetry(d, action, lowerer, symbols, kinds, values))
    schedules = []
    for d in theory.schedules:
        stage(d.span, f"schedule '{d.name}'")
        schedules.append(derive_schedule(d, lowerer, values))
    stage(theory.action_span, "the action")
    all_spins = all(f.kind == "spin" for f in theory.fields)
    flips = derive_flips(symbols, action, n_channels) if all_spins and not is_complex else None
    if any(k == "angle" for k in kinds):
        prove_invariances(theory, lowerer, symbols, action, values)
    quadratic = None
    if theory.lattice and not is_complex and all(k == "real" for k in kinds):
        quadratic = derive_quadratic(symbols, action, n_channels)
    return TheoryIR(theory, symbols, is_complex, action, force, observables, averages, estimates,
                    symmetries, schedules, flips, components, vectors, quadratic)


def channel_labels(theory: C.CheckedTheory) -> tuple[str, ...]:
    """A name per configuration component: the field's, or 'A:mu' for direction mu of a link
    field (':' keeps it apart from every name a file can declare)."""
    return tuple(theory.fields[f].name if mu is None else f"{theory.fields[f].name}:{mu}"
                 for f, mu in theory.channels)


def channel_kinds(theory: C.CheckedTheory) -> tuple[str, ...]:
    """'real', 'spin' or 'angle' per component (a link field's components are angles)."""
    return tuple("angle" if theory.fields[f].kind == "link" else theory.fields[f].kind
                 for f, _ in theory.channels)


def prove_invariances(theory, lowerer, symbols, action, values):
    """Angles: the action and every observable are 2 pi-periodic in each angle; gauge link fields:
    the action and every observable are gauge invariant. Observables are lowered again without
    the structure kept for speed (derived fields), so the proofs see plain densities."""
    angles = {c for c, k in enumerate(channel_kinds(theory)) if k == "angle"}
    names = [f.name for f in theory.fields]
    gauge = [(theory.channel(names.index(name), 0), name) for name in theory.gauge]   # (first component, field)
    prove_periodic(symbols, action, angles, theory.action_span, "the action", values)
    for base, name in gauge:
        prove_gauge(symbols, action, base, theory.action_span, "the action", name, values)
    plain = Lowerer(theory, symbols)
    plain.vector_lo, plain.observables = dict(lowerer.vector_lo), dict(lowerer.observables)
    for name, node in theory.observables:
        rng = theory.indices.get(f"observable {name}")
        span = theory.spans.get(f"observable {name}")
        stage(span, f"observable '{name}'")
        for v in ([None] if rng is None else rng.values):
            low = plain.lower(node, {} if rng is None else {rng.name: v})
            what = f"observable '{name}'"
            prove_periodic(symbols, low, angles, span, what, values)
            for base, link in gauge:
                prove_gauge(symbols, low, base, span, what, link, values)


def check_defined(low: Lowered, span, what: str):
    """SymPy turns 1/0 and log(0) into zoo or nan, which generated code cannot even name."""
    if any(e.has(sp.zoo, sp.oo, sp.nan) for e in [low.expr] + [r.density for r in low.reductions]):
        raise TheoryError(span, f"{what} is infinite or undefined everywhere",
                          "it divides by zero or takes log(0) (after simplification); rewrite it.")


def action_is_complex(theory: C.CheckedTheory) -> bool:
    """Decided before lowering, because it fixes whether field symbols are real: a complex action
    is one with a complex parameter or an imaginary literal in it."""
    from ..dsl.checker import walk
    for n in walk(theory.action):
        if isinstance(n, C.Const) and isinstance(n.value, complex):
            return True
        if isinstance(n, C.ParamRef) and isinstance(theory.params.get(n.name), complex):
            return True
    return False


def uses_imaginary(action: Lowered, symbols: Symbols, values: dict) -> bool:
    numbers = {sym: to_sympy(values[name]) for name, sym in symbols.params.items() if name in values}
    exprs = [action.expr] + [r.density for r in action.reductions]
    return any(expand(e.xreplace(numbers)).has(sp.I) for e in exprs)
