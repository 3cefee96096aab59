"""``fae-lab phase a|b|c|combined``: the seed's experiments of one phase, then a ranked table.

Every run of the phase (sweeps included, a multi-scale baseline first) trains under one
directory, ``RUNS/<experiment>``. Runs that already finished there are reused, so a phase
can be extended or re-ranked without retraining. The table ranks by test relative MSE and
shows the high-band error and the error of the sharpest scale (index 0), the two numbers
that say whether blur went away; it is printed and written to ``RUNS/ranking.csv``, with each
run's training-split relative MSE beside its test one (the generalisation gap).

Phase a also runs the bottleneck ladder (:mod:`fae_lab.ladder`): the decoder alone on single
training samples, an auto-decoder and the FAE (the baseline), on the same data, decoder and
steps; their training-split error and resolved bandwidth, bottom rung first, are printed and
written to ``RUNS/ladder.csv``.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, path_text, positive, run_guarded
from fae_lab.config import RunConfig
from fae_lab.destination import check_can_create
from fae_lab.experiments import PHASES, Experiment, phase_experiments
from fae_lab.ladder import LADDER_COLUMNS, ladder_rows, train_resolved
from fae_lab.store import open_run
from fae_lab.store.layout import CONFIG_FILE
from fae_lab.train import interrupt
from fae_lab.train.args import parse_run_config

COLUMNS = (
    "rank", "run", "status", "loss_type", "decoder_type", "step",
    "test_rel_mse", "high_freq_mse", "high_freq_error_ratio", "sharpest_scale_mse",
    "rung", "train_rel_mse", "train_resolved_k_50", "train_resolved_k_90",
)

LADDER_HELP = ("Phase a also runs the bottleneck ladder on the baseline's data, decoder and steps: "
               "the decoder alone (--rung decoder_alone) on training samples 0, 1 and 2, an auto-decoder "
               "(--rung auto_decoder: one free latent per training field, no encoder) and the full FAE (the "
               "baseline); their training-split error and resolved bandwidth go to RUNS/ladder.csv, bottom "
               "rung first. A rung resolving far more than the next one names the bottleneck.")


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog="fae-lab phase", description=__doc__.splitlines()[0] + " " + LADDER_HELP)
    p.add_argument("phase", choices=PHASES)
    p.add_argument("--runs", type=path_text, help="directory of the phase's runs (default runs/phase_<phase>)")
    p.add_argument("--data-path", type=path_text, help=".npz data file (default: generated data)")
    p.add_argument("--max-steps", type=positive(int), help="steps of every run (the seed's is 50,000)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already exist")
    p.add_argument("--quiet", action="store_true")
    p.epilog = "Further `fae-lab train` flags for every run go after --, e.g. -- --batch-size 16"
    return p


def split_train_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[own flags] -- [train flags]`` -> the two lists."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def plan(experiments: Sequence[Experiment], runs: Path, data_path: str | None, max_steps: int | None,
         extra: Sequence[str], overwrite: bool) -> list[tuple[str, RunConfig, list[str]]]:
    """Each experiment's validated config and command line (nothing trained, nothing written)."""
    planned = []
    for exp in experiments:
        argv = list(exp.argv)
        if data_path:
            argv += ["--data-path", data_path]
        if max_steps:
            argv += ["--max-steps", str(max_steps)]
        argv += [*extra, "--output-dir", str(runs / exp.name), "--wandb-name", exp.name]
        if overwrite:
            argv.append("--overwrite")
        planned.append((exp.name, parse_run_config(argv), argv))
    return planned


def read_final(run_dir: Path) -> dict | None:
    """``final.json`` of the run in ``run_dir`` through the store's reader; None if there is no
    run there or it has not ended. A run that cannot be read is a :class:`UsageError`."""
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    return open_run(run_dir).final


def ranking(rows: list[dict]) -> list[dict]:
    """Rows sorted by test relative MSE (runs without one last), numbered from 1."""

    def key(row):
        value = row.get("test_rel_mse")
        return (value is None or not math.isfinite(value), value if value is not None else 0.0)

    ordered = sorted(rows, key=key)
    for i, row in enumerate(ordered, 1):
        row["rank"] = i
    return ordered


def summary_row(name: str, config: RunConfig, final: dict | None) -> dict:
    final = final or {}
    sharpest = final.get("final/train_time_mse_t0", final.get("final/held_out_mse_t0"))
    return {
        "run": name,
        "status": final.get("final/status", "missing"),
        "loss_type": config.loss.loss_type,
        "decoder_type": config.model.decoder_type + (
            f"/{config.model.rff_location}" if config.model.decoder_type == "rff_output" else ""),
        "step": final.get("final/step"),
        "test_rel_mse": final.get("final/test_rel_mse"),
        "high_freq_mse": final.get("final/spectral/high_freq_mse"),
        "high_freq_error_ratio": final.get("final/spectral/high_freq_error_ratio"),
        "sharpest_scale_mse": sharpest,
        "rung": config.model.rung,
        "train_rel_mse": final.get("final/train_rel_mse"),
        "train_resolved_k_50": train_resolved(final, 0.5),
        "train_resolved_k_90": train_resolved(final, 0.9),
    }


