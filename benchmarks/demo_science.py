"""Re-check what ``fae-lab demo``'s docstring says, on several seeds, from the runs' stores.

Trains the demo's three experiments (``fae_lab.demo.DEMO_EXPERIMENTS``) on the demo's data with
``--seeds`` seeds each (an experiment's seeds train as members of one vmapped program, as in
``fae-lab phase --seeds``), with the demo's training flags (``fae_lab.demo.DEMO_TRAINING``) or
the flags given after ``--``, then reads every run's ``metrics.zarr`` (test split) and prints,
per run:

- the test relative MSE at the last evaluation, its best, and ``rise`` = last / best - 1 (the
  demo's defaults must generalise: no rise above 10 %), and the training subset's last;
- the low band (|n| < R/4) and high band (|n| >= R/4) MSE: last / first evaluation;
- the high band's last value over the target's own high-band power (computed here from the data
  with NumPy's FFT, not from the store) and its change over the last three evaluations.

Writes the table to ``RUNS/science.json``. Example (the demo's settings, 2 seeds)::

    python benchmarks/demo_science.py --runs /tmp/science_new --seeds 2
    python benchmarks/demo_science.py --runs /tmp/science_old --seeds 1 --only baseline -- --seed 1 --batch-size 32 ...

Finished runs under ``--runs`` are reused (only summarised), as ``fae-lab phase`` does.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from fae_lab.data.npz import load_npz
from fae_lab.data.views import resolve_scales, split_samples
from fae_lab.demo import DEMO_DATA, DEMO_EXPERIMENTS, DEMO_STEPS, DEMO_TRAINING, write_demo_data
from fae_lab.phase import run_series, seed_run_name


def target_band_power(data_path: Path, cutoff: float) -> tuple[float, float]:
    """Mean over the test split and training scales of sum_{|n| < c} |u_n|^2 and of
    sum_{|n| >= c} |u_n|^2, with u_n = fft2(u) / R^2 (so the two add up to mean_xy(u^2))."""
    data = load_npz(data_path)
    roles = resolve_scales(data, "multi_scale", 1, None)
    _, test_idx = split_samples(data.n_samples, 0.2, 0)
    fields = data.fields[test_idx][:, sorted(roles.training)]  # (S, T_train, R, R)
    R = data.resolution
    power = np.abs(np.fft.fft2(fields)) ** 2 / R**4
    n = np.fft.fftfreq(R, 1.0 / R)
    radius = np.hypot(n[:, None], n[None, :])
    low = power[..., radius < cutoff].sum(-1).mean()
    high = power[..., radius >= cutoff].sum(-1).mean()
    return float(low), float(high)


def run_summary(run_dir: Path, target_high: float) -> dict:
    import xarray as xr

    progress = json.loads((run_dir / "progress.json").read_text())
    ds = xr.open_zarr(run_dir / "metrics.zarr").isel(eval_step=slice(0, progress["n_eval"]))
    steps = ds["eval_step"].values.astype(int)
    rel = ds["eval_rel_mse"].values
    low, high = ds["eval_low_freq_mse"].values, ds["eval_high_freq_mse"].values
    return {
        "eval_steps": steps.tolist(),
        "test_rel_mse": rel.tolist(),
        "train_rel_mse": ds["eval_train_rel_mse"].values.tolist(),
        "high_freq_mse": high.tolist(),
        "low_freq_mse": low.tolist(),
        "final_rel_mse": float(rel[-1]),
        "best_rel_mse": float(np.min(rel)),
        "rise": float(rel[-1] / np.min(rel) - 1.0),
        "low_last_over_first": float(low[-1] / low[0]),
        "high_first": float(high[0]),
        "high_last": float(high[-1]),
        "high_last_over_first": float(high[-1] / high[0]),
        "high_over_target": float(high[-1] / target_high),
        "high_change_last3": float(high[-1] / high[-3] - 1.0) if len(high) >= 3 else float("nan"),
        "train_final_rel_mse": float(ds["eval_train_rel_mse"].values[-1]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=DEMO_STEPS)
    p.add_argument("--only", nargs="*", help="experiments to train (default: the demo's three)")
    p.add_argument("training", nargs="*", help="training flags (after --); default: the demo's")
    a = p.parse_args()
    training = a.training or list(DEMO_TRAINING)
    data = a.runs / "data.npz"
    a.runs.mkdir(parents=True, exist_ok=True)
    write_demo_data(data, overwrite=False)
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    experiments = [e for e in DEMO_EXPERIMENTS if not a.only or e.name in a.only]
    run_series(experiments, a.runs, data_path=str(data), max_steps=a.max_steps, extra=training,
               seeds=a.seeds, quiet=True)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    cutoff = DEMO_DATA["resolution"] / 4
    target_low, target_high = target_band_power(data, cutoff)
    rows = {}
    for exp in experiments:
        for i in range(a.seeds):
            name = seed_run_name(exp.name, i, a.seeds)
            rows[name] = run_summary(a.runs / name, target_high)
    out = {"training": training, "max_steps": a.max_steps, "seeds": a.seeds,
           "target_low_power": target_low, "target_high_power": target_high,
           "train_cpu_s": cpu, "train_wall_s": time.perf_counter() - t0, "runs": rows}
    (a.runs / "science.json").write_text(json.dumps(out, indent=1))
    print(f"target power: low {target_low:.3g}, high {target_high:.3g}; training {cpu:.0f} CPU-s")
    print("| run | test rel MSE last (best, rise) | train rel MSE | low last/first | "
          "high first -> last (x) | high / target | high change, last 3 evals |")
    for name, r in rows.items():
        print(f"| {name} | {r['final_rel_mse']:.3f} ({r['best_rel_mse']:.3f}, {r['rise']:+.1%}) | "
              f"{r['train_final_rel_mse']:.3f} | x{r['low_last_over_first']:.2f} | "
              f"{r['high_first']:.2e} -> {r['high_last']:.2e} (x{r['high_last_over_first']:.2f}) | "
              f"{r['high_over_target']:.2f} | {r['high_change_last3']:+.1%} |")


if __name__ == "__main__":
    main()
