"""``fae-lab phase a|b|c|combined``: the seed's experiments of one phase, then a ranked table.

Every run of the phase (sweeps included, a multi-scale baseline first) trains under one
directory, ``RUNS/<experiment>`` (with ``--seeds N``: ``RUNS/<experiment>_s<i>``, i < N, trained
as members of one vmapped program). Runs that already finished there are reused, so a phase
can be extended or re-ranked without retraining. The table (:mod:`fae_lab.ranking`) ranks
the experiments by mean test relative MSE over their seeds and shows the spread, whether a
difference is larger than the seeds' spread, the high-band error, the resolved bandwidth, the
generalisation gap and the error of the sharpest scale (index 0); it is printed and written
to ``RUNS/ranking.csv``; the HTML report of the runs goes to ``RUNS/report.html``.

Phase a also runs the bottleneck ladder (:mod:`fae_lab.ladder`): the decoder alone on single
training samples, an auto-decoder and the FAE (the baseline), on the same data, decoder and
steps; their training-split error and resolved bandwidth, bottom rung first, are printed and
written to ``RUNS/ladder.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, path_text, positive, run_guarded
from fae_lab.config import RunConfig
from fae_lab.destination import check_can_create
from fae_lab.errors import UsageError
from fae_lab.experiments import PHASES, Experiment, phase_experiments
from fae_lab.ladder import LADDER_PRINTED, ladder_rows, write_ladder_csv
from fae_lab.ranking import experiment_row, format_table, rank, read_final, run_summary, write_csv
from fae_lab.runs_report import write_runs_report
from fae_lab.store.layout import PROGRESS_FILE
from fae_lab.train import interrupt
from fae_lab.train.args import parse_run_config

__all__ = ["PhaseProgress", "format_table", "main", "plan", "print_ranking", "run_phase", "run_series",
           "seed_run_name", "split_train_flags"]

LADDER_HELP = ("Phase a also runs the bottleneck ladder on the baseline's data, decoder and steps: "
               "the decoder alone (--rung decoder_alone) on training samples 0, 1 and 2, an auto-decoder "
               "(--rung auto_decoder: one free latent per training field, no encoder) and the full FAE (the "
               "baseline); their training-split error and resolved bandwidth go to RUNS/ladder.csv, bottom "
               "rung first. A rung resolving far more than the next one names the bottleneck.")


# Generated data of a phase (no --data-path): enough samples that the baseline's test error
# does not rise over the seed's 50,000 steps (256, the trainer's default, overfits within
# 10,000 on a GPU: benchmarks/RESULTS.md, "Phase defaults"). A later --generate-n-samples
# after `--` wins.
PHASE_GENERATED_SAMPLES = 4096


def experiment_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated experiment names")
    return names


def select(experiments: Sequence[Experiment], only: Sequence[str] | None) -> list[Experiment]:
    """The baseline (the first experiment) and those named in ``only``; every name must be one
    of the phase's (:class:`UsageError` naming the unknown one and the choices)."""
    if not only:
        return list(experiments)
    known = [e.name for e in experiments]
    for name in only:
        if name not in known:
            raise UsageError(f"--only: no experiment {name!r} in this phase (choose from {', '.join(known)})")
    return [e for i, e in enumerate(experiments) if i == 0 or e.name in only]


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog="fae-lab phase", description=__doc__.splitlines()[0] + " " + LADDER_HELP)
    p.add_argument("phase", choices=PHASES)
    p.add_argument("--runs", type=path_text, help="directory of the phase's runs (default runs/phase_<phase>)")
    p.add_argument("--data-path", type=path_text, help=".npz data file (default: generated data)")
    p.add_argument("--max-steps", type=positive(int), help="steps of every run (the seed's is 50,000)")
    p.add_argument("--seeds", type=positive(int), default=1,
                   help="train N seeds of each experiment (vmapped members, RUNS/<experiment>_s<i>) "
                   "and rank by their mean and spread (default 1: RUNS/<experiment>)")
    p.add_argument("--only", type=experiment_names,
                   help="train and rank only these experiments of the phase (comma-separated names, "
                   "as in ranking.csv), next to the baseline, which is always kept")
    p.add_argument("--parallel-groups", type=positive(int), default=1, metavar="N",
                   help="train up to N groups (vmapped programs) at once, each in its own process on "
                   "its own GPU (CUDA_VISIBLE_DEVICES: the i-th of yours, or i); default 1: one after another")
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


def seed_run_name(experiment: str, seed_index: int, seeds: int) -> str:
    """Folder of one seed of an experiment: ``<experiment>`` with one seed (as before seeds
    existed, so single-seed runs are reused), ``<experiment>_s<i>`` for i = 0 .. N-1 with N > 1."""
    return experiment if seeds == 1 else f"{experiment}_s{seed_index}"


