"""A second process reads the run store with plain xarray while this one writes it.

The reader takes ``progress.json`` first, then opens both stores with ``xarray.open_zarr``
and checks every row: below ``n_train`` / ``n_eval`` a row holds exactly its deterministic
values f(row); past them a row is entirely NaN or entirely f(row), never half-written, and
nothing ever raises.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fae_lab.grid import radial_bin_edges
from fae_lab.store import AsyncStoreWriter, RunStore, StoreLayout, open_run

pytestmark = pytest.mark.slow  # every test here runs a second process for many seconds

R, T, S, N_BINS = 8, 3, 2, 4
N_TRAIN, N_EVAL = 4096, 120
# Training rows after which the writer waits for one more completed read, so that the reader
# reads while the rows are being written however loaded the machine is.
PAUSE_ROWS = range(N_TRAIN // 12, N_TRAIN, N_TRAIN // 12)

# Row values, shared by the writer and the reader: variable j, row i -> 1000 j + i + offsets
# that differ across the row's elements (so a torn row shows).
VALUES = """
import numpy as np
def train_value(j, rows):
    return 1000.0 * j + np.asarray(rows, dtype=np.float64) + 0.5
def eval_value(j, row, shape):
    return 1000.0 * j + row + 0.01 * np.arange(int(np.prod(shape))).reshape(shape)
def recon_value(row, shape):
    return (row + np.arange(int(np.prod(shape))).reshape(shape) / 1024.0).astype(np.float32)
"""
namespace: dict = {}
exec(VALUES, namespace)
train_value, eval_value, recon_value = (namespace[k] for k in ("train_value", "eval_value",
                                                               "recon_value"))

READER = VALUES + textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import xarray as xr

    run, limit = Path(sys.argv[1]), float(sys.argv[2])
    problems, states, reads = [], set(), 0

    def check_rows(name, values, n_valid, expected):
        values = values.reshape(values.shape[0], -1)
        expected = expected.reshape(values.shape)
        equal = (values == expected).all(axis=1)
        blank = np.isnan(values).all(axis=1)
        for i in np.flatnonzero(~equal[:n_valid]):
            problems.append(f"{name} row {i} < {n_valid} holds {values[i, :3]}")
        for i in np.flatnonzero(~(equal | blank)[n_valid:]):
            problems.append(f"{name} row {n_valid + i} >= {n_valid} is half-written")

    def read_once():
        progress = json.loads((run / "progress.json").read_text())
        n_train, n_eval = progress["n_train"], progress["n_eval"]
        ds = xr.open_zarr(run / "metrics.zarr")
        for j, name in enumerate(sorted(ds.data_vars)):
            values = ds[name].values
            n_rows = values.shape[0]
            if ds[name].dims[0] == "step":
                check_rows(name, values, n_train, train_value(j, np.arange(n_rows)))
            else:
                expected = np.stack([eval_value(j, i, values.shape[1:]) for i in range(n_rows)])
                check_rows(name, values, n_eval, expected)
        recon = xr.open_zarr(run / "reconstructions.zarr").recon.values
        expected = np.stack([recon_value(i, recon.shape[1:]) for i in range(recon.shape[0])])
        check_rows("recon", recon, n_eval, expected)
        return progress

    start = time.time()
    read_once()
    print("ready", flush=True)
    while time.time() - start < limit:
        try:
            progress = read_once()
        except Exception as error:  # reported, not raised: every failure is counted
            problems.append(f"{type(error).__name__}: {error}")
            continue
        reads += 1
        (run.parent / "reads").write_text(str(reads))
        states.add((progress["n_train"], progress["n_eval"]))
        if progress["status"] == "finished":
            break
    print(json.dumps({"problems": problems[:20], "n_problems": len(problems), "reads": reads,
                      "states": sorted(states), "last": progress}), flush=True)
""")


def make_layout() -> StoreLayout:
    centres, lower, upper = radial_bin_edges(R, N_BINS)
    return StoreLayout(
        train_steps=np.arange(1, N_TRAIN + 1), eval_steps=np.arange(N_EVAL) * 40,
        loss_terms=("l2", "latent"), scales=np.arange(T), times=np.arange(T, dtype=float),
        sigmas=np.full(T, np.nan), held_out=np.array([False, False, True]), k_centres=centres,
        k_lower=lower, k_upper=upper, spectral_cutoff=R / 4, resolution=R,
        recon_samples=np.arange(S), run_name="race", tags=("multi_scale", "l2", "standard",
                                                           "mean"))


