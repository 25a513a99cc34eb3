"""Parse .theory text into the syntax tree of ast.py, with errors that point at the place."""
from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import Span, TheoryError, source_lines

GRAMMAR = Path(__file__).with_name("theory.lark")
OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}
CLOSERS = {"RPAR": "(", "RSQB": "["}

# What to call a token in a message (Lark's names are for grammar writers).
TOKEN_WORDS = {
    "_NL": "end of line", "$END": "end of file", "NAME": "a name", "NUMBER": "a number",
    "IMAG": "an imaginary number", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "LBRACE": "'{'", "RBRACE": "'}'", "EQUAL": "'='", "COMMA": "','", "COLON": "':'",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "CIRCUMFLEX": "'^'",
    "LESSTHAN": "'<'", "MORETHAN": "'>'", "__ANON_0": "'->'", "X": "'x'", "IN": "'in'",
}


class BracketNewlines:
    """Post-lexer: newlines inside ( ) or [ ] do not end a statement; unbalanced brackets are
    reported at the bracket that is never closed (or never opened)."""

    always_accept = ("_NL",)

    def process(self, stream):
        stack: list[Token] = []
        count = 0
        for tok in stream:
            count = 0 if tok.type == "_NL" and not stack else count + 1
            if count > MAX_STATEMENT_TOKENS:
                raise TheoryError(span_of(tok), f"this statement is longer than {MAX_STATEMENT_TOKENS} tokens",
                                  "split it with params, observables or several estimates.",
                                  kind="Syntax error")
            if tok.type in OPENERS:
                stack.append(tok)
            elif tok.type in CLOSERS:
                if not stack or OPENERS[stack[-1].type] != tok.type:
                    if stack:
                        raise TheoryError(span_of(stack[-1]), f"'{stack[-1].value}' is closed by "
                                          f"'{tok.value}' at line {tok.line}, column {tok.column}",
                                          "brackets must match: ( with ) and [ with ].",
                                          kind="Syntax error")
                    raise TheoryError(span_of(tok), f"'{tok.value}' closes a bracket that was "
                                      "never opened", "remove it or add the matching opening "
                                      f"'{CLOSERS[tok.type]}'.", kind="Syntax error")
                stack.pop()
            elif tok.type == "_NL" and stack:
                continue
            yield tok
        if stack:
            raise never_closed(stack[-1])


STATEMENT_WORDS = {"theory", "lattice", "field", "link", "gauge", "let", "param", "symmetry", "action", "observable",
                   "estimate", "schedule"}


def never_closed(tok: Token) -> TheoryError:
    return TheoryError(span_of(tok), f"'{tok.value}' is never closed",
                       "close it before the end of the statement; a statement may span "
                       "lines only while a bracket is open.", kind="Syntax error")


@lru_cache(maxsize=None)
def lark_parser(start: str) -> Lark:
    return Lark(GRAMMAR.read_text(), start=start, parser="lalr", lexer="contextual",
                postlex=BracketNewlines(), propagate_positions=True, maybe_placeholders=False)


def span_of(obj) -> Span:
    """The span of a Lark token or tree (meta)."""
    return Span(obj.line, obj.column, obj.end_line or obj.line, obj.end_column or obj.column + 1)


