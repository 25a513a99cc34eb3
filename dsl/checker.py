"""Resolve names, evaluate parameters, infer site/direction indices: syntax tree -> checked tree.

Every problem is raised as a TheoryError pointing at the offending place in the file.
"""
from __future__ import annotations

import cmath
import math
import re
from dataclasses import dataclass, field, replace

from . import ast
from . import checked as C
from .errors import Span, TheoryError, did_you_mean
from .printer import show

FUNCTIONS = ("exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "abs", "re", "im",
             "conj", "wrap")
REDUCTIONS = ("sum", "mean")
CONSTANTS = ("pi", "volume", "dim")
FIELD_KINDS = ("real", "spin", "angle")
UNIT_VECTOR = re.compile(r"e(\d+)$")
WHERE = {"schedule": "a schedule", "symmetry": "a symmetry", "estimate": "an estimate",
         "average": "an average <...>"}
HINT = {"schedule": "inside a schedule the state is x and the time t.",
        "symmetry": "a symmetry maps fields bare: phi -> -phi.",
        "estimate": "an estimate combines averages of observables, e.g. <M^2>.",
        "average": "an average is over observables: declare 'observable NAME = ...' and average <NAME>."}
RESERVED = set(FUNCTIONS) | set(REDUCTIONS) | set(CONSTANTS)

# Limits (README, "Limits"): what torch can hold and what SymPy can manipulate in bounded time.
MAX_DIM = 8                     # lattice dimensions (a batch of configurations adds two more)
MAX_VOLUME = 2**31              # sites of the lattice
MAX_EXPONENT = 1000             # magnitude of a constant exponent
MAX_RANGE = 4096                # integers of sum(r in A..B) and components of a vector observable
MAX_EXPANSION = 200_000         # syntax-tree nodes that let definitions may expand to, in all
MAX_DEPTH = 100                 # nesting of an expression after definitions are expanded (as parsed)


def fail(span, message, hint=""):
    raise TheoryError(span, message, hint)


# ---- constant evaluation (parameters, --set values) ------------------------------------------
def evaluate(expr: ast.Expr, params: dict) -> complex | float | int:
    """Evaluate a constant expression on Python numbers: a tree walk, never Python's eval."""
    if isinstance(expr, ast.Num):
        return number(expr.text)
    if isinstance(expr, ast.Imag):
        return complex(0.0, float(expr.text))
    if isinstance(expr, ast.Name):
        if expr.id in params:
            return params[expr.id]
        if expr.id == "pi":
            return math.pi
        fail(expr.span, f"unknown name '{expr.id}' in a constant expression",
             did_you_mean(expr.id, list(params) + ["pi"]) or
             "a parameter may use numbers, pi and earlier parameters.")
    if isinstance(expr, ast.Unary):
        return -evaluate(expr.operand, params)
    if isinstance(expr, ast.Binary):
        a, b = evaluate(expr.left, params), evaluate(expr.right, params)
        try:
            return arithmetic(expr.op, a, b)
        except (ZeroDivisionError, OverflowError, ValueError) as err:
            fail(expr.span, cannot_evaluate(err), CONSTANT_HINT)
    if isinstance(expr, ast.Call) and expr.body is None and expr.func.id in FUNCTIONS:
        if len(expr.args) != 1:
            fail(expr.span, f"{expr.func.id}() takes one argument")
        try:
            return apply_number(expr.func.id, evaluate(expr.args[0], params))
        except (ValueError, OverflowError, ZeroDivisionError) as err:
            fail(expr.span, cannot_evaluate(err), CONSTANT_HINT)
    fail(expr.span, "this is not a constant expression",
         "a parameter is a number built from literals, pi and earlier parameters.")


def cannot_evaluate(err: Exception) -> str:
    if isinstance(err, OverflowError):
        return "this value is outside the range of double precision"
    return "this value is infinite or undefined"

CONSTANT_HINT = "it divides by zero, takes log(0) or overflows; constants must be finite numbers."


def number(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)


def arithmetic(op: str, a, b):
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
            return a // b
        return a / b
    return power(a, b)


def power(a, b):
    """a ** b without building integers of millions of digits: an exact integer power only while
    the result stays within double precision, a float power (which raises OverflowError) else."""
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if abs(a) <= 1 or b * math.log2(abs(a)) < 1024:
            return a ** b
        return float(a) ** b
    if isinstance(b, int) and abs(b) > MAX_EXPONENT:
        b = float(b)
    return a ** b


def apply_number(func: str, v):
    real = not isinstance(v, complex)
    if func == "abs":
        return abs(v)
    if func == "re":
        return v.real
    if func == "im":
        return v.imag if not real else 0.0
    if func == "conj":
        return v.conjugate()
    if func == "wrap":
        return (v + math.pi) % (2 * math.pi) - math.pi
    if real and func in ("log", "sqrt") and v < 0:
        v = complex(v)
        real = False
    return getattr(math if real else cmath, func)(v)


def finite(v, name: str, span):
    """Parameters are finite numbers of double precision: 1e400 or 10^400 would reach the generated
    code as inf or as an integer torch cannot hold."""
    try:
        ok = cmath.isfinite(complex(v))
    except OverflowError:
        ok = False
    if not ok:
        fail(span, f"the value of parameter '{name}' is not a finite number of double precision",
             "parameters must lie within about 1e308 in magnitude.")
    return v


def simplify_number(v):
    """Complex values with no imaginary part become real: `--set sigma0=2` makes a real action."""
    if isinstance(v, complex) and v.imag == 0:
        return v.real
    return v


# ---- the checker ---------------------------------------------------------------------------
@dataclass
class Scope:
    """What an expression may refer to, where it stands."""
    where: str                               # action, observable, estimate, average, symmetry, schedule
    observables: tuple[str, ...] = ()
    estimates: dict = field(default_factory=dict)
    bound: dict = field(default_factory=dict)   # index name -> 'site' | 'direction' | 'integer'
    variables: tuple[str, ...] = ()          # schedule state and time
    vectors: dict = field(default_factory=dict)  # vector observable name -> IndexRange
    locals: dict = field(default_factory=dict)  # schedule-local parameter name -> qualified name

    def bind(self, name, kind):
        return replace(self, bound={**self.bound, name: kind})


