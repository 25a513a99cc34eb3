"""Bounded time and size for the compiler: a file that cannot be compiled quickly is refused with
a message that names the statement being compiled, never left to hang.

- `time_limit(seconds, error)`: nested deadlines on one interval timer (SIGALRM; the main thread
  of a POSIX process; elsewhere no limit). The innermost expired deadline raises its own error,
  so SymPy's integrator can give up after a few seconds (and the schedule be tabulated) while the
  whole compilation still has its own limit.
- `stage(span, what)`: which statement is being compiled, for the message.
- `expand(expr)`: SymPy's expand without multinomial or power expansion ((a + b + ...)^1000
  would expand for ever); proofs that need more fall back to evaluation at random points.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

import sympy as sp

MAX_COMPILE_SECONDS = 120
MAX_UNROLLED_TERMS = 200_000        # terms made by unrolling sum(mu), sum(mu < nu), sum(r in A..B)


class CompileTimeout(BaseException):
    """The compilation as a whole ran out of time (BaseException: no library swallows it)."""


_deadlines: list = []               # (absolute time, token, exception class), innermost last
_current = {"span": None, "what": "the theory"}


def usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _arm():
    if _deadlines:
        remaining = min(d for d, _, _ in _deadlines) - time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _fire(signum, frame):
    now = time.monotonic()
    expired = [entry for entry in _deadlines if entry[0] <= now + 1e-3]
    if not expired:
        _arm()
        return
    raise min(expired, key=lambda e: e[0])[2]()


@contextmanager
def time_limit(seconds: float, error=TimeoutError):
    if not usable():
        yield
        return
    entry = (time.monotonic() + seconds, object(), error)
    previous = signal.signal(signal.SIGALRM, _fire) if not _deadlines else None
    _deadlines.append(entry)
    _arm()
    try:
        yield
    finally:
        _deadlines.remove(entry)
        _arm()
        if not _deadlines:
            signal.signal(signal.SIGALRM, previous or signal.SIG_DFL)


def stage(span, what: str) -> None:
    _current["span"], _current["what"] = span, what


def current() -> tuple:
    return _current["span"], _current["what"]


def expand(expr: sp.Expr) -> sp.Expr:
    return sp.expand(expr, multinomial=False, power_exp=False, power_base=False, log=False)
