"""``fae-lab data generate|inspect``: write a generated data file, or summarise one.

    fae-lab data generate --out FILE [--n-samples N] [--resolution R] [--n-scales T] [--seed S]
                          [--sigmas "0,0.01,..."] [--contrast C] [--volume-fraction F]
                          [--held-out-indices "2,5"] [--overwrite]
    fae-lab data inspect FILE

A bad flag or a file that breaks docs/data-file.md ends with one line on stderr and status 2.
NumPy only: nothing here imports JAX.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np

from fae_lab.budget import DISK, Need, generation_needs, larger_departure, refuse_if_over
from fae_lab.cli_util import (
    OneLineArgumentParser,
    finite_float,
    parse_float_list,
    parse_int_list,
    path_text,
    positive,
    run_guarded,
    seed,
)
from fae_lab.data.generate import generate_microstructures
from fae_lab.data.npz import MultiscaleData, load_npz, save_npz
from fae_lab.data.views import default_held_out, high_frequency_energy_fraction
from fae_lab.destination import check_can_create
from fae_lab.errors import UsageError

PROG = "fae-lab data"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Generate or inspect .npz data files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,inspect}")

    generate = commands.add_parser(
        "generate", help="write periodic multiscale microstructures to an .npz file",
        description="Random two-phase inclusions on the torus, filtered exactly in Fourier "
                    "space at each sigma (scale 0 unfiltered); times = sigma^2 / 2.")
    generate.add_argument("--out", type=path_text, required=True, metavar="FILE", help="the .npz file to write")
    generate.add_argument("--n-samples", type=positive(int), default=256, metavar="N")
    generate.add_argument("--resolution", type=positive(int), default=64, metavar="R",
                          help="grid size")
    generate.add_argument("--n-scales", type=positive(int), default=None, metavar="T",
                          help="T (default: the number of --sigmas, else 6)")
    generate.add_argument("--seed", type=seed, default=0, metavar="S")
    generate.add_argument("--sigmas", type=parse_float_list, default=None, metavar="LIST",
                          help="filter widths in domain lengths, 0 first, increasing "
                               "(default: 0, then geometric from 0.5/R to 1/8)")
    generate.add_argument("--contrast", type=finite_float, default=1.0, metavar="C",
                          help="value of the inclusion phase (the matrix is 0)")
    generate.add_argument("--volume-fraction", type=_open_fraction, default=0.3, metavar="F",
                          help="expected area fraction of the inclusions, in (0, 1)")
    generate.add_argument("--radius-range", type=parse_float_list, default=None, metavar="R0,R1",
                          help="inclusion radii, log-uniform, in domain lengths (default: 1.5 grid cells to 0.15)")
    generate.add_argument("--held-out-indices", type=parse_int_list, default=None, metavar="LIST",
                          help="scales to record as held out, e.g. '2,5'")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing FILE")

    inspect = commands.add_parser("inspect", help="summarise an .npz data file")
    inspect.add_argument("file", type=path_text, metavar="FILE")
    return parser


def _open_fraction(text: str) -> float:
    """An argparse ``type`` for a number in the open interval (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    body = _generate if args.command == "generate" else _inspect
    return run_guarded(PROG, lambda: body(args))


def _radius_range(values: tuple[float, ...] | None) -> tuple[float, float] | None:
    if values is not None and len(values) != 2:
        raise UsageError(f"--radius-range: expected two numbers R0,R1, got {len(values)}")
    return None if values is None else (values[0], values[1])


def _generate(args: argparse.Namespace) -> int:
    if os.path.exists(args.out) and not args.overwrite:
        raise UsageError(f"{args.out}: already exists; refusing to overwrite it (use --overwrite)")
    check_can_create(args.out, "--out", kind="file")
    n_scales = args.n_scales or (len(args.sigmas) if args.sigmas is not None else 6)
    flags = {"resolution": f"--resolution {args.resolution}", "n_samples": f"--n-samples {args.n_samples}"}
    needs = generation_needs(args.n_samples, n_scales, args.resolution, flags)
    file_bytes = 4 * args.n_samples * n_scales * args.resolution**2  # float32 fields, uncompressed
    needs.append(Need(DISK, file_bytes, "the .npz file", larger_departure(
        {"resolution": (args.resolution**2, 64**2), "n_samples": (args.n_samples, 256)}, flags)))
    refuse_if_over(needs, disk_at=os.path.dirname(os.path.abspath(args.out)))
    started = time.perf_counter()
    data = generate_microstructures(
        args.n_samples, args.resolution, n_scales, args.seed, sigmas=args.sigmas,
        contrast=args.contrast, volume_fraction=args.volume_fraction,
        held_out_indices=args.held_out_indices, radius_range=_radius_range(args.radius_range))
    save_npz(args.out, data, overwrite=args.overwrite)
    print(f"wrote {args.out}: {data.n_samples} samples x {data.n_scales} scales x "
          f"{data.resolution}^2 in {time.perf_counter() - started:.1f} s")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    print(describe(load_npz(args.file)))
    return 0


def describe(data: MultiscaleData) -> str:
    """The report of ``fae-lab data inspect``: sizes, scale ladder, held-out scales, value range,
    and per scale the share of the energy sum |u^|^2 at |n| >= R/4 (half the Nyquist)."""
    fields, resolution = data.fields, data.resolution
    share = high_frequency_energy_fraction(fields)
    lines = [
        f"file         {data.source}",
        f"samples      {data.n_samples}",
        f"scales       {data.n_scales}",
        f"resolution   {resolution}",
        f"times        {_numbers(data.times)}",
        f"sigmas       {_numbers(data.sigmas) if data.sigmas is not None else 'not given'}",
        f"held-out     {_held_out(data)}",
        f"values       min {fields.min():.6g}, max {fields.max():.6g}, "
        f"mean {fields.mean(dtype=np.float64):.6g}",
        "",
        f"{'scale':>5} {'time':>12} {'sigma':>12} {'min':>12} {'max':>12} {'mean':>12} "
        f"{'E(|n|>=' + format(resolution / 4, 'g') + ')':>14}",
    ]
    for t in range(data.n_scales):
        scale = fields[:, t]
        sigma = f"{data.sigmas[t]:.6g}" if data.sigmas is not None else "-"
        lines.append(f"{t:>5} {data.times[t]:>12.6g} {sigma:>12} {scale.min():>12.6g} "
                     f"{scale.max():>12.6g} {scale.mean(dtype=np.float64):>12.6g} "
                     f"{share[t]:>14.6g}")
    lines.append("E(|n|>=R/4): share of sum |u^(n)|^2 (all samples) at |n| >= R/4, u^ = fft2(u)/R^2")
    return "\n".join(lines)


def _held_out(data: MultiscaleData) -> str:
    if data.held_out_indices is None:
        default = default_held_out(data.n_scales)
        shown = _numbers(default) if default else "none"
        return f"not in the file (multi-scale default: {shown})"
    if not data.held_out_indices:
        return "none (the file holds out no scale)"
    return f"{_numbers(data.held_out_indices)} (from the file)"


def _numbers(values) -> str:
    return ", ".join(f"{v:.6g}" for v in np.asarray(values).tolist())