class Checker:
    def __init__(self, module: ast.Module, source: str, overrides: dict[str, ast.Expr] | None):
        self.module, self.source = module, source
        self.overrides = dict(overrides or {})
        self.used_overrides: set[str] = set()
        self.names: dict[str, tuple[str, Span]] = {}   # every declared name -> (what, where)
        self.params: dict = {}
        self.fields: list[C.FieldDecl] = []
        self.lattice: tuple[int, ...] = ()
        self.constants: dict = {}          # id(node) -> (node, value or None): check_constants
        self.local_param_values: dict = {}  # qualified schedule-local name -> value
        self.indices: dict = {}             # 'observable C' / 'estimate m' -> IndexRange
        self.gauge: dict = {}               # gauge link field -> Span of its 'gauge' statement
        self.lets: dict = {}                # definition name -> ast.Let
        self.expanded = 0                   # syntax-tree nodes expanded from definitions so far

    # -- driver --
    def run(self) -> C.CheckedTheory:
        stmts = self.module.statements
        if not stmts:
            fail(Span.point(1, 1), "the file is empty", "start with 'theory NAME'.")
        if not isinstance(stmts[0], ast.TheoryName):
            fail(stmts[0].span, "a theory file must start with 'theory NAME'",
                 "add a first line such as 'theory my_model'.")
        name = stmts[0].name.id
        seen_lattice = seen_field = None
        action = action_span = None
        observables, estimates, symmetries, schedules = [], [], [], []
        for st in stmts[1:]:
            if isinstance(st, ast.TheoryName):
                fail(st.span, "a second 'theory' statement", "one theory per file.")
            elif isinstance(st, ast.Param):
                self.declare(st.name, "parameter")
                self.params[st.name.id] = self.param_value(st.name, st.expr)
            elif isinstance(st, ast.Lattice):
                if seen_lattice:
                    fail(st.span, "a second 'lattice' statement",
                         f"the lattice is already declared at line {seen_lattice.line}.")
                if seen_field:
                    fail(st.span, "the lattice must be declared before the fields",
                         "move the 'lattice' line above the 'field' lines.")
                seen_lattice = st.span
                self.lattice = tuple(self.extent(e) for e in st.extents)
                self.check_lattice_size(st)
            elif isinstance(st, ast.Field):
                seen_field = seen_field or st.span
                self.declare_fields(st)
            elif isinstance(st, ast.Link):
                seen_field = seen_field or st.span
                self.declare_links(st)
            elif isinstance(st, ast.Gauge):
                self.declare_gauge(st)
            elif isinstance(st, ast.Let):
                self.declare_let(st)
            elif isinstance(st, ast.Symmetry):
                symmetries.append(st)
            elif isinstance(st, ast.Action):
                if action is not None:
                    fail(st.span, "a second 'action' statement",
                         f"a theory has exactly one action (the first is at line {action_span.line}).")
                action, action_span = st, st.span
            elif isinstance(st, ast.Observable):
                self.declare(st.name, "observable")
                observables.append(st)
            elif isinstance(st, ast.Estimate):
                self.declare(st.name, "estimate")
                estimates.append(st)
            elif isinstance(st, ast.Schedule):
                self.declare(st.name, "schedule")
                schedules.append(st)
        if not self.fields:
            fail(stmts[0].span, f"theory '{name}' declares no field", "add e.g. 'field phi : real'.")
        if action is None and not schedules:
            fail(stmts[0].span, f"theory '{name}' has no action",
                 "add 'action = ...' (a data set's theory declares its shape and a 'schedule' instead).")
        if action is None and symmetries:     # nothing to verify it on
            fail(symmetries[0].span, f"theory '{name}' has no action, so no symmetry to verify",
                 "remove the 'symmetry' line (a data set's theory declares its shape and schedules), "
                 "or add the action.")
        sched = [self.schedule(s) for s in schedules]
        self.check_overrides_used()
        return C.CheckedTheory(
            name=name, lattice=self.lattice, fields=tuple(self.fields), params=dict(self.params),
            # a data set's theory (shape and schedules, no action): S = 0, marked data_only
            action=self.expr(action.expr, Scope("action")) if action else C.Const(0, "0"),
            action_span=action.expr.span if action else stmts[0].span, data_only=action is None,
            observables=self.observables(observables), estimates=self.estimates(estimates, observables),
            symmetries=tuple(self.symmetry(s) for s in symmetries), schedules=tuple(sched),
            source=self.source,
            spans={**{f"observable {o.name.id}": o.expr.span for o in observables},
                   **{f"estimate {e.name.id}": e.expr.span for e in estimates}},
            indices=dict(self.indices), gauge=tuple(self.gauge), gauge_span=dict(self.gauge))

    # -- declarations --
    def declare(self, name: ast.Name, what: str):
        if name.id in RESERVED or UNIT_VECTOR.match(name.id):
            fail(name.span, f"'{name.id}' is a reserved name", "choose another name.")
        if name.id in self.names:
            other, where = self.names[name.id]
            fail(name.span, f"'{name.id}' is already declared as a {other} at line {where.line}",
                 "every name in a theory must be unique.")
        self.names[name.id] = (what, name.span)

    def declare_fields(self, st: ast.Field):
        if st.type.id not in FIELD_KINDS:
            fail(st.type.span, f"unknown field type '{st.type.id}'",
                 did_you_mean(st.type.id, FIELD_KINDS) or "a field is 'real' or 'spin'.")
        for n in st.names:
            self.declare(n, "field")
            self.fields.append(C.FieldDecl(n.id, st.type.id, n.span))

    def declare_links(self, st: ast.Link):
        if st.type.id != "angle":
            fail(st.type.span, f"a link field is an angle, not '{st.type.id}'", "write 'link A : angle'.")
        if not self.lattice:
            fail(st.span, "a link field needs a lattice", "declare 'lattice L x L' before the link field.")
        for n in st.names:
            self.declare(n, "link")
            self.fields.append(C.FieldDecl(n.id, "link", n.span))

    def declare_gauge(self, st: ast.Gauge):
        if self.names.get(st.name.id, (None,))[0] != "link":
            links = [f.name for f in self.fields if f.kind == "link"]
            fail(st.name.span, f"'{st.name.id}' is not a link field", did_you_mean(st.name.id, links) or
                 "declare 'link A : angle' first; gauge invariance is a property of link fields.")
        if st.name.id in self.gauge:
            fail(st.span, f"'gauge {st.name.id}' is declared twice")
        self.gauge[st.name.id] = st.span

    def declare_let(self, st: ast.Let):
        """A definition may use its arguments, params, fields and earlier definitions; nothing of
        the place where it is used (no name is captured from there)."""
        self.declare(st.name, "definition")
        args = set()
        for a in st.args:
            if a.id in args or a.id in self.names or a.id in RESERVED or UNIT_VECTOR.match(a.id):
                fail(a.span, f"'{a.id}' cannot be an argument of '{st.name.id}'",
                     "use fresh names such as x, mu and nu, each once.")
            args.add(a.id)
        for node in ast_walk(st.expr):
            if isinstance(node, ast.Name) and node.id not in args and node.id not in self.names \
                    and node.id not in RESERVED and not UNIT_VECTOR.match(node.id) \
                    and node.id not in bound_names(st.expr):
                fail(node.span, f"'{node.id}' is neither an argument of '{st.name.id}' nor declared before it",
                     f"add it to the arguments: let {st.name.id}({', '.join([*[a.id for a in st.args], node.id])}) = ...")
        self.lets[st.name.id] = st

    def expand(self, name: ast.Name, args: tuple, span: Span, scope: Scope) -> C.Node:
        """A use of a definition: its body with the arguments put in, checked where it stands."""
        let = self.lets[name.id]
        if len(args) != len(let.args):
            fail(span, f"'{name.id}' takes {len(let.args)} argument{'s' * (len(let.args) != 1)}, not {len(args)}",
                 f"it is defined at line {let.span.line} as {name.id}({', '.join(a.id for a in let.args)}).")
        binders = bound_names(let.expr)
        for arg in args:
            for node in ast_walk(arg):
                if isinstance(node, ast.Name) and node.id in binders:
                    fail(node.span, f"'{node.id}' would be captured by an index of the same name inside '{name.id}'",
                         f"rename the index here or in the definition at line {let.span.line}.")
        body = substitute(let.expr, {a.id: arg for a, arg in zip(let.args, args)})
        size, depth = ast_size_depth(body)
        self.expanded += size
        if depth > MAX_DEPTH or self.expanded > MAX_EXPANSION:
            fail(span, f"'{name.id}' expands to an expression too large to compile",
                 f"definitions expand to at most {MAX_DEPTH} levels and {MAX_EXPANSION} nodes in all.")
        return self.expr(body, scope)

    def param_value(self, name: ast.Name, expr: ast.Expr, qualified: str | None = None,
                    local_values: dict | None = None):
        """A parameter's value: its --set override if there is one, else its own expression.
        A schedule-local parameter answers to 'schedule.name', or to plain 'name' when no global
        parameter has that name."""
        values = {**self.params, **(local_values or {})}
        keys = [qualified] if qualified else [name.id]
        if qualified and name.id not in self.params:
            keys.append(name.id)
        for k in keys:
            if k in self.overrides:
                self.used_overrides.add(k)
                try:
                    return finite(simplify_number(evaluate(self.overrides[k], values)), name.id,
                                  name.span)
                except TheoryError as err:
                    raise TheoryError(None, f"--set {k}: {err.message}", err.hint, kind="Error") from None
        return finite(simplify_number(evaluate(expr, values)), name.id, expr.span)

    def check_overrides_used(self):
        known = list(self.params) + [k for k in self.used_overrides]
        for k in self.overrides:
            if k not in self.used_overrides:
                raise TheoryError(None, f"--set {k}: the theory has no parameter '{k}'",
                                  did_you_mean(k, known) or f"its parameters are: {', '.join(self.params) or 'none'}.",
                                  kind="Error")

    def extent(self, e) -> int:
        if isinstance(e, ast.Num):
            value, what = number(e.text), e.text
        else:
            if e.id not in self.params:
                fail(e.span, f"unknown lattice extent '{e.id}'",
                     did_you_mean(e.id, self.params) or "an extent is an integer or an earlier integer param.")
            value, what = self.params[e.id], f"'{e.id}' = {self.params[e.id]}"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value < 1:
            fail(e.span, f"a lattice extent must be a positive integer, not {what}",
                 "write e.g. 'lattice 16 x 16' or 'param L = 16' then 'lattice L x L'.")
        return value

    def check_lattice_size(self, st: ast.Lattice):
        if len(self.lattice) > MAX_DIM:
            fail(st.extents[MAX_DIM].span, f"a lattice has at most {MAX_DIM} dimensions, not {len(self.lattice)}",
                 "lattice field theories live in 1 to 4 (at most 8) dimensions.")
        if math.prod(self.lattice) > MAX_VOLUME:
            fail(st.span, f"the lattice has {math.prod(self.lattice):.3g} sites, more than {MAX_VOLUME:.3g}",
                 "one configuration would not fit in memory; use smaller extents.")

    # -- statements --
    def observables(self, stmts):
        out = []
        for st in stmts:
            scope = Scope("observable", observables=tuple(n for n, _ in out), vectors=self.vectors())
            if st.index is not None:
                rng = self.observable_range(st)
                self.indices[f"observable {st.name.id}"] = rng
                scope = scope.bind(rng.name, "integer")
            out.append((st.name.id, self.expr(st.expr, scope)))
        return tuple(out)

    def vectors(self) -> dict:
        return {k.split(" ", 1)[1]: v for k, v in self.indices.items() if k.startswith("observable ")}

    def observable_range(self, st: ast.Observable) -> C.IndexRange:
        """lo..hi as declared, or 0 .. N-1 from the extent N of the direction it multiplies."""
        index = st.index
        self.fresh_index(index.name, Scope("observable"))
        if index.lo is not None:
            return self.declared_range(index)
        extents = set(integer_extents(index.name.id, st.expr, self.lattice))
        vectors = self.vectors()
        lengths = {(vectors[n].lo, vectors[n].hi) for n, _ in indexed_observables(index.name.id, st.expr)
                   if n in vectors}
        if lengths and not extents and len(lengths) == 1:      # Q(t) = S(t + 1)^2: S's indices
            lo, hi = lengths.pop()
            return C.IndexRange(index.name.id, lo, hi)
        if not extents:
            fail(index.name.span, f"the range of '{index.name.id}' cannot be inferred: it multiplies no direction",
                 f"give it: {st.name.id}({index.name.id} in 0..4), or use it in a shift such as "
                 f"x + {index.name.id}*e0.")
        if len(extents) > 1:
            fail(index.name.span, f"'{index.name.id}' multiplies directions of different extents "
                 f"({', '.join(map(str, sorted(extents)))})", f"give its range: {st.name.id}({index.name.id} in 0..N-1).")
        return C.IndexRange(index.name.id, 0, extents.pop() - 1)

    def declared_range(self, index) -> C.IndexRange:
        lo, hi = self.integer_constant(index.lo), self.integer_constant(index.hi)
        if hi < lo:
            fail(index.span, f"the range {lo}..{hi} is empty", "write lo..hi with lo <= hi.")
        if hi - lo + 1 > MAX_RANGE:
            fail(index.span, f"the range {lo}..{hi} has more than {MAX_RANGE} integers")
        return C.IndexRange(index.name.id, lo, hi)

    def integer_constant(self, e: ast.Expr) -> int:
        value = evaluate(e, self.params)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            fail(e.span, f"a range bound must be an integer, not {value}",
                 "bounds are integer expressions of numbers and params, e.g. 0..L-1.")
        return value

    def fresh_index(self, name: ast.Name, scope: Scope):
        if name.id in self.names or name.id in RESERVED or UNIT_VECTOR.match(name.id) or name.id in scope.bound:
            fail(name.span, f"'{name.id}' cannot be an index: it already names something",
                 "use a fresh name such as x, t, r, mu or nu.")

    def estimates(self, stmts, observables):
        out: dict = {}
        names = tuple(o.name.id for o in observables)
        for st in stmts:
            scope = Scope("estimate", observables=names, estimates=dict(out), vectors=self.vectors())
            if st.index is not None:
                self.fresh_index(st.index.name, scope)
                rng = self.estimate_range(st, scope)
                self.indices[f"estimate {st.name.id}"] = rng
                scope = scope.bind(rng.name, "integer")
            node = self.expr(st.expr, scope)
            if not contains_average(node):
                fail(st.expr.span, f"estimate '{st.name.id}' averages nothing",
                     "an estimate is built from ensemble averages such as <M^2>.")
            out[st.name.id] = node
        return tuple(out.items())

    def estimate_range(self, st: ast.Estimate, scope: Scope) -> C.IndexRange:
        """As declared, or the components of the vector observables it indexes with its argument."""
        if st.index.lo is not None:
            return self.declared_range(st.index)
        ranges = {(scope.vectors[name].lo, scope.vectors[name].hi)
                  for name, _ in indexed_observables(st.index.name.id, st.expr) if name in scope.vectors}
        if not ranges:
            fail(st.index.name.span, f"the range of '{st.index.name.id}' cannot be inferred: it indexes "
                 "no vector observable", f"give it: {st.name.id}({st.index.name.id} in 0..4).")
        if len(ranges) > 1:
            fail(st.index.name.span, f"'{st.index.name.id}' indexes vector observables of different lengths",
                 f"give its range: {st.name.id}({st.index.name.id} in 0..N-1).")
        lo, hi = ranges.pop()
        return C.IndexRange(st.index.name.id, lo, hi)

    def symmetry(self, st: ast.Symmetry) -> C.SymmetryDecl:
        maps, seen = [], set()
        for m in st.maps:
            idx = self.field_index(m.field)
            if self.fields[idx].kind == "link":
                fail(m.field.span, f"a symmetry of the link field '{m.field.id}' is not supported",
                     f"symmetries map site fields; 'gauge {m.field.id}' states the invariance of a link field.")
            if idx in seen:
                fail(m.field.span, f"field '{m.field.id}' is mapped twice in one symmetry")
            seen.add(idx)
            maps.append((idx, self.expr(m.expr, Scope("symmetry"))))
        text = ", ".join(f"{m.field.id} -> {show(m.expr)}" for m in st.maps)
        return C.SymmetryDecl(tuple(maps), text, st.span)

    def schedule(self, st: ast.Schedule) -> C.ScheduleDecl:
        local_values: dict = {}
        entries: dict = {}
        local_names: dict = {}
        for item in st.items:
            if isinstance(item, ast.Param):
                if item.name.id in ("x", "t") or item.name.id in RESERVED:
                    fail(item.name.span, f"'{item.name.id}' is reserved inside a schedule",
                         "x is the state and t the time.")
                if item.name.id in local_names:
                    fail(item.name.span, f"parameter '{item.name.id}' is declared twice in schedule '{st.name.id}'")
                q = f"{st.name.id}.{item.name.id}"
                local_values[item.name.id] = self.param_value(item.name, item.expr, q, local_values)
                self.local_param_values[q] = local_values[item.name.id]
                local_names[item.name.id] = q
            else:
                if item.key in entries:
                    fail(item.span, f"schedule '{st.name.id}' sets '{item.key}' twice")
                entries[item.key] = item
        for key in ("drift", "diffusion"):
            if key not in entries:
                fail(st.name.span, f"schedule '{st.name.id}' has no '{key}'",
                     "a schedule needs 'drift = ...' (linear in x, or 0) and 'diffusion = ...' (a function of t).")
        scope = Scope("schedule", variables=("x", "t"), locals=local_names)
        drift = self.expr(entries["drift"].expr, scope)
        diffusion = self.expr(entries["diffusion"].expr, scope)
        if uses_var(diffusion, "x"):
            fail(entries["diffusion"].expr.span, "the diffusion of a schedule must not depend on x",
                 "diffusion is g(t), a function of the time t only.")
        params = {local_names[k]: v for k, v in local_values.items()}
        return C.ScheduleDecl(st.name.id, params, drift, diffusion, st.span,
                              entries["drift"].expr.span, entries["diffusion"].expr.span)

    # -- expressions --
    def expr(self, e: ast.Expr, scope: Scope) -> C.Node:
        if isinstance(e, ast.Num):
            return C.Const(number(e.text), e.text)
        if isinstance(e, ast.Imag):
            return C.Const(complex(0.0, float(e.text)), e.text + "i")
        if isinstance(e, ast.Name):
            return self.name(e, scope)
        if isinstance(e, ast.Unary):
            return C.Neg(self.expr(e.operand, scope))
        if isinstance(e, ast.Binary):
            node = C.BinOp(e.op, self.expr(e.left, scope), self.expr(e.right, scope))
            self.check_constants(node, e)
            return node
        if isinstance(e, ast.Average):
            return self.average(e, scope)
        if isinstance(e, ast.Call):
            return self.call(e, scope)
        if isinstance(e, ast.RangeSum):
            return self.range_sum(e, scope)
        if isinstance(e, ast.PairSum):
            return self.pair_sum(e, scope)
        raise AssertionError(e)

    def pair_sum(self, e: ast.PairSum, scope: Scope) -> C.Node:
        f = e.func.id
        if f not in REDUCTIONS:
            fail(e.func.span, f"'{f}' cannot take a body [...]", "only sum(...)[...] and mean(...)[...] reduce.")
        if scope.where in ("schedule", "symmetry", "estimate", "average"):
            fail(e.span, f"{f}(mu < nu)[...] is not allowed in {WHERE[scope.where]}", HINT[scope.where])
        if len(self.lattice) < 2:
            fail(e.span, f"{f}({e.first.id} < {e.second.id})[...] needs two directions, and the lattice has "
                 f"{len(self.lattice)}", "pairs of directions exist from 2 dimensions on.")
        self.fresh_index(e.first, scope)
        self.fresh_index(e.second, scope)
        if e.first.id == e.second.id:
            fail(e.second.span, "the two directions of a pair need different names", "write sum(mu < nu)[ ... ].")
        inner = scope.bind(e.first.id, "direction").bind(e.second.id, "direction")
        return C.PairReduce(e.first.id, e.second.id, self.expr(e.body, inner), f == "mean")

    def range_sum(self, e: ast.RangeSum, scope: Scope) -> C.Node:
        f = e.func.id
        if f not in REDUCTIONS:
            fail(e.func.span, f"'{f}' cannot take a body [...]", "only sum(...)[...] and mean(...)[...] reduce.")
        if scope.where in ("schedule", "symmetry"):
            fail(e.span, f"{f}(... in ...)[...] is not allowed in {WHERE[scope.where]}", HINT[scope.where])
        self.fresh_index(e.index, scope)
        rng = self.declared_range(ast.IndexDecl(e.index, e.lo, e.hi, e.span))
        body = self.expr(e.body, scope.bind(e.index.id, "integer"))
        return C.RangeReduce(e.index.id, rng.lo, rng.hi, body, f == "mean")

    def check_constants(self, node: C.BinOp, e: ast.Binary):
        """Exponents that SymPy would expand for ever (2^2^2^2^2^2, s^1e30), constants that
        overflow double precision, division by a constant zero: refused here, where the place is
        known, instead of hanging or failing later in the compiler or the generated code."""
        right = self.constant(node.right)
        if e.op == "^" and right is not None and abs(right) > MAX_EXPONENT:
            fail(e.right.span, f"the exponent {right:.6g} is too large", f"exponents are at most "
                 f"{MAX_EXPONENT} in magnitude; write exp(y*log(x)) for a large real power.")
        if e.op == "/" and right == 0:
            fail(e.right.span, "division by zero", "the divisor is a constant equal to 0.")
        self.check_finite(node, e.span)

    def check_finite(self, node: C.Node, span: Span):
        try:
            value = self.constant(node)
        except (OverflowError, ZeroDivisionError, ValueError) as err:
            fail(span, cannot_evaluate(err), CONSTANT_HINT)
        if value is not None and not cmath.isfinite(value):
            fail(span, "this constant is outside the range of double precision", CONSTANT_HINT)

    def constant(self, node: C.Node):
        """The value of a constant node (literals, params, arithmetic and functions of them), or
        None when it depends on fields, observables or schedule variables. Memoized per node."""
        key = id(node)
        if key not in self.constants:
            self.constants[key] = (node, self.evaluate_constant(node))
        return self.constants[key][1]

    def evaluate_constant(self, node: C.Node):
        if isinstance(node, C.Const):
            return node.value
        if isinstance(node, C.ParamRef):
            return self.params.get(node.name, self.local_param_values.get(node.name))
        parts = [self.constant(c) for c in children(node)]
        if not isinstance(node, (C.Neg, C.BinOp, C.Apply)) or any(p is None for p in parts):
            return None
        if isinstance(node, C.Neg):
            return -parts[0]
        if isinstance(node, C.Apply):
            return apply_number(node.func, parts[0])
        return arithmetic(node.op, *parts)

    def name(self, e: ast.Name, scope: Scope) -> C.Node:
        n = e.id
        if n in scope.variables:
            return C.Var(n)
        if n in scope.locals:
            return C.ParamRef(scope.locals[n])
        if scope.bound.get(n) == "integer":
            return C.IndexVar(n)
        if n in scope.bound:
            fail(e.span, f"the {scope.bound[n]} index '{n}' is used as a value",
                 f"an index only labels a field's site: write e.g. phi({n})." if scope.bound[n] == "site"
                 else f"a direction only shifts a site: write e.g. phi(x + {n}).")
        if n in self.params:
            return C.ParamRef(n)
        if n == "pi":
            return C.Const(math.pi, "pi")
        if n == "volume":
            return C.Const(self.volume(), "volume")
        if n == "dim":
            return C.Const(len(self.lattice), "dim")
        what = self.names.get(n, (None,))[0]
        if what == "field":
            return self.bare_field(e, scope)
        if what == "definition":
            return self.expand(e, (), e.span, scope)
        if what == "link":
            fail(e.span, f"the link field '{n}' needs a site and a direction", f"write {n}(x, mu) or {n}(x, e0).")
        if what == "observable":
            return self.observable_ref(e, scope)
        if what == "estimate":
            if n in scope.estimates:
                return scope.estimates[n]
            fail(e.span, f"estimate '{n}' is used before it is declared" if scope.where == "estimate"
                 else f"estimate '{n}' can only be used in a later estimate")
        if n in FUNCTIONS or n in REDUCTIONS:
            fail(e.span, f"'{n}' is a function", f"call it: {n}(...).")
        if what == "schedule":
            fail(e.span, f"'{n}' is a schedule, not a value")
        if UNIT_VECTOR.match(n):
            fail(e.span, f"the unit vector '{n}' can only shift a site", f"write e.g. phi(x + {n}).")
        fail(e.span, f"unknown name '{n}'", self.suggest(n, scope))

    def suggest(self, n: str, scope: Scope) -> str:
        pool = list(self.params) + [f.name for f in self.fields] + list(CONSTANTS) + list(scope.bound)
        pool += list(scope.observables) + list(scope.variables) + list(scope.locals) + list(scope.estimates)
        hint = did_you_mean(n, pool)
        if hint:
            return hint
        if scope.where == "schedule" and n in {f.name for f in self.fields}:
            return "inside a schedule the state is called x."
        return "declare it with 'param', 'field' or 'observable' first."

    def volume(self) -> int:
        return math.prod(self.lattice) if self.lattice else 1

    def bare_field(self, e: ast.Name, scope: Scope) -> C.Node:
        idx = self.field_index(e)
        if scope.where == "schedule":
            fail(e.span, f"a schedule cannot use the field '{e.id}'", "inside a schedule the state is called x.")
        if scope.where in ("estimate", "average"):
            fail(e.span, f"a field cannot appear in {WHERE[scope.where]}", HINT[scope.where])
        if self.lattice and scope.where != "symmetry":
            fail(e.span, f"field '{e.id}' needs a site", f"write {e.id}(x) inside a sum(x)[...] or mean(x)[...].")
        return C.FieldAt(idx, None)

    def observable_ref(self, e: ast.Name, scope: Scope) -> C.Node:
        n = e.id
        if scope.where == "estimate":
            fail(e.span, f"observable '{n}' is measured per configuration; an estimate needs its average",
                 f"write <{n}>.")
        if scope.where in ("average", "observable") and n in scope.observables:
            if n in scope.vectors:
                fail(e.span, f"observable '{n}' is a vector; use one component", f"write {n}(0) or {n}(t).")
            return C.ObservableRef(n)
        if scope.where == "observable":
            fail(e.span, f"observable '{n}' is used before it is declared", "an observable may use earlier ones.")
        fail(e.span, f"observable '{n}' cannot be used in the {scope.where}",
             "observables are measured on configurations; the action and schedules cannot use them.")

    def field_index(self, name: ast.Name) -> int:
        """The number of a declared field (site or link) in declaration order."""
        for i, f in enumerate(self.fields):
            if f.name == name.id:
                return i
        fields = [f.name for f in self.fields]
        fail(name.span, f"unknown field '{name.id}'",
             did_you_mean(name.id, fields) or f"the fields are: {', '.join(fields) or 'none yet'}.")

    def average(self, e: ast.Average, scope: Scope) -> C.Node:
        if scope.where != "estimate":
            fail(e.span, "an average <...> can only appear in an estimate",
                 "observables and the action are per configuration.")
        integers = {k: v for k, v in scope.bound.items() if v == "integer"}
        inner = self.expr(e.expr, Scope("average", observables=scope.observables, bound=integers,
                                        vectors=scope.vectors))
        return C.AverageOf(inner, show(e))

    def call(self, e: ast.Call, scope: Scope) -> C.Node:
        f = e.func.id
        if e.body is not None:
            return self.reduction(e, scope)
        if f in FUNCTIONS:
            if len(e.args) != 1:
                fail(e.span, f"{f}() takes exactly one argument, not {len(e.args)}",
                     f"write e.g. {f}(phi(x)); for a power use ^, as in x^2.")
            if f == "wrap" and scope.where in ("action", "symmetry", "schedule"):
                fail(e.span, f"wrap(...) jumps at pi, so it is not allowed in {WHERE.get(scope.where, 'the action')}",
                     "use it in observables and estimates; an action of angles is smooth and 2 pi-periodic, "
                     "e.g. cos(theta(x)).")
            node = C.Apply(f, self.expr(e.args[0], scope))
            self.check_finite(node, e.span)
            return node
        if f in REDUCTIONS:
            fail(e.span, f"{f}(...) needs a body in square brackets",
                 f"write {f}(x)[ ... ] over sites or {f}(mu)[ ... ] over directions.")
        if self.names.get(f, (None,))[0] == "field":
            return self.field_at(e, scope)
        if f == "pos":
            return self.coordinate(e, scope)
        if self.names.get(f, (None,))[0] == "definition":
            return self.expand(e.func, e.args, e.span, scope)
        if self.names.get(f, (None,))[0] == "link":
            return self.link_at(e, scope)
        if self.names.get(f, (None,))[0] == "observable":
            return self.component(e, scope)
        if f in self.params or f in CONSTANTS:
            fail(e.func.span, f"'{f}' is not a function", "use * to multiply.")
        fail(e.func.span, f"unknown function '{f}'",
             did_you_mean(f, list(FUNCTIONS) + [x.name for x in self.fields]) or
             f"the functions are {', '.join(FUNCTIONS)}.")

    def link_at(self, e: ast.Call, scope: Scope) -> C.Node:
        """A(x + nu, mu): the link from x + nu in the positive direction mu."""
        name = e.func.id
        if scope.where in ("schedule", "symmetry", "estimate", "average"):
            fail(e.span, f"a link field cannot appear in {WHERE[scope.where]}", HINT[scope.where])
        if len(e.args) != 2:
            fail(e.span, f"the link field '{name}' takes a site and a direction",
                 f"write {name}(x, mu), {name}(x + nu, mu) or {name}(x, e0).")
        site, shifts = self.site(e.args[0], scope, name)
        d = e.args[1]
        if isinstance(d, ast.Name) and UNIT_VECTOR.match(d.id):
            unit = self.shift(1, d, scope)
            return C.LinkAt(self.field_index(e.func), site, shifts, axis=unit.axis)
        if isinstance(d, ast.Name) and scope.bound.get(d.id) == "direction":
            return C.LinkAt(self.field_index(e.func), site, shifts, index=d.id)
        fail(d.span, f"the second argument of '{name}' is a positive direction",
             f"write {name}(x, mu) with mu bound by sum(mu)[...], or {name}(x, e0).")

    def coordinate(self, e: ast.Call, scope: Scope) -> C.Node:
        if scope.where != "observable":
            fail(e.span, "pos(...) can only appear in an observable",
                 "the action is translation invariant; site coordinates are for measuring.")
        if not self.lattice:
            fail(e.span, "a 0-dimensional theory has no sites", "pos(x, k) needs a lattice.")
        if len(e.args) != 2:
            fail(e.span, "pos takes a site and a direction number", "write pos(x, 0).")
        k = e.args[1]
        if not isinstance(k, ast.Num) or not k.text.isdigit() or int(k.text) >= len(self.lattice):
            fail(k.span, f"the direction of pos(x, k) is a number 0 .. {len(self.lattice) - 1}",
                 "write e.g. pos(x, 0).")
        site, shifts = self.site(e.args[0], scope, "pos")
        return C.Coordinate(site, shifts, int(k.text))

    def component(self, e: ast.Call, scope: Scope) -> C.Node:
        """C(t + 1): one component of a vector observable (indices wrap around)."""
        n = e.func.id
        if n not in scope.vectors:
            if n in scope.observables:
                fail(e.span, f"observable '{n}' is a scalar and takes no argument", f"write {n}.")
            return self.observable_ref(e.func, scope)     # says why it cannot be used here
        self.observable_ref(ast.Name(n, e.func.span), replace(scope, vectors={}))   # where it may stand
        if len(e.args) != 1:
            fail(e.span, f"observable '{n}' takes one index", f"write {n}(t) or {n}(0).")
        return C.ObservableRef(n, self.integer_expr(e.args[0], scope))

    def integer_expr(self, e: ast.Expr, scope: Scope) -> C.Node:
        """An index expression: integers, integer params and integer indices with + - *."""
        if isinstance(e, ast.Num) and e.text.isdigit():
            return C.Const(int(e.text), e.text)
        if isinstance(e, ast.Name):
            if scope.bound.get(e.id) == "integer":
                return C.IndexVar(e.id)
            if isinstance(self.params.get(e.id), int):
                return C.Const(self.params[e.id], e.id)
        if isinstance(e, ast.Unary):
            return C.Neg(self.integer_expr(e.operand, scope))
        if isinstance(e, ast.Binary) and e.op in "+-*":
            return C.BinOp(e.op, self.integer_expr(e.left, scope), self.integer_expr(e.right, scope))
        fail(e.span, "an index must be an integer expression",
             "use integers, integer params and integer indices with + - *, e.g. t + 1.")

    def reduction(self, e: ast.Call, scope: Scope) -> C.Node:
        f = e.func.id
        if f not in REDUCTIONS:
            fail(e.func.span, f"'{f}' cannot take a body [...]", "only sum(...)[...] and mean(...)[...] reduce.")
        if len(e.args) != 1 or not isinstance(e.args[0], ast.Name):
            fail(e.span, f"{f} takes one index name", f"write {f}(x)[ ... ] or {f}(mu)[ ... ].")
        idx = e.args[0]
        if scope.where in ("schedule", "symmetry", "estimate", "average"):
            fail(e.span, f"{f}(...)[...] is not allowed in {WHERE[scope.where]}", HINT[scope.where])
        if idx.id in self.names or idx.id in RESERVED or UNIT_VECTOR.match(idx.id) or idx.id in scope.bound:
            fail(idx.span, f"'{idx.id}' cannot be an index: it already names something",
                 "use a fresh name such as x, y, mu or nu.")
        kind = self.index_kind(idx, e.body)
        if not self.lattice:
            fail(e.span, f"a 0-dimensional theory has no sites or directions to {f} over",
                 "use the fields bare, e.g. 'x^2'.")
        body = self.expr(e.body, scope.bind(idx.id, kind))
        if not any(index_uses(idx.id, e.body, self.names, self.lets)) and \
                any(isinstance(n, (C.FieldAt, C.LinkAt)) for n in walk(body)):
            # Neither a site nor a direction: counting it as a site sum would silently re-sum the
            # fields of an enclosing site over the lattice.
            fail(idx.span, f"the index '{idx.id}' of {f}({idx.id})[...] is never used in its body",
                 f"use it as a site, {f}({idx.id})[ phi({idx.id}) ], or as a direction, "
                 f"phi(x + {idx.id}); or remove the {f}.")
        if kind == "site":
            return C.SiteReduce(idx.id, body, f == "mean")
        return C.DirectionReduce(idx.id, body, f == "mean")

    def index_kind(self, idx: ast.Name, body: ast.Expr) -> str:
        uses: dict[str, Span] = {}
        for kind, span in index_uses(idx.id, body, self.names, self.lets):
            uses.setdefault(kind, span)
        if "site" in uses and "direction" in uses:
            fail(uses["direction"], f"'{idx.id}' is used both as a site and as a direction",
                 f"it is a site at line {uses['site'].line}, column {uses['site'].column}; "
                 "use one name for the site (x) and another for the direction (mu).")
        return "direction" if "direction" in uses else "site"

    def field_at(self, e: ast.Call, scope: Scope) -> C.Node:
        fidx = self.field_index(e.func)
        name = e.func.id
        if not self.lattice:
            fail(e.span, "in a 0-dimensional theory a field has no site", f"use it bare: {name}.")
        if scope.where in ("schedule", "symmetry", "estimate", "average"):
            fail(e.span, f"a field at a site cannot appear in {WHERE[scope.where]}", HINT[scope.where])
        if len(e.args) != 1:
            fail(e.span, f"field '{name}' takes one site", f"write {name}(x) or {name}(x + mu).")
        site, shifts = self.site(e.args[0], scope, name)
        return C.FieldAt(fidx, site, shifts)

    def site(self, arg: ast.Expr, scope: Scope, name: str) -> tuple[str, tuple]:
        """x + mu - 2*e0 + t*e1 -> ('x', shifts)."""
        terms = additive_terms(arg)
        sign, first = terms[0]
        if not isinstance(first, ast.Name) or sign != 1 or scope.bound.get(first.id) != "site":
            where = first.span if hasattr(first, "span") else arg.span
            if isinstance(first, ast.Name) and first.id not in scope.bound and not UNIT_VECTOR.match(first.id) \
                    and first.id not in self.names:
                fail(where, f"unbound index '{first.id}'",
                     f"bind it with a sum or mean over sites: sum({first.id})[ ... ].")
            fail(where, f"the site of '{name}' must start with a site index",
                 f"write {name}(x), {name}(x + mu) or {name}(x - e0), with x bound by sum(x)[...].")
        shifts = tuple(self.shift(sign, t, scope) for sign, t in terms[1:])
        return first.id, shifts

    def scaled_shift(self, sign: int, factor: ast.Expr, direction: ast.Name, scope: Scope) -> C.Shift:
        """t*e0, (t + 1)*mu: a direction times an integer expression of indices."""
        unit = self.shift(sign, direction, scope)
        coef = self.integer_expr(factor, scope)
        return C.Shift(coef if sign > 0 else C.Neg(coef), unit.index, unit.axis)

    def shift(self, sign: int, term: ast.Expr, scope: Scope) -> C.Shift:
        coef, base = 1, term
        if isinstance(term, ast.Binary) and term.op == "*":
            l, r = term.left, term.right
            if isinstance(l, ast.Num) and isinstance(r, ast.Name):
                coef, base = l, r
            elif isinstance(r, ast.Num) and isinstance(l, ast.Name):
                coef, base = r, l
            elif is_direction(r, scope):
                return self.scaled_shift(sign, l, r, scope)
            elif is_direction(l, scope):
                return self.scaled_shift(sign, r, l, scope)
            else:
                fail(term.span, "a shift is an integer times a direction", "write e.g. x + 2*mu.")
            if not coef.text.isdigit():
                fail(coef.span, f"a shift must be an integer multiple of a direction, not {coef.text}",
                     "sites are whole steps apart: write e.g. x + 2*mu or x - e0.")
            coef = int(coef.text)
            if coef > max(self.lattice, default=1):
                fail(term.span, f"a shift of {coef} steps goes beyond the lattice (largest extent "
                     f"{max(self.lattice, default=1)})", "shifts wrap around: write the shift modulo the extent.")
        if not isinstance(base, ast.Name):
            fail(term.span, "a site may only be shifted by directions",
                 "write e.g. x + mu, x - mu, x + mu + nu, x + 2*mu or x + e0.")
        m = UNIT_VECTOR.match(base.id)
        if m:
            axis = int(m.group(1))
            if axis >= len(self.lattice):
                fail(base.span, f"there is no direction {base.id} on a {len(self.lattice)}-dimensional lattice",
                     f"the unit vectors are e0 to e{len(self.lattice) - 1}.")
            return C.Shift(sign * coef, axis=axis)
        kind = scope.bound.get(base.id)
        if kind == "direction":
            return C.Shift(sign * coef, index=base.id)
        if kind == "site":
            fail(base.span, f"'{base.id}' is a site, so it cannot shift another site",
                 "shift by directions: x + mu.")
        fail(base.span, f"unbound index '{base.id}'",
             did_you_mean(base.id, list(scope.bound)) or f"bind it with sum({base.id})[ ... ] over directions.")


