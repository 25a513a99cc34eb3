"""Print a TheoryIR as one plain, readable, deterministic Python module of torch functions.

Functions act on a batch `cfg` of shape (batch, n_fields, *lattice). A field at a shifted site is
one `torch.roll` of the field, made once per function; site sums keep the site dimensions (size 1)
so that per-configuration values broadcast against lattice tensors; common subexpressions are
eliminated by SymPy's `cse` per stage.
"""
from __future__ import annotations

import builtins
import keyword

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .. import __version__
from ..dsl.errors import TheoryError
from .fused import fused_steps
from .ir import TheoryIR, channel_kinds, channel_labels
from .lower import DERIVED, Lowered, to_sympy, unwrapped

AXIS_LETTERS = "xyzw"
MODULE_NAMES = {"torch", "math", "fill", "flip_delta", "FLIP_OFFSETS", "coordinate", "OBSERVABLE_INDICES",
                "ESTIMATE_VECTORS", "wrap", "CHANNELS", "CHANNEL_KINDS", "GAUGE", "DATA_ONLY", "QUADRATIC_STENCIL", "per_config", "real", "imag", "conj", "Tabulated", "cfg",
                "SITES", "action", "force", "drift", "observables", "estimate_inputs", "obs", "a",
                "NAME", "LATTICE", "FIELDS", "FIELD_KINDS", "IS_COMPLEX", "PARAMS", "OBSERVABLES",
                "ESTIMATES", "SYMMETRIES", "SCHEDULES", "t", "drift_kick", "langevin_step"}
TORCH_FUNCTIONS = {"exp": "torch.exp", "log": "torch.log", "sin": "torch.sin", "cos": "torch.cos",
                   "tan": "torch.tan", "sinh": "torch.sinh", "cosh": "torch.cosh", "tanh": "torch.tanh",
                   "re": "real", "im": "imag", "conjugate": "conj", "Wrap": "wrap"}


class Namer:
    """Python identifiers for symbols: the user's names where they are safe, never a clash."""

    def __init__(self):
        self.taken = set(MODULE_NAMES) | set(keyword.kwlist) | set(dir(builtins))
        self.names: dict[sp.Symbol, str] = {}

    def name(self, sym: sp.Symbol, wanted: str) -> str:
        if sym not in self.names:
            self.names[sym] = self.claim(wanted)
        return self.names[sym]

    def function(self, wanted: str) -> str:
        """A module-level function name that no parameter, variable or other function has: an
        estimate called 'inputs' must not replace estimate_inputs, a parameter called
        'estimate_chi' must not be replaced by a function."""
        return self.claim(wanted)

    def claim(self, wanted: str) -> str:
        """A fresh identifier close to `wanted`. Names of the file are identifiers by the grammar;
        the ones Python gives a meaning (keywords, builtins, dunders such as __builtins__ or a
        module's __getattr__) and the module's own names get a suffix or prefix."""
        if not wanted.isidentifier():
            raise ValueError(f"not an identifier: {wanted!r}")
        ident = "u" + wanted if wanted.startswith("__") else wanted
        while ident in self.taken or keyword.iskeyword(ident) or keyword.issoftkeyword(ident):
            ident += "_"
        self.taken.add(ident)
        return ident

    def fresh(self, prefix: str):
        i = 0
        while True:
            ident = f"{prefix}{i}"
            i += 1
            if ident not in self.taken:
                yield sp.Symbol(ident)


