"""Defence in depth: a generated module must be made of what codegen emits, and nothing else.

The module is parsed (never run) and its Python AST is walked against a whitelist: docstrings,
`import torch`, the helpers of `theoryc.compiler.support`, assignments to plain names, functions
of plain arguments whose bodies assign and return, arithmetic, calls of `torch.*` functions, of the
support helpers, of `abs` and of the module's own functions, a few tensor methods (`.sum`,
`.unsqueeze`), subscripts by constants and slices, and number, string, tuple, list and dict
displays. Names with a leading double underscore, attribute access outside the list, lambdas,
comprehensions, comparisons, imports of anything else, ... are refused. This runs before a module
is written to the cache and again before one is imported, so a cache entry that this compiler did
not produce (tampered with, planted, truncated) is never executed.
"""
from __future__ import annotations

import ast

SUPPORT_MODULE = "theoryc.compiler.support"
SUPPORT_NAMES = frozenset({"Tabulated", "conj", "coordinate", "fill", "imag", "per_config", "real", "wrap"})
TORCH_FUNCTIONS = frozenset({"exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh",
                             "sign", "roll", "stack", "zeros_like", "as_tensor", "where"})
METHODS = frozenset({"sum", "unsqueeze"})
TABLE_ATTRIBUTES = frozenset({"f", "xi"})          # a Tabulated schedule's kernels
BUILTINS = frozenset({"abs"})
KEYWORDS = frozenset({"keepdim"})
OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)
CONSTANTS = (int, float, complex, str, bool)


class UntrustedCode(Exception):
    """The text is not a module this compiler produces."""


def verify_generated(code: str) -> None:
    """Raise UntrustedCode unless `code` is made only of what codegen emits."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UntrustedCode(f"it is not valid Python ({type(err).__name__})") from None
    module_names = defined_names(tree.body)
    for stmt in tree.body:
        module_statement(stmt, module_names)


def defined_names(body) -> set[str]:
    names = set()
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
        elif isinstance(stmt, ast.FunctionDef):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name for a in stmt.names}
    return names


def refuse(node, what: str):
    line = getattr(node, "lineno", "?")
    raise UntrustedCode(f"line {line}: {what}")


def module_statement(stmt, names: set[str]) -> None:
    if isinstance(stmt, ast.Expr) and is_string(stmt.value):
        return
    if isinstance(stmt, ast.Import):
        if [(a.name, a.asname) for a in stmt.names] != [("torch", None)]:
            refuse(stmt, "an import other than 'import torch'")
        return
    if isinstance(stmt, ast.ImportFrom):
        if stmt.module != SUPPORT_MODULE or stmt.level != 0 or \
                any(a.name not in SUPPORT_NAMES or a.asname for a in stmt.names):
            refuse(stmt, f"an import other than the helpers of {SUPPORT_MODULE}")
        return
    if isinstance(stmt, ast.Assign):
        assignment(stmt, names)
        return
    if isinstance(stmt, ast.FunctionDef):
        function(stmt, names)
        return
    refuse(stmt, f"a {type(stmt).__name__} statement")


def function(fn: ast.FunctionDef, module_names: set[str]) -> None:
    a = fn.args
    if fn.decorator_list or fn.returns or a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs \
            or a.defaults or a.kw_defaults or getattr(fn, "type_params", None):
        refuse(fn, f"function '{fn.name}' has more than plain arguments")
    binding(fn, fn.name)
    params = {arg.arg for arg in a.args}
    for arg in a.args:
        binding(fn, arg.arg)
        if arg.annotation is not None:
            refuse(fn, "an annotated argument")
    names = module_names | params | defined_names(fn.body)
    for stmt in fn.body:
        if isinstance(stmt, ast.Expr) and is_string(stmt.value):
            continue
        if isinstance(stmt, ast.Assign):
            assignment(stmt, names)
        elif isinstance(stmt, ast.Return) and stmt.value is not None:
            expression(stmt.value, names)
        else:
            refuse(stmt, f"a {type(stmt).__name__} statement inside function '{fn.name}'")


def assignment(stmt: ast.Assign, names: set[str]) -> None:
    for target in stmt.targets:
        if not isinstance(target, ast.Name):
            refuse(stmt, "an assignment to something other than a plain name")
        binding(stmt, target.id)
    expression(stmt.value, names)


def identifier(node, name: str) -> None:
    if name.startswith("__"):
        refuse(node, f"the name '{name}'")


def binding(node, name: str) -> None:
    """A name the module binds must not replace torch, a support helper or a builtin."""
    identifier(node, name)
    if name == "torch" or name in SUPPORT_NAMES or name in BUILTINS:
        refuse(node, f"a rebinding of '{name}'")


def is_string(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def expression(node, names: set[str]) -> None:
    """Walk an expression; every node must be of a kind codegen emits."""
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, CONSTANTS):
            refuse(node, f"a constant of type {type(node.value).__name__}")
    elif isinstance(node, ast.Name):
        identifier(node, node.id)
        if node.id not in names and node.id not in BUILTINS:
            refuse(node, f"the name '{node.id}', which the module does not define")
    elif isinstance(node, ast.BinOp):
        operator(node, node.op)
        expression(node.left, names)
        expression(node.right, names)
    elif isinstance(node, ast.UnaryOp):
        operator(node, node.op)
        expression(node.operand, names)
    elif isinstance(node, ast.Call):
        call(node, names)
    elif isinstance(node, ast.Attribute):
        attribute(node, names, called=False)
    elif isinstance(node, ast.Subscript):
        expression(node.value, names)
        subscript(node.slice)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for e in node.elts:
            expression(e, names)
    elif isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if k is None or not is_string(k):
                refuse(node, "a dict whose keys are not strings")
            expression(v, names)
    else:
        refuse(node, f"a {type(node).__name__} expression")


def operator(node, op) -> None:
    if not isinstance(op, OPERATORS):
        refuse(node, f"the operator {type(op).__name__}")


def call(node: ast.Call, names: set[str]) -> None:
    func = node.func
    if isinstance(func, ast.Name):
        expression(func, names)
    elif isinstance(func, ast.Attribute):
        attribute(func, names, called=True)
    else:
        refuse(node, "a call of something other than a named function")
    for a in node.args:
        if isinstance(a, ast.Starred):
            refuse(node, "a starred argument")
        expression(a, names)
    for k in node.keywords:
        if k.arg not in KEYWORDS:
            refuse(node, f"the keyword argument {k.arg!r}")
        expression(k.value, names)


def attribute(node: ast.Attribute, names: set[str], called: bool) -> None:
    if isinstance(node.value, ast.Name) and node.value.id == "torch":
        if node.attr not in TORCH_FUNCTIONS:
            refuse(node, f"torch.{node.attr}")
        return
    allowed = METHODS if called else frozenset()
    if isinstance(node.value, ast.Name) and node.value.id in names and node.attr in TABLE_ATTRIBUTES:
        allowed = allowed | TABLE_ATTRIBUTES
    if node.attr not in allowed:
        refuse(node, f"the attribute '.{node.attr}'")
    expression(node.value, names)


def subscript(node) -> None:
    parts = node.elts if isinstance(node, ast.Tuple) else [node]
    for p in parts:
        if isinstance(p, ast.Slice):
            if p.lower or p.upper or p.step:
                refuse(p, "a slice with bounds")
        elif not (isinstance(p, ast.Constant) and isinstance(p.value, (int, str))
                  and not isinstance(p.value, bool)):
            refuse(p, "a subscript other than a constant or ':'")
