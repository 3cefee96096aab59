"""Command-line plumbing shared by every ``fae-lab`` subcommand.

Each subcommand builds its own :class:`OneLineArgumentParser` and exposes
``main(argv) -> int``. Bad input becomes one line on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

from fae_lab.errors import UsageError
from fae_lab.train.interrupt import Interrupted


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: message``.

    argparse prints the whole usage block before the error; in a log of many runs that
    hides the one line that matters, so the usage stays behind ``--help``. With
    ``raise_usage_errors`` set, an error raises :class:`UsageError` with that message instead
    of printing it and exiting (for callers inside a server).
    """

    raise_usage_errors = False

    def error(self, message: str) -> None:  # type: ignore[override]
        message = message.replace("\n", " ")
        if self.raise_usage_errors:
            raise UsageError(message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_guarded(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; a :class:`UsageError` becomes one stderr line and status 2."""
    try:
        return int(body() or 0)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Interrupted as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return err.exit_code


def parse_float_list(text: str) -> tuple[float, ...]:
    """``"0.5,1.0,2.0"`` -> ``(0.5, 1.0, 2.0)``; used as an argparse ``type``."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def parse_int_list(text: str) -> tuple[int, ...]:
    """``"2,5"`` -> ``(2, 5)``; used as an argparse ``type``."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _number(kind: type, text: str) -> float | int:
    """``kind(text)``, refusing what is not a finite number: ``inf``, ``nan`` and ``1e309``
    (which overflows to inf) would reach the optimiser or the grid as a NaN training."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argparse ``type`` accepting any finite float."""
    return _number(float, text)


def positive(kind: type) -> Callable[[str], float | int]:
    """An argparse ``type`` accepting finite numbers > 0 of ``kind``."""

    def convert(text: str):
        value = _number(kind, text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a value > 0, got {text!r}")
        return value

    convert.__name__ = f"positive {kind.__name__}"
    return convert


def non_negative(kind: type) -> Callable[[str], float | int]:
    """An argparse ``type`` accepting finite numbers >= 0 of ``kind``."""

    def convert(text: str):
        value = _number(kind, text)
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"expected a value >= 0, got {text!r}")
        return value

    convert.__name__ = f"non-negative {kind.__name__}"
    return convert


SEED_LIMIT = 2**63  # jax.random.key takes a C long


def seed(text: str) -> int:
    """An argparse ``type`` for a random seed: an integer in [0, 2^63)."""
    value = non_negative(int)(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a seed below 2^63, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse ``type`` for a fraction in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def path_text(text: str) -> str:
    """An argparse ``type`` for a path: an empty (or blank) one would mean the current
    directory, so a run would be written among whatever is there."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def main_entry(prog: str, build: Callable[[], argparse.ArgumentParser],
               run: Callable[[argparse.Namespace], int | None],
               argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with ``build()`` and call ``run``, guarding usage errors."""
    parser = build()
    args = parser.parse_args(list(argv) if argv is not None else None)
    return run_guarded(prog, lambda: run(args))