class TorchPrinter(PythonCodePrinter):
    def __init__(self, names: dict):
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.names = names

    def _print_Symbol(self, expr):
        return self.names.get(expr, expr.name)

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name in TORCH_FUNCTIONS:
            return f"{TORCH_FUNCTIONS[name]}({self._print(expr.args[0])})"
        return super()._print_Function(expr)

    _print_exp = _print_log = _print_sin = _print_cos = _print_tan = _print_Function
    _print_sinh = _print_cosh = _print_tanh = _print_re = _print_im = _print_conjugate = _print_Function
    _print_Wrap = _print_Function

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"torch.sign({self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp == sp.Rational(1, 2):
            return f"torch.sqrt({self._print(base)})"
        if exp == -sp.Rational(1, 2):
            return f"1/torch.sqrt({self._print(base)})"
        if exp == -1:
            return f"1/{self.parenthesize(base, sp.printing.precedence.PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)

    def _print_Rational(self, expr):
        return repr(float(expr)) if expr.q != 1 else str(expr.p)

    def _print_Half(self, expr):
        return "0.5"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_ImaginaryUnit(self, expr):
        return "1j"

    def _print_Integer(self, expr):
        return number(int(expr.p))

    def _print_NumberSymbol(self, expr):          # pi, E (exp(1)), EulerGamma, ...
        return repr(float(expr))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_GoldenRatio = _print_Catalan = _print_NumberSymbol

    def emptyPrinter(self, expr):
        raise TheoryError(None, f"the compiler cannot print {type(expr).__name__} as torch code",
                          "this is a bug in theoryc; please report the theory that caused it.",
                          kind="Error")

    _print_Infinity = _print_NegativeInfinity = _print_ComplexInfinity = _print_NaN = emptyPrinter


# Integers beyond float64's exact range are printed as floats: torch cannot hold a Python int
# that large, and every field is floating point anyway.
EXACT_INTEGER = 2 ** 53


