"""CPU timings of ``fae-lab demo`` and of the reference FAE at 64 x 64; prints one JSON object.

- ``demo``: ``fae-lab demo`` into a fresh run directory, wall seconds of the whole command
  (data generation, three runs, ranking), and per run its training steps per second.
- ``reference_64``: ``fae-lab train`` on generated 64 x 64 data (256 samples, 6 scales) with
  the reference FAE of Bunker et al. (JMLR 2025): mean pooling, 16 Gaussian coordinate
  frequencies of sigma = 1, latent 64, batch 32, full grid, ``--steps`` steps (default 200),
  an evaluation every 100 steps.

Per run, from ``wall_time(step)`` of its metrics store (seconds since the run started, read
when a compiled chunk of ``steps_per_call`` steps returns):

- ``first_chunk_s``: the first chunk, compile included;
- ``steady_steps_per_s``: steps_per_call / median time between consecutive chunks after the
  first (the median drops the chunks that also ran an evaluation);
- ``loop_steps_per_s``: all steps after the first chunk over their wall time, evaluations in.

``machine``: cores, the 1/5/15-minute load averages before and after, JAX's version.

Usage: ``python benchmarks/bench_cpu.py [--dir DIR] [--steps N] [--skip-demo] [--skip-reference]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import xarray as xr

REFERENCE_FLAGS = ("--generate-resolution", "64", "--generate-n-samples", "256", "--generate-n-scales", "6",
                   "--pooling-type", "mean", "--coordinate-features", "gaussian",
                   "--n-coordinate-frequencies", "16", "--coordinate-sigma", "1", "--latent-dim", "64",
                   "--batch-size", "32", "--eval-every", "100", "--log-every", "50", "--steps-per-call", "50")


def fae_lab(*args: str) -> float:
    """Run ``python -m fae_lab ARGS`` to completion; its wall seconds (stderr kept for errors)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "fae_lab", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"bench_cpu: fae-lab {args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return wall


def run_rates(run_dir: Path) -> dict[str, float | int | None]:
    """Step rates of one finished run from its metrics store (see the module docstring)."""
    ds = xr.open_zarr(run_dir / "metrics.zarr")
    steps = ds["step"].values
    wall = ds["wall_time"].values
    ok = np.isfinite(wall)
    steps, wall = steps[ok], wall[ok]
    # One wall time per returned chunk: keep the last logged step of each chunk.
    chunk_end = np.r_[np.diff(wall) != 0, True]
    steps, wall = steps[chunk_end], wall[chunk_end]
    final = json.loads((run_dir / "final.json").read_text())
    row: dict[str, float | int | None] = {
        "steps": int(steps[-1]),
        "first_chunk_s": round(float(wall[0]), 2),
        "test_rel_mse": final.get("final/test_rel_mse"),
        "steady_steps_per_s": None,
        "loop_steps_per_s": None,
    }
    if len(steps) > 2:
        rates = np.diff(steps)[1:] / np.diff(wall)[1:]
        row["steady_steps_per_s"] = round(float(np.median(rates)), 2)
        row["loop_steps_per_s"] = round(float((steps[-1] - steps[0]) / (wall[-1] - wall[0])), 2)
    return row


def bench_demo(root: Path) -> dict:
    runs = root / "demo"
    wall = fae_lab("demo", "--runs", str(runs), "--quiet")
    return {"wall_s": round(wall, 1),
            "runs": {d.name: run_rates(d) for d in sorted(runs.iterdir()) if (d / "final.json").is_file()}}


def bench_reference(root: Path, steps: int) -> dict:
    run_dir = root / "reference_64"
    wall = fae_lab("train", *REFERENCE_FLAGS, "--max-steps", str(steps), "--output-dir", str(run_dir))
    return {"wall_s": round(wall, 1), "flags": " ".join(REFERENCE_FLAGS), **run_rates(run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="where the runs go (default: a temporary directory, removed afterwards)")
    p.add_argument("--steps", type=int, default=200, help="steps of the 64 x 64 reference run (default 200)")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args()

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="fae-bench-cpu-"))
    if args.dir and root.exists() and any(root.iterdir()):
        sys.exit(f"bench_cpu: --dir {root} is not empty; the timings need fresh run directories")
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": {
        "cores": os.cpu_count(), "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "jax": version("jax"), "jaxlib": version("jaxlib"), "python": platform.python_version(),
        "processor": platform.machine()}}
    try:
        if not args.skip_demo:
            report["demo"] = bench_demo(root)
        if not args.skip_reference:
            report["reference_64"] = bench_reference(root, args.steps)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    report["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
