"""``fae-lab sweep``: a grid of settings trained as members of one vmapped program.

    fae-lab sweep --runs runs/p_sweep --grid freq-weight-power=0.5,1,2 --grid seed=0,1 \\
        -- --loss-type fourier_weighted --max-steps 20000

Every combination of the ``--grid`` values is a run of its own (``RUNS/<name>``, a full run
store) and the runs that share a program (seeds, beta, lambda_grad, p, learning rate,
Fourier sigmas ...) train together under ``jax.vmap``; a setting that changes shapes (say
``rff-dim``) makes one compiled group per value. With several local devices the members are
spread over them. ``--seeds N`` trains N seeds of every combination (``RUNS/<name>_s<i>``),
vmapped with the rest. The ranked table of ``fae-lab phase`` (:mod:`fae_lab.ranking`, the
first combination as the baseline) closes the sweep.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, path_text, positive, run_guarded
from fae_lab.destination import check_can_create
from fae_lab.errors import UsageError
from fae_lab.experiments import Experiment
from fae_lab.phase import print_ranking, run_series, split_train_flags
from fae_lab.train import interrupt
from fae_lab.train.args import SETTINGS


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["seed=0,1", "beta=1e-3,1e-4"]`` -> ``[("seed", ["0","1"]), ("beta", [...])]``."""
    axes = []
    for item in items:
        name, sep, values = item.partition("=")
        flag = name.strip().lstrip("-").replace("_", "-")  # beta_max or beta-max: the flag's spelling
        if not sep or not values.strip():
            raise UsageError(f"--grid: expected NAME=V1,V2,..., got {item!r}")
        if flag.replace("-", "_") not in SETTINGS or flag in ("output-dir", "resume", "overwrite"):
            raise UsageError(f"--grid: {flag!r} is not a `fae-lab train` setting that can be swept")
        separator = ";" if ";" in values else ","
        members = [v.strip() for v in values.split(separator) if v.strip()]
        repeated = next((v for v in members if members.count(v) > 1), None)
        if repeated is not None:
            raise UsageError(_repeated_value(flag, values, separator, repeated, members.count(repeated)))
        axes.append((flag, members))
    return axes


def _repeated_value(flag: str, values: str, separator: str, value: str, times: int) -> str:
    """The one-line refusal of a grid axis that names a value twice (two members would be the
    same run, in the same folder). With ',' as the separator the likely cause is a list value
    (``decoder-hidden=256,256,256``) split into its items: say so, with the ``;`` form."""
    text = f"--grid {flag}={values}: the value {value!r} is given {times} times"
    if separator == ";":
        return text + "; give each value once"
    return (text + f"; ',' separates the grid's values, so this is {times} runs of {flag} {value}: "
            f"for one list value end it with ';' ({flag}={values};), and separate several list "
            f"values with ';' ({flag}={values};128,128)")


def grid_experiments(axes: list[tuple[str, list[str]]]) -> list[Experiment]:
    experiments = []
    for combo in itertools.product(*[values for _, values in axes]):
        argv: list[str] = []
        parts = []
        for (flag, _), value in zip(axes, combo, strict=True):
            argv += [f"--{flag}", value]
            parts.append(f"{flag.replace('-', '_')}={value}")
        experiments.append(Experiment("_".join(parts) or "run", "sweep", tuple(argv), "sweep member"))
    return experiments


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog="fae-lab sweep", description=__doc__.splitlines()[0],
                              epilog="Flags for every member go after --, e.g. -- --max-steps 5000")
    p.add_argument("--runs", type=path_text, required=True, help="directory of the sweep's runs")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a train setting and its values (repeat for a grid; ';' separates values "
                   "that contain commas, e.g. rff-multiscale-sigmas=1,2;2,4)")
    p.add_argument("--seeds", type=positive(int), default=1,
                   help="train N seeds of every combination (RUNS/<name>_s<i>, vmapped with the "
                   "rest) and rank by their mean and spread")
    p.add_argument("--sequential", action="store_true",
                   help="train the members one after another instead of vmapped (for comparison)")
    p.add_argument("--overwrite", action="store_true", help="retrain members that already exist")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    own, train_flags = split_train_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)

    def body() -> int:
        if not args.grid:
            raise UsageError("--grid: give at least one NAME=V1,V2,...")
        axes = parse_grid(args.grid)
        if args.seeds > 1 and any(flag == "seed" for flag, _ in axes):
            raise UsageError("--seeds: the grid already sweeps seed; give one or the other")
        experiments = grid_experiments(axes)
        runs = Path(args.runs)
        check_can_create(runs, "--runs")
        rows = run_series(experiments, runs, extra=train_flags, overwrite=args.overwrite,
                          quiet=args.quiet, vmapped=not args.sequential, seeds=args.seeds)
        print_ranking(rows, runs)
        return 0

    with interrupt.stop_on_signals():
        return run_guarded("fae-lab sweep", body)