def plan(experiments: Sequence[Experiment], runs: Path, data_path: str | None, max_steps: int | None,
         extra: Sequence[str], overwrite: bool, seeds: int = 1) -> list[tuple[str, RunConfig, list[str]]]:
    """Each run's name, validated config and command line (nothing trained, nothing written).

    With ``seeds`` = N > 1 each experiment becomes N runs (:func:`seed_run_name`) whose
    ``--seed`` is the experiment's own seed (0 unless given) plus 0 .. N-1, appended last so it
    wins over a ``--seed`` among ``extra``. Seeds change only the initialisation and batch
    keys, so an experiment's seeds train as members of one vmapped program.
    """
    planned = []
    for exp in experiments:
        argv = list(exp.argv)
        if data_path:
            argv += ["--data-path", data_path]
        if max_steps:
            argv += ["--max-steps", str(max_steps)]
        argv += list(extra)
        if overwrite:
            argv.append("--overwrite")
        base_seed = parse_run_config(argv).seed if seeds > 1 else 0
        for i in range(seeds):
            name = seed_run_name(exp.name, i, seeds)
            run_argv = [*argv, "--output-dir", str(runs / name), "--wandb-name", name]
            if seeds > 1:
                run_argv += ["--seed", str(base_seed + i)]
            planned.append((name, parse_run_config(run_argv), run_argv))
    return planned


@dataclasses.dataclass(frozen=True)
class PhaseProgress:
    """Where the training of a series stands, for a caller's progress bar.

    ``step`` of ``total`` counts group steps: a vmapped group of M runs with S steps adds S
    to ``total`` (its members advance together) and reports its own step, so a resumed group
    starts at its checkpoint's step; finished runs that are reused add nothing. ``group`` is
    the 0-based index of the group training now, of ``n_groups`` (``group == n_groups`` and
    ``runs == ()`` once every group has ended), and ``runs`` its runs' names.
    """

    step: int
    total: int
    group: int
    n_groups: int
    runs: tuple[str, ...]

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


ProgressCallback = Callable[[PhaseProgress], None]


def run_series(experiments: Sequence[Experiment], runs: Path, *, data_path=None, max_steps=None,
               extra=(), overwrite=False, quiet=False, vmapped=True, seeds: int = 1,
               progress: ProgressCallback | None = None, parallel_groups: int = 1) -> list[dict]:
    """Train each experiment's ``seeds`` runs under ``runs`` (reusing finished runs), rank the
    experiments (:mod:`fae_lab.ranking`, baseline = the first experiment), write ranking.csv.

    Runs that share a training program (same shapes and loss type, different values: a sweep
    over p, beta, seeds ...) train together as members of one vmapped program unless
    ``vmapped`` is False. ``progress`` is called with a :class:`PhaseProgress` as every group
    advances (from the training thread). With ``parallel_groups`` = N > 1 the groups train in
    child processes, up to N at once, one GPU each, the most members x steps first
    (:mod:`fae_lab.phase_parallel`; ``progress``
    is then called only at the end).
    """
    planned = plan(experiments, runs, data_path, max_steps, extra, overwrite, seeds)
    from fae_lab.train.run import check_output_dir, program_key, train_group

    groups: dict[tuple, list[tuple[str, RunConfig, list[str]]]] = {}
    for name, config, argv in planned:
        run_dir = Path(config.output_dir)
        if not overwrite and read_final(run_dir) is not None:
            if not quiet:
                print(f"== {name}: reusing the finished run in {run_dir}", file=sys.stderr)
            continue
        if not overwrite and (run_dir / PROGRESS_FILE).exists():
            # Stopped before it finished (a signal, a time limit): continue it from its last
            # checkpoint (or from step 0 if it has none), so rerunning a phase resumes it.
            config, argv = dataclasses.replace(config, resume=True), [*argv, "--resume"]
        check_output_dir(config)  # refuse a run that cannot be continued before any group trains
        key = (program_key(config), config.resume) if vmapped else (name,)
        groups.setdefault(key, []).append((name, config, argv))
    totals = [group[0][1].max_steps for group in groups.values()]
    if parallel_groups > 1 and len(groups) > 1:
        from fae_lab.phase_parallel import train_groups_in_parallel

        # Members x steps: the members of a group advance together, one program step each.
        costs = [len(g) * g[0][1].max_steps for g in groups.values()]
        for failure in train_groups_in_parallel([[(n, a) for n, _, a in g] for g in groups.values()],
                                                parallel_groups, quiet=quiet, costs=costs):
            print(f"fae-lab phase: {failure}", file=sys.stderr)
        groups = {}  # trained
    for index, group in enumerate(groups.values()):
        on_step = None
        if progress is not None:
            def on_step(step, index=index, names=tuple(n for n, _, _ in group)):
                progress(PhaseProgress(sum(totals[:index]) + step, sum(totals), index, len(totals), names))
        if not quiet:
            for name, _, argv in group:
                print(f"== {name}: fae-lab train {' '.join(argv)}", file=sys.stderr)
            if len(group) > 1:
                print(f"== training {len(group)} runs as one vmapped program", file=sys.stderr)
        train_group([c for _, c, _ in group], [["fae-lab", "train", *a] for _, _, a in group],
                    quiet=quiet, labels=[n for n, _, _ in group], on_step=on_step)
        signum = interrupt.requested()
        if signum is not None:  # the group stopped at a checkpoint; later groups do not start
            raise interrupt.Interrupted(f"interrupted by {interrupt.signal_name(signum)}; the same command "
                                        f"continues the runs in {runs}", signum)
    if progress is not None:
        progress(PhaseProgress(sum(totals), sum(totals), len(totals), len(totals), ()))
    configs = {name: config for name, config, _ in planned}
    members = ladder_members(experiments)
    rows = []
    for exp in experiments:
        names = [seed_run_name(exp.name, i, seeds) for i in range(seeds)]
        config = configs[names[0]]
        decoder = config.model.decoder_type + (
            f"/{config.model.rff_location}" if config.model.decoder_type == "rff_output" else "")
        summaries = [run_summary(Path(configs[n].output_dir)) for n in names]
        row = experiment_row(exp.name, names, summaries, config.loss.loss_type, decoder)
        row.update(rung=config.model.rung, ladder=exp.name in members)
        rows.append(row)
    ordered = rank(rows, baseline=experiments[0].name if experiments else None)
    runs.mkdir(parents=True, exist_ok=True)
    write_csv(ordered, runs / "ranking.csv")
    if members:
        write_ladder_csv(ladder_rows([r for r in ordered if r["ladder"]]), runs / "ladder.csv")
    return ordered


