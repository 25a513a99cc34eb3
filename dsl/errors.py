"""One error type for everything wrong with a .theory file, formatted like stanc3's messages."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of the source: 1-based line and column of its start, and its end (exclusive)."""
    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(line: int, column: int) -> "Span":
        return Span(line, column, line, column + 1)


class TheoryError(Exception):
    """What the user wrote is wrong. `kind` is 'Syntax error' or 'Semantic error'."""

    def __init__(self, span: Span | None, message: str, hint: str = "",
                 kind: str = "Semantic error"):
        super().__init__(message)
        self.span, self.message, self.hint, self.kind = span, message, hint, kind
        self.filename, self.source = "<theory>", ""

    def located(self, filename: str, source: str) -> "TheoryError":
        """Attach the file name and text, so that `format()` can show the line."""
        self.filename, self.source = filename, source
        return self

    def format(self) -> str:
        if self.span is None:
            head = f"{self.kind} in '{self.filename}':"
            return "\n".join(filter(None, [head, "  " + self.message, hint_line(self.hint)]))
        line_text = source_line(self.source, self.span.line)
        width = 1
        if self.span.end_line == self.span.line:
            width = max(1, self.span.end_column - self.span.column)
        caret = " " * (self.span.column - 1) + "^" * min(width, max(1, len(line_text) - self.span.column + 1))
        head = f"{self.kind} in '{self.filename}', line {self.span.line}, column {self.span.column}:"
        body = [head, f"  {self.span.line:>3} | {line_text}", f"      | {caret}", "  " + self.message]
        return "\n".join(filter(None, body + [hint_line(self.hint)]))

    def __str__(self) -> str:
        return self.format()


def hint_line(hint: str) -> str:
    return f"  Hint: {hint}" if hint else ""


def source_line(source: str, line: int) -> str:
    lines = source.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return text.replace("\t", " ")


def did_you_mean(name: str, candidates) -> str:
    """A hint naming the closest known name, if one is close enough to be a typo."""
    import difflib
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    # Among equally plausible typos the one sharing the longest start wins: cosine -> cos, not sin.
    best = max(close, key=lambda c: len(os.path.commonprefix([name, c])))
    return f"did you mean '{best}'?"
