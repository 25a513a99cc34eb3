"""The whole compiler, one named pass after another; each pass's output can be printed.

    text --parse--> syntax tree --check--> checked tree --lower--> SymPy IR --generate--> Python
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dsl.checker import check
from ..dsl.errors import TheoryError
from ..dsl.parser import displayable, parse, read_text
from . import budget
from .codegen import generate
from .ir import TheoryIR, lower_theory


@dataclass
class Compiled:
    ir: TheoryIR
    code: str


def compile_text(data: bytes | str, filename: str, overrides: dict[str, str] | None = None) -> Compiled:
    text = ""
    try:
        text = read_text(data)
        with budget.time_limit(budget.MAX_COMPILE_SECONDS, budget.CompileTimeout):
            try:
                budget.stage(None, "the theory")
                syntax = parse(text)
                checked = check(syntax, text, parse_overrides(overrides or {}))
                ir = lower_theory(checked)
                budget.stage(None, "the generated code")
                return Compiled(ir, generate(ir))
            except budget.CompileTimeout:
                raise too_slow() from None
    except TheoryError as err:
        raise err.located(filename, text or displayable(data)) from None


def too_slow() -> TheoryError:
    span, what = budget.current()
    return TheoryError(span, f"compiling {what} takes more than {budget.MAX_COMPILE_SECONDS} s",
                       "simplify it: fewer nested sums or smaller powers of long sums.")


def parse_overrides(overrides: dict[str, str]) -> dict:
    """--set NAME=VALUE: each value is parsed as an expression of the language (never eval'd)."""
    parsed = {}
    for name, value in overrides.items():
        try:
            parsed[name] = parse(str(value), start="expr")
        except TheoryError as err:
            raise TheoryError(None, f"--set {name}={value}: {err.message}",
                              "a value is a number such as 0.3, 1e-3, 2i or 1+2i.", kind="Error") from None
    return parsed