def ladder_members(experiments: Sequence[Experiment]) -> set[str]:
    """The runs of a series that form its ladder: every rung's run and the FAE baseline
    (none when the series has no rung below the FAE)."""
    if not any(e.rung != "fae" for e in experiments):
        return set()
    return {e.name for e in experiments if e.rung != "fae" or e.name == "baseline_multi_scale"}


def print_ranking(rows: list[dict], runs: Path) -> None:
    """The ranked table (and the ladder's, when the series has one), where they were written
    and how to look at the runs; then the HTML report of the runs (RUNS/report.html)."""
    print(format_table(rows))
    ladder = ladder_rows([r for r in rows if r.get("ladder")])
    if ladder:
        print("\nbottleneck ladder (training split, bottom rung first):")
        print(format_table(ladder, LADDER_PRINTED))
        print(f"ladder written to {runs / 'ladder.csv'}")
    print(f"\nranking written to {runs / 'ranking.csv'}; look at the runs with: fae-lab serve --runs {runs}")
    write_runs_report(runs, "fae-lab phase")


def run_phase(phase: str, runs: str | Path, *, data_path: str | None = None, max_steps: int | None = None,
              seeds: int = 1, only: Sequence[str] | None = None, extra: Sequence[str] = (),
              overwrite: bool = False, quiet: bool = False,
              progress: ProgressCallback | None = None, parallel_groups: int = 1) -> list[dict]:
    """Train the runs of one phase (``"a"``, ``"b"``, ``"c"`` or ``"combined"``) under ``runs``
    and return its ranked rows: ``fae-lab phase`` without the printing, for notebooks and scripts.

    The arguments are the command's: ``only`` keeps these experiments next to the baseline,
    ``seeds`` trains N seeds of each, ``extra`` holds further ``fae-lab train`` flags for every
    run (on generated data the phase's :data:`PHASE_GENERATED_SAMPLES` come first, so an
    ``--generate-n-samples`` among them wins). The rows are :func:`fae_lab.ranking.rank`'s (one per
    experiment, mean and seed spread of each statistic, ``vs_baseline`` / ``vs_above`` marks,
    ``rung`` and ``ladder``); ``ranking.csv`` (and phase a's ``ladder.csv``) are written under
    ``runs``. ``progress`` receives a :class:`PhaseProgress` as training advances. A bad
    argument raises :class:`UsageError` before anything is written.
    """
    if phase not in PHASES:
        raise UsageError(f"phase: no phase {phase!r} (choose from {', '.join(PHASES)})")
    runs = Path(runs)
    check_can_create(runs, "--runs")
    experiments = select(phase_experiments(phase), only)
    extra = list(extra)
    if not data_path:
        extra[:0] = ["--generate-n-samples", str(PHASE_GENERATED_SAMPLES)]
    return run_series(experiments, runs, data_path=data_path, max_steps=max_steps, extra=extra,
                      overwrite=overwrite, quiet=quiet, seeds=seeds, progress=progress,
                      parallel_groups=parallel_groups)


def main(argv: Sequence[str] | None = None) -> int:
    own, train_flags = split_train_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)

    def body() -> int:
        runs = Path(args.runs or f"runs/phase_{args.phase}")
        rows = run_phase(args.phase, runs, data_path=args.data_path, max_steps=args.max_steps,
                         seeds=args.seeds, only=args.only, extra=train_flags, overwrite=args.overwrite,
                         quiet=args.quiet, parallel_groups=args.parallel_groups)
        print_ranking(rows, runs)
        return 0

    with interrupt.stop_on_signals():
        return run_guarded("fae-lab phase", body)
