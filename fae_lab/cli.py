"""``fae-lab``: one console script, one subcommand per job.

Each subcommand lives in its own module with a ``main(argv) -> int``; this dispatcher
imports only the one asked for, so ``fae-lab --help`` and ``fae-lab data inspect`` start
without loading JAX, and ``fae-lab serve`` and ``fae-lab report`` are the only places where the backend's
command line reaches into the dashboards (``lab``): the backend modules themselves never
import Panel or Bokeh.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fae_lab.demo", "train a baseline, an H1 and an RFF-output run on generated data"),
    "train": ("fae_lab.train.cli", "train one FAE run (every flag of the seed's train_attention.py)"),
    "phase": ("fae_lab.phase", "run the seed's experiments of phase a, b, c or combined"),
    "sweep": ("fae_lab.sweep", "train a grid of settings as members of one vmapped program"),
    "ntk": ("fae_lab.ntk.cli", "the empirical NTK of a trained run's decoder and encoder, into RUN/ntk.zarr"),
    "data": ("fae_lab.data.cli", "generate or inspect multiscale data files (.npz)"),
    "serve": ("lab.cli", "serve the live dashboards over a directory of runs"),
    "report": ("lab.report", "write a self-contained HTML report of a run or a folder of runs"),
}

# Commands that train: a SIGINT/SIGTERM is recorded from the start and honoured at the first
# point where the run can stop cleanly (fae_lab.train.interrupt).
TRAINING_COMMANDS = ("train", "phase", "sweep")

USAGE = "usage: fae-lab {" + ",".join(SUBCOMMANDS) + "} ...\n"


def _help() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [USAGE, "A diagnostic lab for spectral bias in functional autoencoders.\n", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines.append("\nRun 'fae-lab COMMAND --help' for a command's flags.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_help())
        return 0 if args else 2
    if args[0] == "--version":
        from fae_lab import __version__

        print(f"fae-lab {__version__}")
        return 0
    name = args[0]
    if name not in SUBCOMMANDS:
        choices = ", ".join(SUBCOMMANDS)
        print(f"fae-lab: error: unknown command {name!r} (choose from {choices})", file=sys.stderr)
        return 2
    if name not in TRAINING_COMMANDS:
        return int(importlib.import_module(SUBCOMMANDS[name][0]).main(args[1:]) or 0)
    from fae_lab.train import interrupt

    interrupt.record_from_start()  # before the imports below, which take seconds
    try:
        return int(importlib.import_module(SUBCOMMANDS[name][0]).main(args[1:]) or 0)
    finally:  # a command refused before its stop_on_signals block leaves no handler of ours
        interrupt.end_early_recording()


if __name__ == "__main__":
    sys.exit(main())
