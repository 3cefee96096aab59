"""GPU throughput of the training engine, through the real ``fae-lab train`` path.

Prints one JSON object per case and a summary table last. Cases (``--cases``):

- ``paper``: the paper configuration of Bunker et al. (64x64 full grid, batch 32, latent 64,
  encoder 64-64-64, decoder 5x100, 16 Gaussian frequencies of scale 1, mean pooling),
  evaluation with spectral metrics every 500 steps, store writes on.
  On one GPU the encoder runs as the fused Pallas kernel (``--kernels auto``).
- ``paper_xla`` / ``masked_xla``: ``paper`` / ``masked`` with ``--kernels xla`` (no fused kernel).
- ``paper_noeval``: the same with one evaluation at the end only (the pure training rate).
- ``paper_ckpt_each_eval``: ``paper`` with an orbax checkpoint at every evaluation.
- ``masked``: ``paper`` with the encoder seeing 70% of the points (30% masking).
- ``bf16``: ``paper`` with ``--precision bf16``; test relative MSE compared with float32.
- ``sweep8`` / ``seq8``: 8 members (seeds) as one vmapped program vs one after another.
- ``batch64`` / ``batch64_dp``: batch 64 on one device vs data parallel over all devices
  (``batch64_xla``: one device without the fused encoder, which data parallel runs do not use).

Steady-state steps/s come from the run store itself: the ``wall_time`` of the training-log
rows (written as each chunk's metrics reach the host), from the second row on, so compile
time is left out; end-to-end wall time including compilation is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def paper_flags(steps: int, eval_every: int) -> list[str]:
    return ["--pooling-type", "mean", "--coordinate-features", "gaussian", "--n-coordinate-frequencies", "16",
            "--coordinate-sigma", "1", "--latent-dim", "64", "--encoder-hidden", "64,64,64",
            "--decoder-hidden", "100,100,100,100,100", "--batch-size", "32", "--beta", "1e-3",
            "--learning-rate", "1e-3", "--max-steps", str(steps), "--eval-every", str(eval_every),
            "--log-every", "50", "--steps-per-call", "50", "--generate-n-samples", "256",
            "--generate-resolution", "64", "--generate-n-scales", "6", "--eval-batch-size", "64"]


def steady_rate(run_dir: Path) -> tuple[float, float]:
    """(steps/s, seconds) between the first and last training-log rows of a run."""
    import xarray as xr

    ds = xr.open_zarr(run_dir / "metrics.zarr")
    wall, steps = ds["wall_time"].values, ds["step"].values
    ok = np.isfinite(wall)
    wall, steps = wall[ok], steps[ok]
    # The first rows arrive together with the first compiled chunk: start after them.
    first = int(np.argmax(wall > wall[0] + 1e-9)) if (wall > wall[0]).any() else 0
    dt = wall[-1] - wall[first]
    if dt <= 0:  # every row came with the first chunk: no steady stretch to measure
        return float("nan"), 0.0
    return float((steps[-1] - steps[first]) / dt), float(dt)


def run_case(name: str, argvs: list[list[str]], root: Path, *, vmapped: bool = True) -> dict:
    import jax

    from fae_lab.train.args import parse_run_config
    from fae_lab.train.run import train_group

    configs = [parse_run_config([*a, "--output-dir", str(root / name / f"m{i}")]) for i, a in enumerate(argvs)]
    t0 = time.perf_counter()
    if vmapped:
        results = train_group(configs, quiet=True)
    else:
        results = [train_group([c], quiet=True)[0] for c in configs]
    wall = time.perf_counter() - t0
    rates = [steady_rate(r.run_dir) for r in results]
    steps = configs[0].max_steps
    out = {
        "case": name,
        "members": len(configs),
        "vmapped": vmapped,
        "max_steps": steps,
        "wall_s_with_compile": round(wall, 3),
        "steady_steps_per_s": round(rates[0][0], 1) if vmapped else None,
        "member_steps_per_s": round(len(configs) * steps / wall, 1),
        "ms_per_step": round(1000 / rates[0][0], 4) if vmapped else round(1000 * wall / (len(configs) * steps), 4),
        "test_rel_mse": [round(r.final["final/test_rel_mse"], 6) for r in results],
        "device": str(jax.devices()[0].device_kind),
        "n_devices": len(jax.devices()),
    }
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["peak_gpu_memory_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="paper,paper_xla,paper_noeval,masked,masked_xla,bf16,sweep8,seq8")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--out", default=None, help="directory for the runs (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="fae_bench_"))
    steps = args.steps
    paper = paper_flags(steps, 500)
    cases = {
        "paper": lambda: run_case("paper", [paper], root),
        "paper_xla": lambda: run_case("paper_xla", [[*paper, "--kernels", "xla"]], root),
        "masked_xla": lambda: run_case("masked_xla", [[*paper, "--kernels", "xla", "--encoder-points",
                                                       str(int(0.7 * 64 * 64))]], root),
        "paper_noeval": lambda: run_case("paper_noeval", [paper_flags(steps, steps)], root),
        "paper_ckpt_each_eval": lambda: run_case("paper_ckpt_each_eval", [[*paper, "--checkpoint-every", "500"]], root),
        "masked": lambda: run_case("masked", [[*paper, "--encoder-points", str(int(0.7 * 64 * 64))]], root),
        "bf16": lambda: run_case("bf16", [[*paper, "--precision", "bf16"]], root),
        "sweep8": lambda: run_case("sweep8", [[*paper_flags(steps // 5, steps // 5), "--seed", str(s), "--n-devices", "1"]
                                              for s in range(8)], root),
        "seq8": lambda: run_case("seq8", [[*paper_flags(steps // 5, steps // 5), "--seed", str(s), "--n-devices", "1"]
                                          for s in range(8)], root, vmapped=False),
        "batch64": lambda: run_case("batch64", [[*paper, "--batch-size", "64", "--n-devices", "1"]], root),
        "batch64_xla": lambda: run_case("batch64_xla", [[*paper, "--batch-size", "64", "--n-devices", "1",
                                                         "--kernels", "xla"]], root),
        "batch64_dp": lambda: run_case("batch64_dp", [[*paper, "--batch-size", "64"]], root),
    }
    results = []
    for name in args.cases.split(","):
        result = cases[name]()
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print("\ncase          members  steady steps/s  ms/step   member-steps/s  wall(s)  rel_mse[0]")
    for r in results:
        print(f"{r['case']:<13} {r['members']:>7}  {r['steady_steps_per_s'] or '-':>14}  {r['ms_per_step']:>7}"
              f"  {r['member_steps_per_s']:>14}  {r['wall_s_with_compile']:>7}  {r['test_rel_mse'][0]}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    sys.exit(main())
