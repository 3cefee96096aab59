"""``fae-lab ntk RUN``: the empirical NTK of a trained run's decoder and encoder, into
``RUN/ntk.zarr`` (docs/run-store.md, "ntk.zarr").

Exit status: 0 written; 2 bad input (one line: a missing run, a step without a checkpoint,
more samples than the test split has, a run of a ladder rung without an encoder, ...);
nothing already on disk is changed by a refused command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, non_negative, positive, run_guarded
from fae_lab.errors import UsageError

METHODS = ("auto", "dense", "matrix-free")  # fae_lab.ntk.model.METHODS, without importing JAX


def build_parser(prog: str = "fae-lab ntk") -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog=prog, description=(
        "Compute the decoder's and encoder's empirical NTK (Ker_FAE = Ker_dec + Ker_enc) of a "
        "trained run on its evaluation grid, for test fields: top eigenvalues, eigenvector "
        "centroids and the rate f_n^H K f_n per |n| bin; stored in RUN/ntk.zarr."))
    p.add_argument("run", metavar="RUN", help="the run directory (its run store)")
    p.add_argument("--step", type=non_negative(int), help="the checkpoint's step (default: the latest)")
    p.add_argument("--samples", type=positive(int), default=2, help="test samples (default 2)")
    p.add_argument("--top", type=positive(int), default=16, help="eigenvalues per kernel (default 16)")
    p.add_argument("--scale", type=non_negative(int),
                   help="the scale of each test sample (default: the sharpest training scale)")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="dense Jacobian, or matrix-free K*v with Lanczos (auto: dense up to 32x32)")
    p.add_argument("--modes-per-shell", type=positive(int),
                   help="matrix-free: NTK rates from at most M random modes per |n| bin (default: every mode)")
    return p


def check_config(run: Path) -> None:
    """``RUN/config.json`` is a JSON object with a ``config`` mapping (else one-line UsageError)."""
    try:
        payload = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{run}: no readable config.json ({type(err).__name__})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise UsageError(f"{run}: config.json has no 'config' mapping; is it a run directory?")


def main(argv: Sequence[str] | None = None, prog: str = "fae-lab ntk") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        args = build_parser(prog).parse_args(argv)
        run = Path(args.run)
        if not run.is_dir():
            raise UsageError(f"RUN: no such run directory: {args.run}")
        if not (run / "config.json").is_file():
            raise UsageError(f"RUN: {args.run} has no config.json; is it a run directory?")
        check_config(run)  # before the seconds of importing JAX
        from fae_lab.ntk.run import NTKRequest, ntk_of_run

        request = NTKRequest(samples=args.samples, top=args.top, scale=args.scale, method=args.method,
                             modes_per_shell=args.modes_per_shell)
        path, step = ntk_of_run(run, request, args.step)
        print(f"{prog}: NTK at step {step} ({args.samples} samples, top {args.top}) written to {path}")
        return 0

    return run_guarded(prog, body)
