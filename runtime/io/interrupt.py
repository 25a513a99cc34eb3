"""Stopping a long run politely: SIGINT (Ctrl-C) and SIGTERM (what a batch scheduler sends).

A loop that can checkpoint (the chain driver, the trainer) runs inside `safe_points()`; a signal
then only sets a flag, which the loop checks where its state is whole (between configurations,
between training steps): it writes its checkpoint there and raises `Interrupted`, and the command
line says how to resume. Outside such a loop a signal raises `Interrupted` at once (nothing to
save), and so does a second signal inside one (the user insists).
"""
from __future__ import annotations

import contextlib
import signal

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal, after writing its checkpoint when it had one."""

    def __init__(self, name: str = "SIGINT", checkpoint=None):
        super().__init__(name)
        self.signal_name, self.checkpoint = name, checkpoint


_state = {"depth": 0, "requested": None}


def handler(signum, frame):
    name = NAMES.get(signum, str(signum))
    if _state["depth"] == 0 or _state["requested"] is not None:
        raise Interrupted(name)
    _state["requested"] = name


@contextlib.contextmanager
def handled():
    """Route SIGINT and SIGTERM through `handler` while a command runs, then restore the
    handlers there were (a command run in-process, e.g. by a test, leaves its caller's alone)."""
    try:
        before = {sig: signal.signal(sig, handler) for sig in NAMES}
    except ValueError:              # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def safe_points():
    """While inside, a first signal is deferred to the loop's next `requested()` check."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            _state["requested"] = None


def requested() -> str | None:
    """The name of the signal that asked this run to stop, or None."""
    return _state["requested"]