def format_table(rows: list[dict], columns: Sequence[str] = COLUMNS) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3e}"
        return "-" if v is None else str(v)

    table = [tuple(columns), *[[cell(r.get(c)) for c in columns] for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table)


def run_series(experiments: Sequence[Experiment], runs: Path, *, data_path=None, max_steps=None,
               extra=(), overwrite=False, quiet=False, vmapped=True) -> list[dict]:
    """Train each experiment under ``runs`` (reusing finished runs), rank, write ranking.csv.

    Experiments that share a training program (same shapes and loss type, different values:
    a sweep over p, beta, seeds ...) train together as members of one vmapped program
    unless ``vmapped`` is False.
    """
    planned = plan(experiments, runs, data_path, max_steps, extra, overwrite)
    from fae_lab.train.run import check_output_dir, program_key, train_group

    finals: dict[str, dict | None] = {}
    groups: dict[tuple, list[tuple[str, RunConfig, list[str]]]] = {}
    for name, config, argv in planned:
        run_dir = Path(config.output_dir)
        finals[name] = None if overwrite else read_final(run_dir)
        if finals[name] is not None:
            if not quiet:
                print(f"== {name}: reusing the finished run in {run_dir}", file=sys.stderr)
            continue
        check_output_dir(config)  # refuse an unfinished run before any group trains
        key = program_key(config) if vmapped else (name,)
        groups.setdefault(key, []).append((name, config, argv))
    for group in groups.values():
        if not quiet:
            for name, _, argv in group:
                print(f"== {name}: fae-lab train {' '.join(argv)}", file=sys.stderr)
            if len(group) > 1:
                print(f"== training {len(group)} runs as one vmapped program", file=sys.stderr)
        results = train_group([c for _, c, _ in group], [["fae-lab", "train", *a] for _, _, a in group],
                              quiet=quiet, labels=[n for n, _, _ in group])
        for (name, _, _), result in zip(group, results, strict=True):
            finals[name] = result.final
        signum = interrupt.requested()
        if signum is not None:  # the group stopped at a checkpoint; later groups do not start
            raise interrupt.Interrupted(f"interrupted by {interrupt.signal_name(signum)}; the runs in {runs} "
                                        "continue with --resume", signum)
    rows = [summary_row(name, config, finals[name]) for name, config, _ in planned]
    ordered = ranking(rows)
    runs.mkdir(parents=True, exist_ok=True)
    with open(runs / "ranking.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ordered)
    members = ladder_members(experiments)
    for row in ordered:
        row["ladder"] = row["run"] in members
    if members:
        with open(runs / "ladder.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LADDER_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(ladder_rows([r for r in ordered if r["ladder"]]))
    return ordered


def ladder_members(experiments: Sequence[Experiment]) -> set[str]:
    """The runs of a series that form its ladder: every rung's run and the FAE baseline
    (none when the series has no rung below the FAE)."""
    if not any(e.rung != "fae" for e in experiments):
        return set()
    return {e.name for e in experiments if e.rung != "fae" or e.name == "baseline_multi_scale"}


def print_ranking(rows: list[dict], runs: Path) -> None:
    """The ranked table (and the ladder's, when the series has one), where they were written
    and how to look at the runs."""
    print(format_table(rows))
    ladder = ladder_rows([r for r in rows if r.get("ladder")])
    if ladder:
        print("\nbottleneck ladder (training split, bottom rung first):")
        print(format_table(ladder, LADDER_COLUMNS))
        print(f"ladder written to {runs / 'ladder.csv'}")
    print(f"\nranking written to {runs / 'ranking.csv'}; look at the runs with: fae-lab serve --runs {runs}")


def main(argv: Sequence[str] | None = None) -> int:
    own, train_flags = split_train_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)

    def body() -> int:
        runs = Path(args.runs or f"runs/phase_{args.phase}")
        check_can_create(runs, "--runs")
        rows = run_series(phase_experiments(args.phase), runs, data_path=args.data_path, max_steps=args.max_steps,
                         extra=train_flags, overwrite=args.overwrite, quiet=args.quiet)
        print_ranking(rows, runs)
        return 0

    with interrupt.stop_on_signals():
        return run_guarded("fae-lab phase", body)
