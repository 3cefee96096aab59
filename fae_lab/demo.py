"""``fae-lab demo``: the lab's main job in a few CPU minutes, on generated data.

Trains three runs on built-in multiscale microstructures (no file needed): the baseline FAE
(l2 loss, standard decoder), the seed's H1 loss (Phase B) and the RFF-output decoder
(Phase C), ranks them like ``fae-lab phase`` does, and says where the runs are and how to
look at them. Finished runs are reused when the demo is run again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, positive, run_guarded
from fae_lab.experiments import Experiment

# Small enough for a 2-core CPU, large enough that the sharp scale has real high-frequency
# content above the half-Nyquist cutoff (R / 4 = 8 cycles on a 32 x 32 grid).
DEMO_DATA = ("--generate-n-samples", "64", "--generate-resolution", "32", "--generate-n-scales", "4")
DEMO_TRAINING = ("--batch-size", "16", "--eval-every", "100", "--log-every", "10",
                 "--steps-per-call", "25", "--learning-rate", "2e-3", "--lr-decay-steps", "200",
                 "--pooling-type", "mean", "--n-reconstruction-samples", "4")

DEMO_EXPERIMENTS = [
    Experiment("baseline", "demo", ("--loss-type", "l2", "--decoder-type", "standard"),
               "the reference FAE: where does the error sit in frequency?"),
    Experiment("h1", "demo", ("--loss-type", "h1", "--lambda-grad", "0.5"),
               "Phase B: does the H1 loss make the high band fall faster?"),
    Experiment("rff_output", "demo", ("--decoder-type", "rff_output", "--rff-dim", "256"),
               "Phase C: random Fourier features at the decoder's penultimate layer"),
]


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog="fae-lab demo", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/demo", help="directory for the demo's runs (default runs/demo)")
    p.add_argument("--max-steps", type=positive(int), default=600, help="steps per run (default 600)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already exist")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> int:
        from fae_lab.phase import format_table, run_series

        runs = Path(args.runs)
        print(f"fae-lab demo: 3 runs x {args.max_steps} steps on generated 32x32 microstructures "
              f"(4 scales) -> {runs}", file=sys.stderr)
        rows = run_series(DEMO_EXPERIMENTS, runs, max_steps=args.max_steps,
                          extra=(*DEMO_DATA, *DEMO_TRAINING), overwrite=args.overwrite, quiet=args.quiet)
        print(format_table(rows))
        print(f"\nruns: {runs.resolve()}  (ranking: {runs / 'ranking.csv'})")
        print(f"look at them live:  fae-lab serve --runs {runs}")
        print(f"or in Python:       xarray.open_zarr('{runs / 'baseline' / 'metrics.zarr'}')")
        return 0

    return run_guarded("fae-lab demo", body)
