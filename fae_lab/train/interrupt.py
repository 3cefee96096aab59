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
# The handlers record_from_start replaced, until the command's stop_on_signals block takes them
# over (and restores them at its end); None when no command has started recording early.
_before_start: dict[int, object] | None = None
_depth = 0  # stop_on_signals blocks entered and not left (a phase's block around its runs')


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
    :func:`stop_on_signals` block entered later keeps what was recorded, and restores the
    handlers that were there before this call."""
    global _before_start
    _received.clear()
    replaced = {s: signal.signal(s, _record) for s in _wanted()}
    if _before_start is None:  # called twice without a block: the first call's are the originals
        _before_start = replaced


def end_early_recording() -> None:
    """At the end of a command that called :func:`record_from_start`: if no
    :func:`stop_on_signals` block took the handlers over (the command was refused before its
    block), put back the ones from before, and forget what was recorded. Otherwise, in a
    process that goes on (a notebook, a test session), Ctrl-C would stay recorded, not acted on."""
    global _before_start
    if _before_start is not None and _depth == 0:
        for s, handler in _before_start.items():
            signal.signal(s, handler)
        _before_start = None
        _received.clear()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Record SIGINT and SIGTERM instead of acting on them; restore the old handlers after.

    The outermost block of a command starts with nothing recorded, unless
    :func:`record_from_start` began recording for this command (then its early signals count),
    and leaves nothing recorded: in a process that runs several commands (a notebook, a test
    session) one command's signal never stops the next. A block inside another (a phase around
    its runs) sees the outer block's signals."""
    global _before_start, _depth
    wanted = _wanted()
    if _depth == 0:
        if _before_start is None:
            _received.clear()
        old = _before_start or {s: signal.getsignal(s) for s in wanted}
        _before_start = None
    else:
        old = {s: signal.getsignal(s) for s in wanted}
    for s in wanted:
        signal.signal(s, _record)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for s, handler in old.items():
            signal.signal(s, handler)
        if _depth == 0:
            _received.clear()
