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


def install() -> None:
    """Route SIGINT and SIGTERM through `handler` (the command line calls this once)."""
    for sig in NAMES:
        signal.signal(sig, handler)


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