def additive_terms(e: ast.Expr) -> list[tuple[int, ast.Expr]]:
    """x + mu - 2*nu -> [(1, x), (1, mu), (-1, 2*nu)]."""
    if isinstance(e, ast.Binary) and e.op in "+-":
        right_sign = 1 if e.op == "+" else -1
        return additive_terms(e.left) + [(s * right_sign, t) for s, t in additive_terms(e.right)]
    if isinstance(e, ast.Unary):
        return [(-s, t) for s, t in additive_terms(e.operand)]
    return [(1, e)]


def index_uses(name: str, e: ast.Expr, names: dict, lets: dict | None = None):
    """Yield ('site'|'direction', span) for each use of index `name` in a field's site (or a
    link's direction, or the site of pos), looking through definitions."""
    lets = lets or {}
    if isinstance(e, ast.Call):
        what = names.get(e.func.id, (None,))[0]
        if e.body is not None:
            if not (e.args and isinstance(e.args[0], ast.Name) and e.args[0].id == name):
                yield from index_uses(name, e.body, names, lets)
            return
        if what == "definition" and e.func.id in lets and len(e.args) == len(lets[e.func.id].args):
            let = lets[e.func.id]
            yield from index_uses(name, substitute(let.expr, {a.id: v for a, v in zip(let.args, e.args)}),
                                  names, lets)
            return
        if what == "link" and len(e.args) == 2:
            if isinstance(e.args[1], ast.Name) and e.args[1].id == name:
                yield "direction", e.args[1].span
        if (what in ("field", "link") or e.func.id == "pos") and e.args:
            terms = additive_terms(e.args[0])
            for pos, (_, t) in enumerate(terms):
                base = t
                if isinstance(t, ast.Binary) and t.op == "*":
                    base = t.right if isinstance(t.right, ast.Name) else t.left
                if isinstance(base, ast.Name) and base.id == name:
                    yield ("site" if pos == 0 else "direction"), base.span
            return
        for a in e.args:
            yield from index_uses(name, a, names, lets)
    elif isinstance(e, ast.Name) and names.get(e.id, (None,))[0] == "definition" and e.id in lets:
        yield from index_uses(name, lets[e.id].expr, names, lets)
    elif isinstance(e, ast.Binary):
        yield from index_uses(name, e.left, names, lets)
        yield from index_uses(name, e.right, names, lets)
    elif isinstance(e, (ast.Unary, ast.Average)):
        yield from index_uses(name, e.operand if isinstance(e, ast.Unary) else e.expr, names, lets)
    elif isinstance(e, ast.RangeSum) and e.index.id != name:
        yield from index_uses(name, e.body, names, lets)
    elif isinstance(e, ast.PairSum) and name not in (e.first.id, e.second.id):
        yield from index_uses(name, e.body, names, lets)