@v_args(meta=True)
class ToAst(Transformer):
    """Lark tree -> frozen dataclasses of ast.py, spans attached."""

    def _name(self, tok: Token) -> ast.Name:
        return ast.Name(str(tok), span_of(tok))

    def start(self, meta, items):
        return ast.Module(tuple(items))

    def theory_stmt(self, meta, items):
        return ast.TheoryName(self._name(items[0]), span_of(meta))

    def extent(self, meta, items):
        tok = items[0]
        return ast.Num(str(tok), span_of(tok)) if tok.type == "NUMBER" else self._name(tok)

    def lattice_stmt(self, meta, items):
        return ast.Lattice(tuple(items), span_of(meta))

    def field_stmt(self, meta, items):
        names = tuple(self._name(t) for t in items[:-1])
        return ast.Field(names, self._name(items[-1]), span_of(meta))

    def link_stmt(self, meta, items):
        names = tuple(self._name(t) for t in items[:-1])
        return ast.Link(names, self._name(items[-1]), span_of(meta))

    def gauge_stmt(self, meta, items):
        return ast.Gauge(self._name(items[0]), span_of(meta))

    def let_stmt(self, meta, items):
        args = items[1] if len(items) == 3 else ()
        return ast.Let(self._name(items[0]), args, items[-1], span_of(meta))

    def let_args(self, meta, items):
        return tuple(self._name(t) for t in items)

    def pair_call(self, meta, items):
        func, first, second, body = items
        return ast.PairSum(self._name(func), self._name(first), self._name(second), body[1], span_of(meta))

    def param_stmt(self, meta, items):
        return ast.Param(self._name(items[0]), items[1], span_of(meta))

    def sym_map(self, meta, items):
        return ast.SymmetryMap(self._name(items[0]), items[1], span_of(meta))

    def symmetry_stmt(self, meta, items):
        return ast.Symmetry(tuple(items), span_of(meta))

    def action_stmt(self, meta, items):
        return ast.Action(items[0], span_of(meta))

    def observable_stmt(self, meta, items):
        index = items[1] if len(items) == 3 else None
        return ast.Observable(self._name(items[0]), items[-1], span_of(meta), index)

    def estimate_stmt(self, meta, items):
        index = items[1] if len(items) == 3 else None
        return ast.Estimate(self._name(items[0]), items[-1], span_of(meta), index)

    def index_decl(self, meta, items):
        lo, hi = (items[1], items[2]) if len(items) == 3 else (None, None)
        return ast.IndexDecl(self._name(items[0]), lo, hi, span_of(meta))

    def range_call(self, meta, items):
        func, index, lo, hi, body = items
        return ast.RangeSum(self._name(func), self._name(index), lo, hi, body[1], span_of(meta))

    def drift_item(self, meta, items):
        return ast.ScheduleEntry("drift", items[0], span_of(meta))

    def diffusion_item(self, meta, items):
        return ast.ScheduleEntry("diffusion", items[0], span_of(meta))

    def schedule_stmt(self, meta, items):
        return ast.Schedule(self._name(items[0]), tuple(items[1:]), span_of(meta))

    # expressions
    def number(self, meta, items):
        return ast.Num(literal(str(items[0]), span_of(meta)), span_of(meta))

    def imag(self, meta, items):
        return ast.Imag(literal(str(items[0])[:-1], span_of(meta)), span_of(meta))

    def name(self, meta, items):
        return self._name(items[0])

    def call(self, meta, items):
        func, rest = self._name(items[0]), items[1:]
        body = None
        if rest and isinstance(rest[-1], tuple) and rest[-1][0] == "body":
            body = rest[-1][1]
            rest = rest[:-1]
        return ast.Call(func, tuple(rest), body, span_of(meta))

    def body(self, meta, items):
        return ("body", items[0])

    def _binary(op):
        def build(self, meta, items):
            return ast.Binary(op, items[0], items[1], span_of(meta))
        return build

    add, sub, mul, div, pow = _binary("+"), _binary("-"), _binary("*"), _binary("/"), _binary("^")

    def neg(self, meta, items):
        return ast.Unary("-", items[0], span_of(meta))

    def unary(self, meta, items):           # unary plus
        return items[0]

    def average(self, meta, items):
        return ast.Average(items[0], span_of(meta))


