"""One error type for everything wrong with a .theory file, formatted like stanc3's messages."""
from __future__ import annotations

import os
import unicodedata
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
        filename, message, hint = printable(self.filename), printable(self.message), printable(self.hint)
        if self.span is None:
            head = f"{self.kind} in '{filename}':"
            return "\n".join(filter(None, [head, "  " + message, hint_line(hint)]))
        raw = source_line(self.source, self.span.line)
        line_text = printable(raw)
        start = len(printable(raw[:self.span.column - 1]))        # escapes widen the line
        width = 1
        if self.span.end_line == self.span.line:
            width = max(1, len(printable(raw[self.span.column - 1:self.span.end_column - 1])))
        line_text, start = clipped(line_text, start)
        caret = " " * start + "^" * min(width, max(1, len(line_text) - start))
        head = f"{self.kind} in '{filename}', line {self.span.line}, column {self.span.column}:"
        body = [head, f"  {self.span.line:>3} | {line_text}", f"      | {caret}", "  " + message]
        return "\n".join(filter(None, body + [hint_line(hint)]))

    def __str__(self) -> str:
        return self.format()


SHOWN_WIDTH = 100


def clipped(line: str, start: int) -> tuple[str, int]:
    """A window of a long line around the error column (a file may hold a line of megabytes)."""
    if len(line) <= SHOWN_WIDTH:
        return line, start
    left = max(0, min(start - SHOWN_WIDTH // 2, len(line) - SHOWN_WIDTH))
    shown = line[left:left + SHOWN_WIDTH]
    prefix = "..." if left > 0 else ""
    suffix = "..." if left + SHOWN_WIDTH < len(line) else ""
    return prefix + shown + suffix, start - left + len(prefix)


def hint_line(hint: str) -> str:
    return f"  Hint: {hint}" if hint else ""


def source_lines(source: str) -> list[str]:
    """The lines of a source as the lexer counts them: only '\n' ends a line (a form feed, a lone
    '\r', U+0085 or U+2028 does not), and the '\r' of a '\r\n' belongs to the line end. Every
    place that quotes or scans source text by line uses this, so line numbers always agree."""
    return [line[:-1] if line.endswith("\r") else line for line in source.split("\n")]


def source_line(source: str, line: int) -> str:
    lines = source_lines(source)
    return lines[line - 1] if 0 < line <= len(lines) else ""


def printable(text: str, newlines: bool = False) -> str:
    """Text that is safe to send to a terminal: a tab becomes a space, and control and format
    characters (ESC, BEL, bidirectional overrides, line separators, ...) are shown escaped;
    '\n' is kept where `newlines` says so."""
    out = []
    for ch in text:
        if ch == "\n" and newlines:
            out.append(ch)
        elif ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch)[0] in "CZ" and ch != " ":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def did_you_mean(name: str, candidates) -> str:
    """A hint naming the closest known name, if one is close enough to be a typo."""
    import difflib
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    # Among equally plausible typos the one sharing the longest start wins: cosine -> cos, not sin.
    best = max(close, key=lambda c: len(os.path.commonprefix([name, c])))
    return f"did you mean '{best}'?"