def is_direction(e: ast.Expr, scope: Scope) -> bool:
    return isinstance(e, ast.Name) and (UNIT_VECTOR.match(e.id) is not None or scope.bound.get(e.id) == "direction")


def integer_extents(name: str, e: ast.Expr, lattice: tuple[int, ...]):
    """The extents of the directions that `name` multiplies in the shifts of e (t*e0 -> N_0;
    t*mu -> every extent)."""
    for node in ast_walk(e):
        if isinstance(node, ast.Binary) and node.op == "*":
            for factor, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(other, ast.Name) and any(isinstance(n, ast.Name) and n.id == name
                                                       for n in ast_walk(factor)):
                    m = UNIT_VECTOR.match(other.id)
                    if m and int(m.group(1)) < len(lattice):
                        yield lattice[int(m.group(1))]
                    elif not m and other.id != name and not other.id[:1].isdigit():
                        yield from (lattice if is_index_name(other.id, e) else ())


def is_index_name(name: str, e: ast.Expr) -> bool:
    """Is `name` bound as an index by a reduction inside e (a direction, for t*mu)?"""
    return any(isinstance(n, ast.Call) and n.body is not None and n.args and isinstance(n.args[0], ast.Name)
               and n.args[0].id == name for n in ast_walk(e))


def indexed_observables(name: str, e: ast.Expr):
    """(observable, index expression) for each C(...) in e whose index uses `name`."""
    for node in ast_walk(e):
        if isinstance(node, ast.Call) and node.body is None and len(node.args) == 1 and \
                any(isinstance(n, ast.Name) and n.id == name for n in ast_walk(node.args[0])):
            yield node.func.id, node.args[0]