def read_text(data: bytes | str) -> str:
    """Decode a file's bytes, refusing what is not text."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[:err.start].count(b"\n") + 1
            line_start = data.rfind(b"\n", 0, err.start) + 1
            col = len(data[line_start:err.start].decode("utf-8", errors="replace")) + 1
            raise TheoryError(Span.point(line, col), "the file is not UTF-8 text",
                              "a .theory file is plain text; is this the right file?",
                              kind="Syntax error") from None
    text = text.removeprefix("\ufeff")        # a UTF-8 byte-order mark is not part of the text
    if "\x00" in text:
        at = text.index("\x00")
        line, col = text[:at].count("\n") + 1, at - (text.rfind("\n", 0, at) + 1) + 1
        raise TheoryError(Span.point(line, col), "the file contains NUL bytes: it is binary, "
                          "not text", "a .theory file is plain text; is this the right file?",
                          kind="Syntax error")
    return text


def displayable(data: bytes | str) -> str:
    """The text to show under an error about a file that is not text: undecodable bytes and
    control characters become U+FFFD, so the line and the caret still line up."""
    text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    return "".join("\ufffd" if (ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 else c
                   for c in text)


# Limits that keep the front end and the compiler in bounded time and memory (README, "Limits").
MAX_DEPTH = 100                 # nesting of an expression: parentheses, calls, operators
MAX_STATEMENT_TOKENS = 4000     # tokens of one statement
MAX_LITERAL_LENGTH = 64         # characters of one number


def parse(text: str, start: str = "start"):
    """Parse a whole file (start='start') or one expression (start='expr', used by --set)."""
    try:
        tree = lark_parser(start).parse(text)
    except TheoryError:
        raise
    except UnexpectedInput as err:
        raise syntax_error(err, text) from None
    check_depth(tree)
    try:
        return ToAst().transform(tree)
    except VisitError as err:           # Lark wraps what the transformer raises
        if isinstance(err.orig_exc, TheoryError):
            raise err.orig_exc from None
        raise


def check_depth(tree) -> None:
    """Refuse nesting deeper than MAX_DEPTH before any recursive pass sees the tree (the parser
    itself is iterative; everything after it recurses once per level)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            where = span_of(node.meta) if getattr(node.meta, "line", None) else Span.point(1, 1)
            raise TheoryError(where, f"this expression nests more than {MAX_DEPTH} levels deep",
                              "split it with params or observables; a chain of n terms a + b + ... "
                              "counts n levels.", kind="Syntax error")
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))


def literal(text: str, span: Span) -> str:
    """A number literal that double precision can hold: not too long, not overflowing to inf
    (1e999), not a nonzero value that underflows to 0 (1e-999999)."""
    if len(text) > MAX_LITERAL_LENGTH:
        raise TheoryError(span, f"a number of {len(text)} characters is too long",
                          f"numbers have at most {MAX_LITERAL_LENGTH} characters; write 1e30, not 1000...0.",
                          kind="Syntax error")
    value = float(text)
    mantissa = text.lower().split("e")[0]
    if math.isinf(value) or (value == 0 and mantissa.strip("0.")):
        raise TheoryError(span, f"the number {text} is outside the range of double precision",
                          "numbers must lie between about 1e-308 and 1e308 in magnitude.",
                          kind="Syntax error")
    return text


# Words of Python that someone may try: the language has none of them, and nothing is ever run.
PYTHON_WORDS = {"lambda", "import", "from", "def", "class", "exec", "eval", "return", "for", "while",
                "if", "else", "with", "global", "yield", "print", "open", "compile", "__import__"}


def python_word_near(text: str, line: int, col: int) -> str | None:
    """A Python keyword at, or just before, the error position."""
    lines = source_lines(text)
    if not 0 < line <= len(lines):
        return None
    before = lines[line - 1][:col - 1].split()
    here = lines[line - 1][col - 1:].split()
    for word in (here[0] if here else "", before[-1] if before else ""):
        word = word.split("(")[0]
        if word in PYTHON_WORDS:
            return word
    return None


def syntax_error(err: UnexpectedInput, text: str) -> TheoryError:
    line = getattr(err, "line", None)
    if isinstance(line, int) and line > 0:
        bracket = open_bracket_before_statement(text, line)
        if bracket:
            return bracket
    error = describe_syntax_error(err, text)
    word = error.span and python_word_near(text, error.span.line, error.span.column)
    if word:
        error.hint = (f"'{word}' is Python, not part of the .theory language; nothing in a "
                      ".theory file is run as code.")
    return error


def open_bracket_before_statement(text: str, line: int) -> TheoryError | None:
    """A line that starts a statement while a bracket of an earlier line is still open: the
    bracket is the mistake, not the statement word the parser stumbles on."""
    lines = source_lines(text)
    words = lines[line - 1].split() if line <= len(lines) else []
    if not words or not lines[line - 1][0].isalpha() or words[0] not in STATEMENT_WORDS:
        return None
    stack = []
    for number, content in enumerate(lines[:line - 1], start=1):
        for column, ch in enumerate(content.split("#")[0], start=1):
            if ch in "([":
                stack.append(Token("LPAR" if ch == "(" else "LSQB", ch, line=number, column=column,
                                   end_line=number, end_column=column + 1))
            elif ch in ")]" and stack:
                stack.pop()
    return never_closed(stack[-1]) if stack else None


