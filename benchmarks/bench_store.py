"""Run-store timings for a realistic layout; prints one JSON object.

64 x 64 grid, 8 scales, 4 reconstruction samples, 16 radial bins, 500 evaluations (every 100
steps) and a training-log row every 50 steps. Measures, in milliseconds (median and mean):

- ``eval_row_write``: one ``write_eval`` with every metric and the (S, T, R, R) reconstruction;
- ``eval_row_write_no_recon``: the same without the reconstruction;
- ``train_write_{n}_rows``: one ``write_train_rows`` of n rows (n = 1: one row per host call;
  n = 256: a whole chunk) with the total loss, three terms and the four other step variables;
- ``read_metrics``: ``open_run(...).metrics()``: progress.json + plain ``xarray.open_zarr`` +
  loading every valid row (all 500 evaluations and ~1000 training rows);
- ``read_new_eval_row``: what a live dashboard does per poll: open, read one new row of every
  evaluation variable;
- ``read_one_image``: one reconstruction image at one evaluation.

Usage: ``python benchmarks/bench_store.py [--dir DIR] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from fae_lab.grid import radial_bin_edges
from fae_lab.store import (
    RunStore,
    StoreLayout,
    eval_schedule,
    open_run,
    read_json,
    train_schedule,
)

R, T, S, N_BINS = 64, 8, 4, 16
MAX_STEPS, EVAL_EVERY, LOG_EVERY = 49_900, 100, 50


def timed(function, repeats: int) -> dict[str, float]:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        function(i)
        times.append(1e3 * (time.perf_counter() - start))
    return {"median_ms": round(statistics.median(times), 3),
            "mean_ms": round(statistics.fmean(times), 3), "n": repeats}


def build_layout() -> StoreLayout:
    centres, lower, upper = radial_bin_edges(R, N_BINS)
    return StoreLayout(
        train_steps=train_schedule(MAX_STEPS, LOG_EVERY),
        eval_steps=eval_schedule(MAX_STEPS, EVAL_EVERY),
        loss_terms=("l2", "grad", "latent"), scales=np.arange(T),
        times=np.geomspace(1e-5, 1e-2, T), sigmas=np.geomspace(1e-3, 0.1, T),
        held_out=np.isin(np.arange(T), [3, 6]), k_centres=centres, k_lower=lower,
        k_upper=upper, spectral_cutoff=R / 4, resolution=R, recon_samples=np.arange(S),
        run_name="bench", tags=("multi_scale", "h1", "standard", "attention"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(dir=args.dir))
    run = root / "run"
    rng = np.random.default_rng(0)
    layout = build_layout()
    results: dict = {"layout": {"resolution": R, "n_scales": T, "n_samples": S, "n_bins": N_BINS,
                                "n_eval": layout.n_eval, "n_train": layout.n_train},
                     "directory": str(root)}
    try:
        start = time.perf_counter()
        store = RunStore.create(run, layout, config={}, command_line=["bench"],
                                truth=rng.standard_normal((S, T, R, R)).astype(np.float32))
        results["create_ms"] = round(1e3 * (time.perf_counter() - start), 1)
        variables = layout.metric_variables()
        metrics = {name: rng.random(layout.shape_of(v)[1:]) for name, v in variables.items()
                   if v.dims[0] == "eval_step"}
        recon = rng.standard_normal((S, T, R, R)).astype(np.float32)
        train_names = [n for n, v in variables.items() if v.dims[0] == "step"]
        repeats = min(args.repeats, layout.n_eval // 2)

        results["eval_row_write"] = timed(lambda i: store.write_eval(i, metrics, recon), repeats)
        results["eval_row_write_no_recon"] = timed(
            lambda i: store.write_eval(repeats + i, metrics), repeats)
        for n in (1, 256):
            offset = store.n_train
            results[f"train_write_{n}_rows"] = timed(
                lambda i, n=n, offset=offset: store.write_train_rows(
                    (offset + i * n) % (layout.n_train - n),
                    {name: rng.random(n) for name in train_names}),
                min(repeats, 20) if n > 1 else repeats)
        # Fill everything, then time the readers on the full run.
        for row in range(store.n_eval, layout.n_eval):
            store.write_eval(row, metrics, recon)
        store.write_train_rows(0, {name: rng.random(layout.n_train) for name in train_names})
        view = open_run(run)
        results["read_metrics"] = timed(lambda i: view.metrics(), max(5, repeats // 5))

        def read_new_row(i: int) -> None:
            n_eval = read_json(run / "progress.json")["n_eval"]
            with xr.open_zarr(run / "metrics.zarr") as ds:
                ds.isel(eval_step=slice(n_eval - 1, n_eval)).drop_dims("step").load()

        results["read_new_eval_row"] = timed(read_new_row, repeats)
        results["read_one_image"] = timed(
            lambda i: view.reconstructions().recon.isel(eval_step=i, sample=1, scale=2).values,
            repeats)
        files = [p for p in run.rglob("*") if p.is_file()]
        results["files"] = len(files)
        results["megabytes"] = round(sum(p.stat().st_size for p in files) / 2**20, 1)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