def ast_walk(e):
    """Every node of a syntax-tree expression (iterative: expressions may nest 100 deep)."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.Call):
            stack.extend(node.args)
            if node.body is not None:
                stack.append(node.body)
        elif isinstance(node, ast.Binary):
            stack.extend((node.left, node.right))
        elif isinstance(node, ast.Unary):
            stack.append(node.operand)
        elif isinstance(node, ast.Average):
            stack.append(node.expr)
        elif isinstance(node, ast.RangeSum):
            stack.extend((node.lo, node.hi, node.body))
        elif isinstance(node, ast.PairSum):
            stack.append(node.body)


def bound_names(e) -> set[str]:
    """The index names that reductions inside e bind."""
    out = set()
    for node in ast_walk(e):
        if isinstance(node, ast.Call) and node.body is not None and node.args and isinstance(node.args[0], ast.Name):
            out.add(node.args[0].id)
        elif isinstance(node, ast.RangeSum):
            out.add(node.index.id)
        elif isinstance(node, ast.PairSum):
            out |= {node.first.id, node.second.id}
    return out


def substitute(e, mapping: dict):
    """The expression with names replaced by expressions (the arguments of a definition). Names
    bound inside (sum(x)[...]) are left alone; the caller has refused capture."""
    if isinstance(e, ast.Name):
        return mapping.get(e.id, e)
    if isinstance(e, ast.Call):
        inner = mapping
        if e.body is not None and e.args and isinstance(e.args[0], ast.Name):
            inner = {k: v for k, v in mapping.items() if k != e.args[0].id}
        args = tuple(substitute(a, mapping) for a in e.args) if e.body is None else e.args
        body = substitute(e.body, inner) if e.body is not None else None
        return replace(e, args=args, body=body)
    if isinstance(e, ast.Binary):
        return replace(e, left=substitute(e.left, mapping), right=substitute(e.right, mapping))
    if isinstance(e, ast.Unary):
        return replace(e, operand=substitute(e.operand, mapping))
    if isinstance(e, ast.Average):
        return replace(e, expr=substitute(e.expr, mapping))
    if isinstance(e, ast.RangeSum):
        inner = {k: v for k, v in mapping.items() if k != e.index.id}
        return replace(e, lo=substitute(e.lo, mapping), hi=substitute(e.hi, mapping), body=substitute(e.body, inner))
    if isinstance(e, ast.PairSum):
        inner = {k: v for k, v in mapping.items() if k not in (e.first.id, e.second.id)}
        return replace(e, body=substitute(e.body, inner))
    return e


def ast_size_depth(e) -> tuple[int, int]:
    size, depth, stack = 0, 0, [(e, 1)]
    while stack:
        node, d = stack.pop()
        size, depth = size + 1, max(depth, d)
        children = []
        if isinstance(node, ast.Call):
            children = list(node.args) + ([node.body] if node.body is not None else [])
        elif isinstance(node, ast.Binary):
            children = [node.left, node.right]
        elif isinstance(node, ast.Unary):
            children = [node.operand]
        elif isinstance(node, ast.Average):
            children = [node.expr]
        elif isinstance(node, (ast.RangeSum, ast.PairSum)):
            children = [node.body]
        stack.extend((c, d + 1) for c in children)
    return size, depth


def contains_average(n: C.Node) -> bool:
    return any(isinstance(x, C.AverageOf) for x in walk(n))


def uses_var(n: C.Node, var: str) -> bool:
    return any(isinstance(x, C.Var) and x.name == var for x in walk(n))


def walk(n: C.Node):
    yield n
    for child in children(n):
        yield from walk(child)


def children(n: C.Node):
    if isinstance(n, (C.SiteReduce, C.DirectionReduce, C.RangeReduce, C.PairReduce)):
        return (n.body,)
    if isinstance(n, C.ObservableRef) and n.index is not None:
        return (n.index,)
    if isinstance(n, C.Apply):
        return (n.arg,)
    if isinstance(n, C.BinOp):
        return (n.left, n.right)
    if isinstance(n, C.Neg):
        return (n.operand,)
    if isinstance(n, C.AverageOf):
        return (n.expr,)
    return ()


def check(module: ast.Module, source: str, overrides: dict[str, ast.Expr] | None = None) -> C.CheckedTheory:
    return Checker(module, source, overrides).run()