def describe_syntax_error(err: UnexpectedInput, text: str) -> TheoryError:
    line, col = max(1, getattr(err, "line", 1) or 1), max(1, getattr(err, "column", 1) or 1)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        hint = "names, numbers and the operators + - * / ^ make expressions."
        if ch in "'\"":
            hint = "there are no strings in the language; nothing in a .theory file is run as code."
        elif ch in ".;":
            hint = "there are no attributes or statement separators; one statement per line."
        return TheoryError(Span.point(line, col), f"unexpected character {ch!r}", hint,
                           kind="Syntax error")
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            line, col = end_position(text)
        got = TOKEN_WORDS.get(tok.type, repr(str(tok)))
        if tok.type not in ("$END", "_NL"):
            got = f"'{tok}'"
        expected = sorted(TOKEN_WORDS.get(t, t.lower()) for t in err.expected
                          if not t.startswith("__") or t in TOKEN_WORDS)
        span = Span(line, col, line, col + max(1, len(str(tok)) if tok.type != "_NL" else 1))
        hint = expected_hint(expected, tok)
        if tok.type in ("_NL", "$END") and "'='" not in expected:
            hint = "the statement ends too early: something is missing here."
        hint = juxtaposition_hint(text, line, col, tok) or hint
        if tok.type == "$END":
            brace = unclosed_brace(text)
            if brace:
                return brace
        return TheoryError(span, f"unexpected {got}", hint, kind="Syntax error")
    if isinstance(err, UnexpectedEOF):
        line, col = end_position(text)
        return TheoryError(Span.point(line, col), "unexpected end of file",
                           "the last statement is incomplete.", kind="Syntax error")
    return TheoryError(Span.point(line, col), str(err).splitlines()[0], kind="Syntax error")


def juxtaposition_hint(text: str, line: int, col: int, tok) -> str:
    """Hints for the usual slips: 2x, x**2, sum(x) phi(x) without brackets."""
    lines = source_lines(text)
    before = lines[line - 1][:col - 1].rstrip() if 0 < line <= len(lines) else ""
    if tok.type == "STAR" and before.endswith("*"):
        return "powers are written with ^: x^2."
    if tok.type not in ("NAME", "X", "NUMBER", "IMAG", "LPAR"):
        return ""
    reduction = re.search(r"\b(sum|mean)\s*\(\s*(\w+)\s*\)$", before)
    if reduction:
        return f"a reduction takes its body in square brackets: {reduction[1]}({reduction[2]})[ ... ]."
    if before[-1:].isalnum() or before.endswith((")", "]")):
        return "two values stand side by side: write * to multiply, e.g. 2*x."
    return ""


def unclosed_brace(text: str) -> TheoryError | None:
    """A schedule's '{' still open at the end of the file."""
    depth, last = 0, None
    for number, content in enumerate(source_lines(text), start=1):
        for column, ch in enumerate(content.split("#")[0], start=1):
            if ch == "{":
                depth, last = depth + 1, (number, column)
            elif ch == "}":
                depth -= 1
    if depth > 0 and last:
        return TheoryError(Span.point(*last), "'{' is never closed",
                           "end the schedule with '}' on a line of its own.", kind="Syntax error")
    return None


def expected_hint(expected: list[str], tok) -> str:
    statements = {"'theory'", "'lattice'", "'field'", "'link'", "'gauge'", "'let'", "'param'", "'symmetry'", "'action'",
                  "'observable'", "'estimate'", "'schedule'"}
    words = [w if w.startswith("'") or " " in w else f"'{w}'" for w in expected]
    if statements & set(words) or any(w in statements for w in words):
        return ("a statement starts with one of: theory, lattice, field, link, gauge, let, param, "
                "symmetry, action, observable, estimate, schedule.")
    if len(words) > 6:
        return "the expression or statement is incomplete or has an extra token here."
    return "expected " + " or ".join(dict.fromkeys(words)) + "."


def end_position(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").split("\n")
    return len(lines), len(lines[-1]) + 1