def number(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > EXACT_INTEGER:
        return repr(float(value))
    return repr(value)


class ModuleWriter:
    def __init__(self, ir: TheoryIR):
        self.ir, self.th = ir, ir.theory
        self.namer = Namer()
        self.printer = TorchPrinter(self.namer.names)
        self.param_numbers = {sym: to_sympy(self.value(name)) for name, sym in ir.symbols.params.items()}
        for name, sym in sorted(ir.symbols.params.items()):
            self.namer.name(sym, name.replace(".", "_"))
        self.sites = tuple(range(1, self.th.dim + 1))
        self.rolls: set[str] = set()     # names bound to a torch.roll, candidates for inlining

    def value(self, name):
        if name in self.th.params:
            return self.th.params[name]
        for s in self.th.schedules:
            if name in s.params:
                return s.params[name]
        raise KeyError(name)

    # -- printing helpers --
    def fold(self, expr: sp.Expr) -> sp.Expr:
        """Functions of parameters alone are evaluated now: generated code calls torch functions
        only on tensors."""
        params = set(self.param_numbers)
        repl = {}
        for node in sp.preorder_traversal(expr):
            if isinstance(node, (sp.Function, sp.Pow)) and node.free_symbols <= params \
                    and not (isinstance(node, sp.Pow) and node.exp.is_Integer):
                value = complex(unwrapped(node.xreplace(self.param_numbers)).evalf(17))
                repl[node] = sp.Float(value.real, 17) if value.imag == 0 else \
                    sp.Float(value.real, 17) + sp.I * sp.Float(value.imag, 17)
        return expr.xreplace(repl) if repl else expr

    def code(self, expr: sp.Expr) -> str:
        return self.printer.doprint(expr)

    def cse_lines(self, exprs: list[sp.Expr], temps) -> tuple[list[str], list[sp.Expr]]:
        exprs = [group_by_coefficient(self.fold(e), set(self.param_numbers)) for e in exprs]
        replacements, reduced = sp.cse(exprs, symbols=temps, order="canonical")
        lines = []
        for sym, sub in replacements:
            self.namer.name(sym, sym.name)
            lines.append(f"{self.namer.names[sym]} = {self.code(sub)}")
        return lines, reduced

    def field_lines(self, exprs: list[sp.Expr]) -> list[str]:
        """Views of the fields, coordinates and derived fields, and one roll per distinct shift
        the expressions use."""
        symbols = self.ir.symbols
        keys = self.keys_used(exprs)
        lines = []
        plain = sorted({k for k in keys if k.field < DERIVED}, key=lambda k: (k.field, k.shift))
        lines += self.base_and_rolls(plain)
        for f in sorted({k.field for k in keys if k.field >= DERIVED}):
            axis, density = symbols.derived[f - DERIVED]
            name = self.namer.name(symbols.at(f, (0,) * self.th.dim), identifier(symbols.label(f)))
            lines.append(f"{name} = ({self.code(density)}).sum({axis + 1}, keepdim=True)")
            lines += self.base_and_rolls(sorted((k for k in keys if k.field == f), key=lambda k: k.shift),
                                         with_base=False)
        return lines

    def keys_used(self, exprs: list[sp.Expr]) -> set:
        """The field symbols of the expressions and, for derived fields, of their densities."""
        symbols, keys = self.ir.symbols, set()
        todo = [s for e in exprs for s in e.free_symbols if symbols.is_field(s)]
        while todo:
            k = symbols.meaning[todo.pop()]
            if k in keys:
                continue
            keys.add(k)
            keys.add(type(k)(k.field, (0,) * self.th.dim))          # its base is needed for a roll
            if k.field >= DERIVED:
                todo += [s for s in symbols.derived[k.field - DERIVED][1].free_symbols if symbols.is_field(s)]
        return keys

    def base_and_rolls(self, keys: list, with_base: bool = True) -> list[str]:
        symbols, lines, base = self.ir.symbols, [], {}
        origin = (0,) * self.th.dim
        for f in sorted({k.field for k in keys}):
            base[f] = self.namer.name(symbols.at(f, origin), identifier(symbols.label(f)))
            if with_base:
                # a coordinate pos(x, k) is a tensor of integers along axis k, broadcast elsewhere
                lines.append(f"{base[f]} = cfg[:, {f}]" if f >= 0 else f"{base[f]} = coordinate(cfg, {-1 - f})")
        for k in keys:
            if k.shift == origin:
                continue
            sym = symbols.at(k.field, k.shift)
            ident = self.namer.name(sym, shifted_name(identifier(symbols.label(k.field)), k.shift))
            active = [(-s, a + 1) for a, s in enumerate(k.shift) if s]
            shifts = tuple(s for s, _ in active)
            dims = tuple(d for _, d in active)
            if len(active) == 1:
                lines.append(f"{ident} = torch.roll({base[k.field]}, {shifts[0]}, {dims[0]})")
            else:
                lines.append(f"{ident} = torch.roll({base[k.field]}, {shifts}, {dims})")
            self.rolls.add(ident)
        return lines

    def reduction_lines(self, low: Lowered, temps) -> tuple[list[str], sp.Expr]:
        """Site sums first (kept dims), then the per-configuration expression."""
        lines, dens = self.cse_lines([r.density for r in low.reductions], temps)
        for r, d in zip(low.reductions, dens):
            ident = self.namer.name(r.symbol, r.symbol.name)
            lines.append(f"{ident} = ({self.code(d)}).sum(SITES, keepdim=True)")
        return lines, low.expr

    # -- the module --
    def module(self) -> str:
        parts = [self.header(), self.action(), self.force(), self.drift(), self.flips(), self.quadratic(),
                 self.observables(), self.estimates(), self.symmetries(), self.schedules(),
                 fused_steps(self)]          # last: see compiler/fused.py
        return "\n\n".join(p for p in parts if p).rstrip() + "\n"

    def header(self) -> str:
        th = self.th
        params = {k: v for k, v in th.params.items()}
        doc = (f"Generated by theoryc {__version__} from theory {th.name!r}. Do not edit: "
               f"regenerate with `theoryc compile {th.name} --emit python`.")
        lines = [
            repr(doc),
            "import torch",
            "",
            "from theoryc.compiler.support import Tabulated, conj, coordinate, fill, imag, per_config, real, wrap",
            "",
            f"NAME = {th.name!r}",
            f"LATTICE = {tuple(th.lattice)!r}",
            f"FIELDS = {tuple(f.name for f in th.fields)!r}",
            f"FIELD_KINDS = {tuple(f.kind for f in th.fields)!r}",
            f"CHANNELS = {channel_labels(th)!r}  # the components of a configuration",
            f"CHANNEL_KINDS = {channel_kinds(th)!r}",
            *([f"GAUGE = {tuple(th.gauge)!r}"] if th.gauge else []),
            *(["DATA_ONLY = True  # no action: a data set's shape and schedules"] if th.data_only else []),
            f"IS_COMPLEX = {self.ir.is_complex!r}",
            f"PARAMS = {{{', '.join(f'{k!r}: {number(v)}' for k, v in params.items())}}}",
            f"OBSERVABLES = {tuple(self.observable_names())!r}",
            *([f"OBSERVABLE_INDICES = {self.observable_indices()!r}"] if self.ir.components else []),
            f"SITES = {self.sites!r}  # dimensions of cfg[:, f] that are lattice sites",
            "",
        ]
        for name, sym in sorted(self.ir.symbols.params.items()):
            lines.append(f"{self.namer.names[sym]} = {number(self.value(name))}")
        return "\n".join(lines)

    def observable_indices(self) -> dict:
        """Vector observable -> (first, last) value of its index."""
        return {f"{k.split(' ', 1)[1]}": (r.lo, r.hi) for k, r in self.th.indices.items()
                if k.startswith("observable ")}

    def function(self, signature: str, doc: str, body: list[str]) -> str:
        body = inline_single_use(body, self.rolls)
        # Every text of the file reaches the module only as a literal printed by repr.
        return "\n".join([f"def {signature}:", f"    {doc!r}"] + [f"    {l}" for l in body])

    def action(self) -> str:
        temps = self.namer.fresh("tmp")
        low = self.ir.action
        body = self.field_lines([r.density for r in low.reductions] + [low.expr])
        lines, expr = self.reduction_lines(low, temps)
        more, (result,) = self.cse_lines([expr], temps)
        body += lines + more + [f"return per_config({self.code(result)}, cfg)"]
        return self.function("action(cfg)", "The action S, shape (batch,).", body)

    def force(self) -> str:
        temps = self.namer.fresh("tmp")
        force = self.ir.force
        low = self.ir.action
        needs_sums = bool(force.factors)
        exprs = list(force.fields)
        body = self.field_lines(exprs + ([r.density for r in low.reductions] if needs_sums else []))
        if needs_sums:
            lines, _ = self.reduction_lines(low, temps)
            body += lines
            flines, fexprs = self.cse_lines([e for _, e in force.factors], temps)
            body += flines
            for (sym, _), e in zip(force.factors, fexprs):
                body.append(f"{self.namer.name(sym, sym.name)} = {self.code(e)}")
        return self.function("force(cfg)", "dS/dphi at every site, shape of cfg.",
                             body + self.per_site_lines(exprs, temps))

    def per_site_lines(self, exprs: list[sp.Expr], temps) -> list[str]:
        """Lines that return one lattice expression per field, stacked into the shape of cfg."""
        lines, results = self.cse_lines(exprs, temps)
        # every field has the lattice's shape, so field 0 shows the shape of each field's result
        parts = [f"fill({self.code(r)}, cfg[:, 0])" for r in results]
        if len(parts) == 1:
            return lines + [f"return {parts[0]}.unsqueeze(1)"]
        return lines + [f"return torch.stack([{', '.join(parts)}], 1)"]

    def flips(self) -> str:
        """Single-spin-flip changes of the action, for local Metropolis (spin theories only)."""
        flips = self.ir.flips
        if flips is None:
            return ""
        body = self.field_lines(list(flips.fields))
        body += self.per_site_lines(list(flips.fields), self.namer.fresh("tmp"))
        doc = "S(s with the spin at (field, site) flipped alone) - S(s), shape of cfg."
        return "\n\n".join([self.function("flip_delta(cfg)", doc, body),
                             f"FLIP_OFFSETS = {flips.offsets!r}"])

    def quadratic(self) -> str:
        """The stencil of the action's quadratic part per field, for Fourier acceleration."""
        q = self.ir.quadratic
        if q is None:
            return ""
        fields = []
        for stencil in q.stencils:
            terms = ", ".join(f"({d!r}, {self.code(self.fold(c))})" for d, c in stencil)
            fields.append(f"({terms},)" if stencil else "()")
        return ("# S_2 = 1/2 sum_xy phi(x) H(y - x) phi(y): (offset, H) per field\n"
                f"QUADRATIC_STENCIL = ({', '.join(fields)},)")

    def drift(self) -> str:
        doc = ("-dS/dz: holomorphic for a complex action, to evaluate on complexified fields."
               if self.ir.is_complex else "-dS/dphi, the Langevin drift.")
        return self.function("drift(cfg)", doc, ["return -force(cfg)"])

    def observables(self) -> str:
        temps = self.namer.fresh("tmp")
        lows = [low for _, _, low in self.ir.observables]
        body = self.field_lines([e for low in lows for e in [low.expr] + [r.density for r in low.reductions]])
        for name, sym, low in self.ir.observables:
            lines, expr = self.reduction_lines(low, temps)
            more, (result,) = self.cse_lines([expr], temps)
            body += lines + more + [f"{self.namer.name(sym, identifier(name))} = {self.code(result)}"]
        items = []
        for name in self.observable_names():
            parts = [s for s, (n, _) in self.ir.components.items() if n == name]
            if parts:                     # a vector observable: (batch, components)
                stacked = ", ".join(f"per_config({self.namer.names[s]}, cfg)" for s in parts)
                items.append(f"{name!r}: torch.stack([{stacked}], 1)")
            else:
                sym = next(s for n, s, _ in self.ir.observables if n == name)
                items.append(f"{name!r}: per_config({self.namer.names[sym]}, cfg)")
        body.append(f"return {{{', '.join(items)}}}")
        return self.function("observables(cfg)", "Every observable, name -> shape (batch,) or, for a "
                             "vector observable, (batch, components).", body)

    def observable_names(self) -> list[str]:
        names = [self.ir.components[s][0] if s in self.ir.components else n for n, s, _ in self.ir.observables]
        return list(dict.fromkeys(names))

    def estimates(self) -> str:
        if not self.ir.averages:
            return "def estimate_inputs(obs):\n    return {}\n\n\nESTIMATES = {}"
        temps = self.namer.fresh("tmp")
        body = []
        for name, sym, _ in self.ir.observables:
            if any(sym in low.expr.free_symbols for _, _, low in self.ir.averages):
                if sym in self.ir.components:
                    vector, position = self.ir.components[sym]
                    body.append(f"{self.namer.names[sym]} = obs[{vector!r}][:, {position}]")
                else:
                    body.append(f"{self.namer.names[sym]} = obs[{name!r}]")
        lines, results = self.cse_lines([low.expr for _, _, low in self.ir.averages], temps)
        body += lines
        items = ", ".join(f"{key!r}: {self.code(r)}" for (key, _, _), r in zip(self.ir.averages, results))
        body.append(f"return {{{items}}}")
        out = [self.function("estimate_inputs(obs)",
                             "Per-configuration quantities whose averages the estimates use.", body)]
        table = []
        for name, expr in self.ir.estimates:
            used = [(key, sym) for key, sym, _ in self.ir.averages if sym in expr.free_symbols]
            fn = self.namer.function(f"estimate_{identifier(name)}")
            args = [f"{self.namer.name(sym, sym.name)} = a[{i}]" for i, (key, sym) in enumerate(used)]
            lines, (result,) = self.cse_lines([expr], self.namer.fresh("tmp"))
            out.append(self.function(f"{fn}(a)", f"{name} from the averages {', '.join(k for k, _ in used)}.",
                                     args + lines + [f"return {self.code(result)}"]))
            table.append(f"    {name!r}: ({tuple(k for k, _ in used)!r}, {fn}),")
        out.append("ESTIMATES = {\n" + "\n".join(table) + "\n}")
        if self.ir.estimate_vectors:
            out.append(f"ESTIMATE_VECTORS = {dict((k, tuple(v)) for k, v in self.ir.estimate_vectors.items())!r}")
        return "\n\n\n".join(out)

    def symmetries(self) -> str:
        out, names = [], []
        for i, s in enumerate(self.ir.symmetries):
            if not s.exact_move:
                continue
            body = self.field_lines(list(s.images))
            lines, results = self.cse_lines(list(s.images), self.namer.fresh("tmp"))
            parts = [f"fill({self.code(r)}, cfg[:, 0])" for r in results]
            body += lines + [f"return torch.stack([{', '.join(parts)}], 1)"]
            fn = self.namer.function(f"symmetry_{i}")
            out.append(self.function(f"{fn}(cfg)", f"The global symmetry {s.text}.", body))
            names.append(fn)
        out.append(f"SYMMETRIES = ({''.join(n + ', ' for n in names)})")
        return "\n\n\n".join(out)

    def schedules(self) -> str:
        out, table = [], []
        for k in self.ir.schedules:
            prefix = f"schedule_{k.name}"
            fns = {}
            for part, expr in (("k", k.k), ("g", k.g), ("f", k.f), ("xi", k.xi)):
                if expr is None:
                    continue
                fns[part] = self.namer.function(f"{prefix}_{part}")
                out.append(self.function(f"{fns[part]}(t)", f"{part}(t) of schedule {k.name}.",
                                         [f"t = torch.as_tensor(t)",
                                          f"return {self.code(self.fold(expr))} + torch.zeros_like(t)"]))
            if k.f is None:
                table_name = self.namer.function(f"_{prefix}_table")
                out.append(f"{table_name} = Tabulated({fns['k']}, {fns['g']})")
                fns["f"], fns["xi"] = f"{table_name}.f", f"{table_name}.xi"
            table.append(f"    {k.name!r}: ({fns['k']}, {fns['g']}, {fns['f']}, {fns['xi']}),")
        out.append("SCHEDULES = {\n" + "\n".join(table) + "\n}" if table else "SCHEDULES = {}")
        return "\n\n\n".join(out)


def group_by_coefficient(expr: sp.Expr, scalars: set) -> sp.Expr:
    """Write a sum the way a physicist would, with one multiplication per distinct coefficient:
    -2*kappa*(phi_px + phi_mx + ...) + (2 - 4*lambda)*phi + 4*lambda*phi**3. Fewer lattice-sized
    temporaries, which matters more on a CPU than the arithmetic itself."""
    if not isinstance(expr, sp.Add):
        return expr
    by_monomial: dict = {}
    for term in expr.args:
        tensors = [s for s in term.free_symbols if s not in scalars]
        coeff, rest = term.as_independent(*tensors, as_Add=False) if tensors else (term, sp.Integer(1))
        by_monomial[rest] = by_monomial.get(rest, 0) + coeff
    by_coeff: dict = {}
    for rest, coeff in by_monomial.items():
        by_coeff.setdefault(sp.expand(coeff), []).append(rest)
    # evaluate=False: SymPy would distribute a numeric coefficient over the sum again
    return sp.Add(*[sp.Mul(c, sp.Add(*rests), evaluate=False) if c != 1 and len(rests) > 1
                    else c * sp.Add(*rests) for c, rests in by_coeff.items() if c != 0])


def inline_single_use(body: list[str], rolls: set[str]) -> list[str]:
    """A roll used once is written at its use: its lattice-sized result then dies at once,
    instead of living through the whole function (peak memory, and with it allocator page
    faults, dominate small elementwise kernels on a CPU)."""
    import re
    for line in list(body):
        name, _, value = line.partition(" = ")
        if name not in rolls or not value.startswith("torch.roll("):
            continue
        pattern = re.compile(rf"\b{re.escape(name)}\b")
        uses = [i for i, l in enumerate(body) if l is not line and pattern.search(l)]
        if len(uses) == 1 and len(pattern.findall(body[uses[0]])) == 1:
            body[uses[0]] = pattern.sub(lambda _: value, body[uses[0]])
            body.remove(line)
    return body


def identifier(label: str) -> str:
    """C(3) -> C_3: a label of a component as the start of a Python name."""
    import re
    return re.sub(r"\W+", "_", label).strip("_")


def shifted_name(field: str, shift: tuple[int, ...]) -> str:
    parts = []
    for axis, s in enumerate(shift):
        if s:
            letter = AXIS_LETTERS[axis] if len(shift) <= 4 else str(axis)
            parts.append(f"{'p' if s > 0 else 'm'}{abs(s) if abs(s) > 1 else ''}{letter}")
    return f"{field}_{'_'.join(parts)}"


def generate(ir: TheoryIR) -> str:
    return ModuleWriter(ir).module()
