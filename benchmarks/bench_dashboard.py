"""Dashboard server timings over N runs x 500 evaluations (default 200 runs); prints one JSON
object.

The runs are fabricated with the real store writer (``fae_lab.testing.fake_runs``; 32 x 32 grid,
4 scales, 2 reconstruction samples, 16 radial bins, an evaluation every 50 steps and a
training-log row every 10, so 2,500 training rows per run), each scheduled for 560 evaluations
of which 500 are written: the rest are written one at a time to time the live updates. Only the
first :data:`TEMPLATES` runs (one per loss x decoder) are written by the writer; every further
run is a copy of one of them under its own folder name (its ``metrics.zarr`` and JSON files
copied, its ``reconstructions.zarr`` chunks hard-linked: one file per evaluation, so a new
evaluation written into a copy never touches the template's files). The dashboards read each
copy as a run of its own.

Measures, in milliseconds (median over ``--repeats``), on the server side, without a browser:

- ``first_render``: what a page load costs the server: a new session's ``LabApp`` (discover
  the runs, read every valid row the first tab draws), its Bokeh document (``server_doc``) and
  that document serialised to JSON;
- ``update_<tab>``: one new evaluation (and its training rows) written into one run, then one
  poll of the session with ``<tab>`` shown (following that run where the tab shows one run):
  ``progress.json`` of every run, the new rows, the views' updates and the serialised
  PATCH-DOC message the browser would receive. Writing the rows is not timed;
- ``update_curves_all_runs``: the same with every run writing an evaluation between two polls
  (a sweep), curves shown;
- ``idle_poll``: a poll that finds nothing new.

Past 20 drawn runs the Curves tab draws each panel's runs with one MultiLine
(``lab.views.curves``), so the 200-run page builds a few dozen Bokeh models, not thousands.

Targets: first render under 3 s and an update under 150 ms with 200 runs (under 2 s and 100 ms
with 20).

Usage: ``python benchmarks/bench_dashboard.py [--runs DIR] [--n-runs N] [--repeats N]``. ``--runs DIR``
keeps the fabricated runs there and reuses them next time (making them takes a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from bokeh.document import Document
from bokeh.protocol import Protocol

from fae_lab.store import RunStore
from fae_lab.testing.fake_runs import SyntheticRunWriter

N_RUNS, N_EVALS, SCHEDULED = 200, 500, 560
TEMPLATES = 8  # runs written by the writer (4 losses x 2 decoders); the others are copies
LOSSES = ("l2", "h1", "fourier_weighted", "combined")
DECODERS = ("standard", "rff_output")


def run_name(i: int) -> str:
    return f"run{i:03d}_{LOSSES[i % 4]}_{DECODERS[(i // 4) % 2]}"


def make_run(root: str, i: int) -> None:
    writer = SyntheticRunWriter(Path(root) / run_name(i), loss_type=LOSSES[i % 4],
                                decoder_type=DECODERS[(i // 4) % 2], n_evals=SCHEDULED,
                                eval_every=50, log_every=10, resolution=32, n_scales=4,
                                n_samples=2, n_bins=16, seed=i)
    writer.advance(N_EVALS)


def copy_run(template: Path, target: Path) -> None:
    """``target``: a copy of run ``template`` (reconstruction chunks hard-linked), named by its
    folder."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(template, tmp, ignore=shutil.ignore_patterns("reconstructions.zarr"))
    shutil.copytree(template / "reconstructions.zarr", tmp / "reconstructions.zarr",
                    copy_function=os.link)
    config = json.loads((tmp / "config.json").read_text())
    config["run_name"] = target.name
    (tmp / "config.json").write_text(json.dumps(config))
    os.rename(tmp, target)


def make_runs(root: Path, n_runs: int = N_RUNS) -> None:
    """Fabricate the runs not there yet (templates by the writer, the rest as copies); cut
    reused ones back to ``N_EVALS`` evaluations."""
    missing = [i for i in range(n_runs) if not (root / run_name(i) / "config.json").exists()]
    templates = [i for i in missing if i < TEMPLATES]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(make_run, [str(root)] * len(templates), templates))
    for i in set(range(n_runs)) - set(missing):
        store = RunStore.open(root / run_name(i))
        if store.n_eval != N_EVALS:
            layout = store.layout
            n_train = int(np.searchsorted(layout.train_steps, layout.eval_steps[N_EVALS - 1],
                                          "right"))
            store.truncate(n_train, N_EVALS)
    for i in missing:
        if i >= TEMPLATES:
            copy_run(root / run_name(i % TEMPLATES), root / run_name(i))