def completed_reads(path: Path) -> int:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):  # not yet written, or caught mid-write
        return 0


def wait_for_a_read(path: Path, after: int, timeout: float = 120.0) -> int:
    """Block until the reader has completed more than ``after`` reads; return how many."""
    deadline = time.time() + timeout
    while (n := completed_reads(path)) <= after:
        assert time.time() < deadline, f"the reader completed no read in {timeout} s"
        time.sleep(0.005)
    return n


def write_while_reading(tmp_path: Path, writer_kind: str) -> dict:
    layout = make_layout()
    store = RunStore.create(tmp_path / "run", layout, config={"max_steps": N_TRAIN},
                            command_line=["test"], truth=np.zeros((S, T, R, R), np.float32))
    variables = layout.metric_variables()
    names = sorted(variables)
    train_names = [n for n in names if variables[n].dims[0] == "step"]
    eval_names = [n for n in names if variables[n].dims[0] == "eval_step"]
    script = tmp_path / "reader.py"
    script.write_text(READER)
    reader = subprocess.Popen(
        [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning", str(script),
         str(tmp_path / "run"), "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        writer = AsyncStoreWriter(store) if writer_kind == "async" else store
        row, eval_row = 0, 0
        pauses = iter(PAUSE_ROWS)
        next_pause, seen = next(pauses), 0
        # Blocks of 7 rows: most writes rewrite a partly written chunk.
        while row < N_TRAIN or eval_row < N_EVAL:
            if row < N_TRAIN:
                rows = np.arange(row, min(row + 7, N_TRAIN))
                writer.write_train_rows(row, {n: train_value(names.index(n), rows)
                                              for n in train_names})
                row = int(rows[-1]) + 1
                if row >= next_pause:
                    seen = wait_for_a_read(tmp_path / "reads", seen)
                    next_pause = next(pauses, N_TRAIN + 1)
            if eval_row < N_EVAL and row % 3 == 0:
                metrics = {n: eval_value(names.index(n), eval_row,
                                         layout.shape_of(variables[n])[1:]) for n in eval_names}
                writer.write_eval(eval_row, metrics, recon_value(eval_row, (S, T, R, R)))
                eval_row += 1
        writer.set_status("finished")
        if writer_kind == "async":
            writer.close()
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    report["written"] = (row, eval_row)
    return report


def check_report(report: dict) -> None:
    assert report["n_problems"] == 0, report["problems"]
    # The reader really read while rows were being written: it saw many different states,
    # some of them in the middle of the run, and finally everything that was written.
    assert report["reads"] >= len(PAUSE_ROWS)
    assert len(report["states"]) >= 5
    assert any(0 < n_train < report["written"][0] for n_train, _ in report["states"])
    assert any(0 < n_eval < report["written"][1] for _, n_eval in report["states"])
    last = report["last"]
    assert last["status"] == "finished"
    assert (last["n_train"], last["n_eval"]) == tuple(report["written"])


def test_reader_process_never_sees_a_torn_row_while_the_store_is_written(tmp_path):
    check_report(write_while_reading(tmp_path, "direct"))


def test_reader_process_never_sees_a_torn_row_while_the_async_writer_writes(tmp_path):
    check_report(write_while_reading(tmp_path, "async"))


def test_live_synthetic_run_from_another_process_grows_until_finished(tmp_path):
    run = tmp_path / "live"
    writer = subprocess.Popen(
        [sys.executable, "-m", "fae_lab.testing.fake_runs", str(run), "--live", "--interval",
         "0.3", "--n-evals", "12", "--resolution", "16", "--loss-type", "h1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        while True:  # until the run is finished or the writer has exited (pytest-timeout bounds it)
            exited = writer.poll() is not None
            if (run / "config.json").exists():
                view = open_run(run)
                progress = view.progress
                ds = view.metrics()
                assert ds.sizes["eval_step"] >= progress["n_eval"]  # metrics() re-reads progress
                assert np.isfinite(ds.eval_mse.values).all()
                seen.append(progress["n_eval"])
                if progress["status"] == "finished":
                    break
            if exited:
                break
            time.sleep(0.05)
        _, err = writer.communicate(timeout=30)
    finally:
        writer.kill()
    assert writer.returncode == 0, err
    assert seen[-1] == 12 and list(open_run(run).tags.values()) == [
        "multi_scale", "h1", "standard", "attention"]
    assert len(set(seen)) >= 4 and seen == sorted(seen)
