"""``fae-lab demo``: the lab's main job in a few CPU minutes, on generated data.

Trains three runs on generated multiscale microstructures (written to RUNS/data.npz): the
baseline FAE (l2 loss, standard decoder), the seed's H1 loss (Phase B) and the RFF-output
decoder (Phase C), ranks them like ``fae-lab phase`` does, and says where the runs are and how to
look at them (and writes their HTML report, RUNS/report.html). Finished runs are reused when
the demo is run again.

Why these settings (the measurements are in benchmarks/archive/demo_science.md): on the default
generator at 32 x 32 a few hundred CPU steps learn only the mean field in every run, whatever
the coordinate features, so nothing spectral shows. Here the data are 1024 samples on a 16 x 16
grid, 4 scales, holding about one large inclusion each (radius 0.15-0.25, Poisson mean 0.86).
The reference FAE (16 Gaussian coordinate frequencies of sigma = 1, mean pooling) learns most
of their coarse shape within the demo's 1200 steps at batch 16 and learning rate 5e-3, the
budget that keeps the three runs within a few CPU minutes (a step costs about its batch: every
sample is decoded on the full grid, which the H1 loss needs). The H1 run uses the spectral form
(central differences barely weight |n| > R/4 = 4) and the RFF sigma is 0.5 per unit rms of the
hidden activations (the same features as the 0.05 of the unscaled form). Then the baseline's
low band falls far more than its high band (|n| >= 4), which stays flat near the target's own
high-band power: at this budget the decoder learns most of the coarse shape and nothing yet of
the edges. The baseline's test error does not rise over training (the defaults generalise at
this budget). The H1 run ends with a lower test error than the baseline, by more than a second
seed moves either, and with its high band a little lower, by about what a second seed moves
H1's; the RFF run follows the baseline's high band and ends a little above it overall.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, main_entry, path_text, positive
from fae_lab.destination import check_can_create
from fae_lab.experiments import Experiment
from fae_lab.runs_report import write_runs_report

# Arguments of fae_lab.data.generate.generate_microstructures: few, large inclusions, so that
# the coarse shape is learnt within the demo and what is left is the edge (the high band).
DEMO_DATA = {"n_samples": 1024, "resolution": 16, "n_scales": 4, "seed": 0,
             "volume_fraction": 0.1, "radius_range": (0.15, 0.25)}
# Batch 16 and 1200 steps: a step's CPU time is about proportional to the batch (every sample
# is decoded on the full grid, which the H1 loss needs), and this is what fits the demo's
# CPU budget (benchmarks/archive/demo_science.md, section 6). The learning rate decays x0.98
# every 160 steps, 7.5 times over the run as before. An evaluation batch of 41 splits the 205
# test samples (and the 205 evaluated training samples) into whole batches: no padding is
# decoded.
DEMO_TRAINING = ("--batch-size", "16", "--learning-rate", "5e-3", "--lr-decay-steps", "160",
                 "--eval-every", "200", "--log-every", "50", "--steps-per-call", "25",
                 "--eval-batch-size", "41", "--pooling-type", "mean", "--n-reconstruction-samples", "4")
DEMO_STEPS = 1200

DEMO_EXPERIMENTS = [
    Experiment("baseline", "demo", ("--loss-type", "l2", "--decoder-type", "standard"),
               "the reference FAE: where does the error sit in frequency?"),
    Experiment("h1", "demo", ("--loss-type", "h1", "--h1-form", "spectral", "--lambda-grad", "1"),
               "Phase B: does the H1 loss make the high band fall faster?"),
    Experiment("rff_output", "demo", ("--decoder-type", "rff_output", "--rff-dim", "256",
                                      "--rff-sigma", "0.5"),
               "Phase C: random Fourier features at the decoder's penultimate layer"),
]


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog="fae-lab demo", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=path_text, default="runs/demo", help="directory for the demo's runs (default runs/demo)")
    p.add_argument("--max-steps", type=positive(int), default=DEMO_STEPS,
                   help=f"steps per run (default {DEMO_STEPS})")
    p.add_argument("--overwrite", action="store_true", help="retrain runs (and regenerate the data) that exist")
    p.add_argument("--quiet", action="store_true")
    return p


def write_demo_data(path: Path, overwrite: bool) -> None:
    """Generate the demo's fields ``(1024, 4, 16, 16)`` into ``path`` unless it is already there."""
    if path.is_file() and not overwrite:
        return
    from fae_lab.data.generate import generate_microstructures
    from fae_lab.data.npz import save_npz

    save_npz(path, generate_microstructures(**DEMO_DATA), overwrite=True)


def run(args) -> int:
    from fae_lab.phase import format_table, run_series

    runs = Path(args.runs)
    check_can_create(runs, "--runs")
    data = runs / "data.npz"
    r = DEMO_DATA["resolution"]
    print(f"fae-lab demo: 3 runs x {args.max_steps} steps on {DEMO_DATA['n_samples']} generated "
          f"{r}x{r} microstructures ({DEMO_DATA['n_scales']} scales, {data}) -> {runs}", file=sys.stderr)
    write_demo_data(data, args.overwrite)
    rows = run_series(DEMO_EXPERIMENTS, runs, data_path=str(data), max_steps=args.max_steps,
                      extra=DEMO_TRAINING, overwrite=args.overwrite, quiet=args.quiet)
    print(format_table(rows))
    print(f"\nruns: {runs.resolve()}  (ranking: {runs / 'ranking.csv'})")
    print(f"look at them live:  fae-lab serve --runs {runs}")
    print(f"or in Python:       xarray.open_zarr('{runs / 'baseline' / 'metrics.zarr'}')")
    write_runs_report(runs, "fae-lab demo")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry("fae-lab demo", build_parser, run, argv)
