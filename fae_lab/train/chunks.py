"""How many training steps one host call runs: long calls where steps are fast, short where slow.

A signal is read between host calls (:mod:`fae_lab.train.interrupt`), and the loop keeps two
calls in flight (the next is dispatched before the previous one's metrics are read), so a stop
waits for at most two calls, then the checkpoint. At a fixed length of n steps of t seconds
each a stop takes up to ``2 n t``: long calls keep a GPU busy, but on a slow CPU (t of seconds)
fifty steps a call is minutes.

``--steps-per-call N`` fixes the length at N. Without it the length is sized from the measured
step time t: calls of one step until t is known, then the largest n of 1, 2, 4, ...,
:data:`MAX_STEPS_PER_CALL` with ``n t <= CHUNK_SECONDS`` (at least 1). t is re-measured at every
call whose length had run before: the first call of a length may include a compilation, which
says nothing about t. A sized run compiles one training loop whose step count is an argument
(:func:`fae_lab.train.step.make_sized_chunk`, up to :data:`MAX_STEPS_PER_CALL` steps), so its
lengths (powers of two, the cap, and the rest before an evaluation) share one compilation.

Sizing is for the CPU only (:func:`fixed_length`): on a GPU or TPU a step takes milliseconds,
fifty steps well under a second, and measuring first would only cost one more compilation.
"""

from __future__ import annotations

# Steps of one call when steps are fast (the loop's length before it was sized from the rate;
# a GPU runs them in well under a second, so its calls stay long).
MAX_STEPS_PER_CALL = 50
# The longest a call should take: a stop waits for at most two calls.
CHUNK_SECONDS = 1.0


def fixed_length(steps_per_call: int | None, backend: str) -> int | None:
    """The fixed call length of a run: the user's ``--steps-per-call``; else
    :data:`MAX_STEPS_PER_CALL` off the CPU (``backend`` as ``jax.default_backend()`` names it);
    None (sized from the measured step time) on the CPU."""
    if steps_per_call is not None:
        return steps_per_call
    return None if backend == "cpu" else MAX_STEPS_PER_CALL


class ChunkSizer:
    """The length of the next host call, from ``--steps-per-call`` or the measured step time.

    ``fixed``: the user's ``--steps-per-call`` (None: sized from the rate). Feed every finished
    call to :meth:`observe`; :meth:`length` gives the next call's length, at most ``left`` (the
    steps to the next evaluation).
    """

    def __init__(self, fixed: int | None = None, *, cap: int = MAX_STEPS_PER_CALL,
                 seconds: float = CHUNK_SECONDS):
        self.fixed, self.cap, self.seconds = fixed, cap, seconds
        self.step_seconds: float | None = None  # the latest measured time of one step
        self.run_before: set[int] = set()  # lengths already called once (compiled)

    def limit(self) -> int:
        """The longest call now: ``fixed``, 1 while the step time is unknown, else the largest
        candidate length that lasts at most ``seconds``."""
        if self.fixed is not None:
            return self.fixed
        if self.step_seconds is None:
            return 1
        fits = max(1, int(self.seconds / self.step_seconds)) if self.step_seconds > 0 else self.cap
        n = 1
        while n * 2 <= min(fits, self.cap):
            n *= 2
        return self.cap if fits >= self.cap else n

    def length(self, left: int) -> int:
        """The next call's length, ``min(limit, left)`` (the remainder before an evaluation
        is run in one call, as with a fixed length)."""
        return max(1, min(self.limit(), left))

    def observe(self, n: int, seconds: float) -> None:
        """A call of ``n`` steps took ``seconds`` on the device; the first call of a length is
        its compilation too, and is not counted."""
        if n in self.run_before:
            self.step_seconds = seconds / n
        self.run_before.add(n)
