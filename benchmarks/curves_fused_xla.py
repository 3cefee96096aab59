"""A fused run's curves against the XLA path's, with TF32's own effect as the yardstick (GPU).

    python benchmarks/curves_fused_xla.py --out DIR [--steps 1500] [--json FILE] [-- TRAIN FLAGS]

Trains one run three times, same seed, data and flags (default: the seed's multi-scale
baseline, attention pooling, 64 x 64, 4,096 generated samples): ``--kernels xla``,
``--kernels pallas`` (the fused encoder), and ``--kernels xla`` with
``JAX_DEFAULT_MATMUL_PRECISION=highest`` (float32 products instead of the GPU's TF32). For each
curve of the run store (training loss, test relative MSE, spectral MSE) it reports the largest
relative difference over the run between fused and XLA, and between XLA at TF32 and at float32
precision. "Agrees within TF32 rounding" means the first is not larger than the second: the
fused kernel moves the curves no more than the GPU's default precision already does.

On a CPU ``--kernels pallas`` runs Pallas' interpreter and the precision setting changes
nothing; use ``--tiny`` there to check the script. Figures belong in RESULTS.md with the card.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT = ["--training-mode", "multi_scale", "--track-spectral-metrics", "--generate-n-samples", "4096"]
TINY = ["--generate-resolution", "16", "--generate-n-scales", "2", "--generate-n-samples", "64",
        "--batch-size", "4", "--spectral-n-bins", "4", "--encoder-hidden", "16,16",
        "--decoder-hidden", "16,16", "--latent-dim", "8"]
CURVES = ("train_loss", "eval_rel_mse", "eval_spectral_mse")
VARIANTS = {"xla": ("xla", None), "fused": ("pallas", None), "xla_highest": ("xla", "highest")}


def train(out: Path, name: str, flags: list[str]) -> float:
    kernels, precision = VARIANTS[name]
    env = dict(os.environ)
    if precision:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = precision
    argv = [sys.executable, "-m", "fae_lab", "train", *flags, "--kernels", kernels,
            "--output-dir", str(out / name)]
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"curves_fused_xla: the {name} run failed: {done.stderr.strip().splitlines()[-1:]}")
    wall = time.perf_counter() - t0
    print(f"{name}: trained in {wall:.1f} s", flush=True)  # a call cut off still shows how far it got
    return wall


def largest_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / |b| over the finite entries (the curve's steps, and bins or scales)."""
    ok = np.isfinite(a) & np.isfinite(b) & (np.abs(b) > 0)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the three runs")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--tiny", action="store_true", help="16 x 16, a few samples: check the script on a CPU")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    parser.add_argument("train_flags", nargs="*", help="after --: flags of fae-lab train (default: the baseline)")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"--out: {args.out} exists; give a new directory")
    flags = [*(args.train_flags or DEFAULT), *(TINY if args.tiny else []), "--max-steps", str(args.steps),
             "--eval-every", str(max(args.steps // 6, 1)), "--log-every", str(max(args.steps // 30, 1))]

    import xarray as xr

    walls = {name: train(args.out, name, flags) for name in VARIANTS}
    curves = {name: xr.open_zarr(args.out / name / "metrics.zarr").load() for name in VARIANTS}
    result = {"flags": flags, "wall_s": walls, "fused_vs_xla": {}, "tf32_vs_float32": {}}
    for curve in CURVES:
        xla = curves["xla"][curve].values
        result["fused_vs_xla"][curve] = largest_relative_difference(curves["fused"][curve].values, xla)
        result["tf32_vs_float32"][curve] = largest_relative_difference(xla, curves["xla_highest"][curve].values)
    result["within_tf32"] = all(result["fused_vs_xla"][c] <= result["tf32_vs_float32"][c] for c in CURVES)
    kernel = json.loads((args.out / "fused" / "config.json").read_text())["versions"]["encoder_kernel"]
    result["fused_encoder_kernel"] = kernel
    import jax

    result["device"] = jax.devices()[0].device_kind
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
