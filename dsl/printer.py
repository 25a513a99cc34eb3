"""The canonical text of an expression, printed from the syntax tree (never copied from the file).

Labels that leave the front end (the key of an average `<M^2>`, a symmetry's `phi -> -phi`) are
made here: comments, line breaks and spacing of the source cannot reach them, and two spellings of
one expression (`< M ^ 2 >`, `<M^2>`) get one label.
"""
from __future__ import annotations

from . import ast

# Binding strength: sums < products < unary minus < powers < atoms.
SUM, PRODUCT, UNARY, POWER, ATOM = range(1, 6)
PRECEDENCE = {"+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT, "^": POWER}


def show(e: ast.Expr) -> str:
    text, _ = printed(e)
    return text


def printed(e: ast.Expr) -> tuple[str, int]:
    """(text, precedence of its outermost operator)."""
    if isinstance(e, ast.Num):
        return e.text, ATOM
    if isinstance(e, ast.Imag):
        return e.text + "i", ATOM
    if isinstance(e, ast.Name):
        return e.id, ATOM
    if isinstance(e, ast.Average):
        return f"<{show(e.expr)}>", ATOM
    if isinstance(e, ast.Call):
        text = f"{e.func.id}({', '.join(show(a) for a in e.args)})"
        return (text + f"[ {show(e.body)} ]" if e.body is not None else text), ATOM
    if isinstance(e, ast.RangeSum):
        return f"{e.func.id}({e.index.id} in {show(e.lo)}..{show(e.hi)})[ {show(e.body)} ]", ATOM
    if isinstance(e, ast.PairSum):
        return f"{e.func.id}({e.first.id} < {e.second.id})[ {show(e.body)} ]", ATOM
    if isinstance(e, ast.Unary):
        return "-" + operand(e.operand, UNARY), UNARY
    if isinstance(e, ast.Binary):
        prec = PRECEDENCE[e.op]
        if e.op == "^":        # right-associative, and its base is an atom: (-a)^b, (a^b)^c
            return f"{operand(e.left, ATOM)}^{operand(e.right, UNARY)}", POWER
        left, right = operand(e.left, prec), operand(e.right, prec + 1)   # left-associative
        return (f"{left} {e.op} {right}" if prec == SUM else f"{left}{e.op}{right}"), prec
    raise AssertionError(e)


def operand(e: ast.Expr, required: int) -> str:
    text, prec = printed(e)
    return text if prec >= required else f"({text})"