def write_next_evaluation(run_dir: Path) -> None:
    """Append one evaluation (a copy of the last one) and the training rows up to its step."""
    store = RunStore.open(run_dir)
    layout, row = store.layout, store.n_eval
    if row >= layout.n_eval:
        raise SystemExit(f"{run_dir}: no evaluation left to write; delete the runs folder")
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        last = ds.isel(eval_step=row - 1, step=store.n_train - 1)
        metrics = {n: last[n].values for n in ds.data_vars if ds[n].dims[0] == "eval_step"}
        training = {n: last[n].values for n in ds.data_vars if ds[n].dims[0] == "step"}
    with xr.open_zarr(run_dir / "reconstructions.zarr") as ds:
        recon = ds["recon"].isel(eval_step=row - 1).values
    stop = int(np.searchsorted(layout.train_steps, layout.eval_steps[row], "right"))
    if stop > store.n_train:
        count = stop - store.n_train
        store.write_train_rows(store.n_train, {n: np.repeat(v, count)
                                               for n, v in training.items()})
    store.write_eval(row, metrics, recon)


class PatchRecorder:
    """Collects a document's change events, as a server session would, and serialises them."""

    def __init__(self, doc: Document):
        self.events: list = []
        doc.on_change(self.events.append)

    def flush(self) -> int:
        """Bytes of the PATCH-DOC message of the events since the last flush (0: none)."""
        events = list(self.events)
        self.events.clear()  # the same list: the document holds its bound append
        if not events:
            return 0
        message = Protocol().create("PATCH-DOC", events)
        return len(message.content_json) + sum(len(b.to_bytes()) for b in message.buffers)


class Clock:
    """Wall and CPU (this process, all threads) milliseconds of a block. On a shared machine
    the CPU time is what the server itself spent; the wall time adds waiting for the CPU."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = 1e3 * (time.perf_counter() - self.wall)
        self.cpu = 1e3 * (time.process_time() - self.cpu)


def first_render(runs: Path) -> tuple[Clock, object, PatchRecorder]:
    from lab.app import LabApp

    with Clock() as clock:
        app = LabApp(runs)
        doc = Document()
        app.template.server_doc(doc)
        json.dumps(doc.to_json(), default=str)
    return clock, app, PatchRecorder(doc)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="keep (and reuse) the fabricated runs here")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-runs", type=int, default=N_RUNS)
    args = parser.parse_args(argv)
    if args.n_runs < TEMPLATES:
        parser.error(f"--n-runs: at least {TEMPLATES}")
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    make_runs(root, args.n_runs)
    setup_s = time.perf_counter() - start
    import lab.app  # noqa: F401  (imports are not part of a page load)

    renders = [first_render(root)[0] for _ in range(args.repeats)]
    _, app, recorder = first_render(root)
    recorder.flush()
    results: dict[str, object] = {
        "runs": args.n_runs, "evaluations_per_run": N_EVALS,
        "first_render_ms": median([c.wall for c in renders]),
        "first_render_cpu_ms": median([c.cpu for c in renders]),
        "first_render_all_ms": [round(c.wall) for c in renders]}
    idle = []
    for tab_index, tab in enumerate(app.views):
        # Each tab's updates go to a run of their own (shown by that tab where it shows one).
        target = root / run_name(tab_index)
        app.tabs.active = tab_index
        view = app.views[tab]
        for name in ("run", "run_a"):
            if name in view.param:
                setattr(view, name, run_name(tab_index))
        app.poll()
        recorder.flush()
        clocks, sizes = [], []
        for _ in range(args.repeats):
            write_next_evaluation(target)
            with Clock() as clock:
                app.poll()
                sizes.append(recorder.flush())
            clocks.append(clock)
            with Clock() as clock:
                app.poll()
            idle.append(clock.wall)
        key = tab.lower().replace(" ", "_")
        results[f"update_{key}_ms"] = median([c.wall for c in clocks])
        results[f"update_{key}_cpu_ms"] = median([c.cpu for c in clocks])
        results[f"update_{key}_patch_bytes"] = int(statistics.median(sizes))
    # A sweep: every run writes an evaluation between two polls (curves shown).
    app.tabs.active = 0
    app.poll()
    recorder.flush()
    clocks = []
    for _ in range(args.repeats):
        for i in range(args.n_runs):
            write_next_evaluation(root / run_name(i))
        with Clock() as clock:
            app.poll()
            recorder.flush()
        clocks.append(clock)
    results["update_curves_all_runs_ms"] = median([c.wall for c in clocks])
    results["update_curves_all_runs_cpu_ms"] = median([c.cpu for c in clocks])
    results["idle_poll_ms"] = median(idle)
    results["setup_s"] = round(setup_s, 1)
    results["load_average_at_start"] = load_at_start
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, indent=1))
    if args.runs is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
