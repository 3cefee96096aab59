"""SIGINT / SIGTERM as a request to stop, honoured between host calls.

The handler only records the signal. Raising from it (Python's default for SIGINT) lands
wherever the main thread happens to be: inside XLA compilation, an orbax save or a store
write, and an exception there, or the interpreter's exit with those threads still busy,
can leave a half-written checkpoint or end in a segmentation fault. The training loop
instead reads :func:`requested` at its chunk boundaries and evaluations, checkpoints the
last completed step and exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

_received: list[int] = []  # the signals received while a handler was installed, in order


class Interrupted(Exception):
    """A run stopped because of a signal; ``exit_code`` is ``128 + signal``."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _record(signum, _frame) -> None:
    _received.append(int(signum))


def requested() -> int | None:
    """The first signal received since :func:`stop_on_signals` was entered, or None."""
    return _received[0] if _received else None


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _wanted() -> list[int]:
    names = ["SIGINT"] + (["SIGTERM"] if sys.platform != "win32" else [])
    return [getattr(signal, n) for n in names]


def record_from_start() -> None:
    """Record SIGINT and SIGTERM from now on, before the heavy imports of a training command
    (NumPy, JAX: seconds), so that a signal during them is honoured like any other. The
    :func:`stop_on_signals` block entered later keeps what was recorded."""
    _received.clear()
    for s in _wanted():
        signal.signal(s, _record)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Record SIGINT and SIGTERM instead of acting on them; restore the old handlers after."""
    wanted = _wanted()
    if not all(signal.getsignal(s) is _record for s in wanted):
        _received.clear()  # a fresh block; after record_from_start the early signals count
    old = {s: signal.signal(s, _record) for s in wanted}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
