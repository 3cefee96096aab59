"""Chunks of ``metrics.zarr`` (docs/run-store.md): new stores hold each small variable in one
chunk along ``step`` / ``eval_step`` (at most 4,096 training rows, 1,024 evaluations and
256 KiB per chunk); rows written across chunk boundaries read back as written, with plain
xarray and with the run-store reader, also from stores written with the earlier chunks (256
training rows, 64 evaluations) and from both kinds polled together, their rows read in one
trip (``poll_readers``, ``require_all``); the reader reads the writer's arrays from their chunk
files exactly as zarr-python does."""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import GzipCodec

from fae_lab.grid import radial_bin_edges
from fae_lab.store import (
    RunReader,
    RunsDirectory,
    RunStore,
    StoreLayout,
    eval_schedule,
    preallocate,
    require_all,
    train_schedule,
)
from fae_lab.store.arrays import MetricsArrays

R, T, N_BINS = 8, 3, 64
TERMS = ("l2", "grad")


def make_layout(name: str, max_steps: int, log_every: int, eval_every: int) -> StoreLayout:
    centres, lower, upper = radial_bin_edges(R, N_BINS)
    return StoreLayout(
        train_steps=train_schedule(max_steps, log_every),
        eval_steps=eval_schedule(max_steps, eval_every), loss_terms=TERMS,
        scales=np.arange(T), times=np.array([0.0, 0.5, 2.0]), sigmas=np.full(T, np.nan),
        held_out=np.array([False, True, False]), k_centres=centres, k_lower=lower,
        k_upper=upper, spectral_cutoff=R / 4, resolution=R, recon_samples=np.array([0]),
        run_name=name, tags=("multi_scale", "h1", "standard", "mean"))


def write_run(run_dir: Path, layout: StoreLayout, train_blocks: list[tuple[int, int]],
              n_eval: int) -> dict[str, np.ndarray]:
    """Write training rows in ``train_blocks`` and evaluations ``0 .. n_eval - 1`` (each
    value tells its variable, row and position apart); returns every array as written (NaN
    where not written)."""
    store = RunStore.create(run_dir, layout, config={"max_steps": layout.max_steps},
                            command_line=["test"],
                            truth=np.zeros((1, T, R, R), np.float32))
    variables = layout.metric_variables()
    expected = {name: np.full(layout.shape_of(v), np.nan) for name, v in variables.items()}
    train_names = [n for n, v in variables.items() if v.dims[0] == "step"]
    eval_names = [n for n, v in variables.items() if v.dims[0] == "eval_step"]
    for start, stop in train_blocks:
        block = {n: 1e4 * i + np.arange(start, stop) + 0.25 for i, n in enumerate(train_names)}
        store.write_train_rows(start, block)
        for name, values in block.items():
            expected[name][start:stop] = values
    for row in range(n_eval):
        metrics = {}
        for i, name in enumerate(eval_names):
            shape = expected[name].shape[1:]
            metrics[name] = 1e6 * i + 1e3 * row + np.arange(math.prod(shape)).reshape(shape)
            expected[name][row] = metrics[name]
        store.write_eval(row, metrics)
    return expected


def check_reads_back(run_dir: Path, expected: dict[str, np.ndarray], reader: RunReader,
                     n_train: int, n_eval: int) -> None:
    """Plain xarray reads every array as written; the reader's valid rows are those rows."""
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        for name, values in expected.items():
            np.testing.assert_array_equal(ds[name].values, values, err_msg=name)
    assert (reader.n_train, reader.n_eval) == (n_train, n_eval)
    training, evaluations = reader.training(), reader.evaluations()
    for name in training.data_vars:
        np.testing.assert_array_equal(training[name].values, expected[name][:n_train])
    for name in evaluations.data_vars:
        np.testing.assert_array_equal(evaluations[name].values, expected[name][:n_eval])


def chunks_of(run_dir: Path) -> dict[str, tuple[int, ...]]:
    group = zarr.open_group(str(run_dir / "metrics.zarr"), mode="r")
    return {name: tuple(array.chunks) for name, array in group.arrays()}


# 4,500 training rows (log every 2 of 9,000 steps), 181 evaluations (every 50 steps).
NEW = dict(max_steps=9_000, log_every=2, eval_every=50)


@pytest.mark.slow
def test_new_stores_chunk_to_the_documented_caps_and_read_back_as_written(tmp_path):
    layout = make_layout("new", **NEW)
    assert (layout.n_train, layout.n_eval) == (4_500, 181)
    # Blocks crossing the 4,096-row chunk boundary, evaluations crossing the 170-row one.
    expected = write_run(tmp_path / "new", layout, [(0, 1_000), (1_000, 4_090), (4_090, 4_400)],
                         175)
    chunks = chunks_of(tmp_path / "new")
    # Written out from docs/run-store.md: rows min(rows of the dimension, 4,096 | 1,024,
    # 262,144 bytes / (8 bytes x values per row)).
    assert chunks["train_loss"] == chunks["train_loss_grad"] == (4_096,)
    assert chunks["eval_rel_mse"] == (181,)
    assert chunks["eval_scale_mse"] == (181, 3)
    assert chunks["eval_spectral_mse"] == (181, 64)  # 512 B a row: 512 rows fit
    assert chunks["eval_scale_spectral_mse"] == (170, 3, 64)  # 1,536 B a row: 170 rows
    reader = RunReader(tmp_path / "new")
    reader.poll()
    reader.require(*(n for n in expected if n.startswith("eval_") or n == "grad_norm"))
    check_reads_back(tmp_path / "new", expected, reader, 4_400, 175)


@pytest.mark.slow
def test_stores_with_the_earlier_chunks_read_as_before_beside_new_ones(tmp_path, monkeypatch):
    """A store written with 256-row training chunks and 64-row evaluation chunks (what the
    writer made before), polled in one directory with a new store: both read as written,
    and a variable asked for later (``require_all``) reads from both in one call."""
    layout = dict(max_steps=1_200, log_every=2, eval_every=10)  # 600 rows, 121 evaluations
    new = write_run(tmp_path / "runs" / "new", make_layout("new", **layout), [(0, 300)], 70)
    with monkeypatch.context() as patch:
        patch.setattr(preallocate, "TRAIN_CHUNK_ROWS", 256)
        patch.setattr(preallocate, "EVAL_CHUNK_ROWS", 64)
        patch.setattr(preallocate, "chunk_rows", lambda n_rows, row_values, max_rows: max_rows)
        old = write_run(tmp_path / "runs" / "old", make_layout("old", **layout),
                        [(0, 7), (7, 250), (250, 261), (261, 530)], 70)
    assert chunks_of(tmp_path / "runs" / "old")["train_loss"] == (256,)
    assert chunks_of(tmp_path / "runs" / "old")["eval_scale_spectral_mse"] == (64, 3, 64)
    assert chunks_of(tmp_path / "runs" / "new")["train_loss"] == (600,)
    source = RunsDirectory(tmp_path / "runs")
    source.poll()
    assert source.unreadable == {}
    require_all([(source["old"], ["eval_scale_spectral_mse", "grad_norm"]),
                 (source["new"], ["eval_spectral_target", "lambda_grad"])])
    assert "eval_scale_spectral_mse" in source["old"].evaluations()
    assert "eval_spectral_target" in source["new"].evaluations()
    check_reads_back(tmp_path / "runs" / "old", old, source["old"], 530, 70)
    check_reads_back(tmp_path / "runs" / "new", new, source["new"], 300, 70)


@pytest.mark.slow
def test_one_unreadable_chunk_spoils_only_its_run_in_a_shared_read(tmp_path):
    """Rows of two runs read in one trip: a run whose chunk file is damaged is unreadable
    (one line), the other reads as written; ``require_all`` stores what it could read and
    then raises the damaged run's error."""
    layout = dict(max_steps=200, log_every=2, eval_every=10)
    good = write_run(tmp_path / "runs" / "good", make_layout("good", **layout), [(0, 40)], 5)
    write_run(tmp_path / "runs" / "bad", make_layout("bad", **layout), [(0, 40)], 5)
    source = RunsDirectory(tmp_path / "runs")
    source.poll()
    chunk = tmp_path / "runs" / "bad" / "metrics.zarr" / "eval_spectral_mse" / "c" / "0" / "0"
    chunk.write_bytes(b"not a zstd frame")
    with pytest.raises(Exception):  # noqa: B017 (zarr's codec error; its type is zarr's)
        require_all([(source["bad"], ["eval_spectral_mse"]),
                     (source["good"], ["eval_spectral_mse"])])
    np.testing.assert_array_equal(source["good"].evaluations()["eval_spectral_mse"].values,
                                  good["eval_spectral_mse"][:5])
    # Later rows of the damaged variable: the poll reads them and fails for that run only.
    for run in ("good", "bad"):  # a new evaluation that leaves the damaged chunk as it is
        RunStore.open(tmp_path / "runs" / run).write_eval(5, {"eval_rel_mse": 1.0})
    assert chunk.read_bytes() == b"not a zstd frame"
    result = source.poll()
    assert source["bad"].error is not None and "\n" not in source["bad"].error
    assert source["good"].error is None and source["good"].n_eval == 6
    assert {d.name for d in result.deltas} == {"good", "bad"}


@pytest.mark.slow
def test_plain_arrays_read_from_their_chunk_files_as_zarr_reads_them(tmp_path, monkeypatch):
    """The writer's arrays are read from their chunk files (``ChunkFiles``); any range of
    rows equals zarr-python's; arrays of another kind (other codecs, chunks split along a
    second dimension) and a store without consolidated metadata read through zarr-python."""
    with monkeypatch.context() as patch:  # several chunks per array, the last one partial
        patch.setattr(preallocate, "chunk_rows", lambda n_rows, row_values, max_rows: 7)
        write_run(tmp_path / "run", make_layout("run", max_steps=100, log_every=2,
                                                eval_every=10), [(0, 33)], 9)
    path = tmp_path / "run" / "metrics.zarr"
    arrays, group = MetricsArrays(path), zarr.open_group(str(path), mode="r")
    assert all(reader is not None for reader in arrays._direct.values())
    for name, array in group.arrays():
        n = array.shape[0]
        for start, stop in ((0, n), (3, 15), (6, 8), (7, 14), (n - 1, n + 5), (5, 5)):
            np.testing.assert_array_equal(arrays.rows(name, start, stop), array[start:stop],
                                          err_msg=f"{name}[{start}:{stop}]")
    assert arrays.fixed("held_out").dtype == bool
    np.testing.assert_array_equal(arrays.fixed("held_out"), [False, True, False])

    odd = tmp_path / "odd.zarr"
    root = zarr.open_group(str(odd), mode="w", zarr_format=3, attributes={"run_name": "odd"})
    values = np.arange(60.0).reshape(20, 3)
    gzip = root.create_array("gzipped", shape=(20, 3), dtype="float64", chunks=(8, 3),
                             compressors=[GzipCodec()], dimension_names=["eval_step", "scale"])
    gzip[...] = values
    split = root.create_array("split", shape=(20, 3), dtype="float64", chunks=(8, 2),
                              dimension_names=["eval_step", "scale"])
    split[...] = values + 100
    plain = root.create_array("plain", shape=(20,), dtype="float64", chunks=(8,),
                              dimension_names=["eval_step"], fill_value=np.nan)
    plain[:10] = np.arange(10.0)
    unconsolidated = MetricsArrays(odd)  # no consolidated metadata yet: zarr-python reads all
    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(odd))
    consolidated = MetricsArrays(odd)
    assert consolidated._direct["plain"] is not None
    assert consolidated._direct["gzipped"] is None and consolidated._direct["split"] is None
    assert all(reader is None for reader in unconsolidated._direct.values())
    for arrays in (consolidated, unconsolidated):
        assert arrays.attrs == {"run_name": "odd"} and arrays.sizes == {"eval_step": 20, "scale": 3}
        read = arrays.read(["gzipped", "split", "plain"], 5, 17)
        assert list(read) == ["gzipped", "split", "plain"]
        np.testing.assert_array_equal(read["gzipped"], values[5:17])
        np.testing.assert_array_equal(read["split"], values[5:17] + 100)
        np.testing.assert_array_equal(read["plain"], [5, 6, 7, 8, 9, *[np.nan] * 7])


@pytest.mark.slow
def test_the_chunk_file_reader_reads_only_whole_rows_while_the_writer_writes(tmp_path):
    """A writer thread appends training rows in blocks of 7 and evaluations one by one (each
    rewriting a partly written chunk); the reader, polling meanwhile, holds after every poll
    exactly the values written in every row it counts valid, never a NaN or a torn one."""
    layout = make_layout("live", max_steps=400, log_every=2, eval_every=10)  # 200 rows, 41 evals
    store = RunStore.create(tmp_path / "live", layout, config={"max_steps": layout.max_steps},
                            command_line=["test"], truth=np.zeros((1, T, R, R), np.float32))

    def train_value(row):
        return 0.5 + row

    def eval_value(row):
        return 1e3 * row + np.arange(T * N_BINS, dtype=float).reshape(T, N_BINS)

    def write() -> None:
        for row in range(layout.n_eval):
            start = store.n_train
            stop = min(layout.n_train, start + 7)
            store.write_train_rows(start, {"train_loss": train_value(np.arange(start, stop))})
            store.write_eval(row, {"eval_rel_mse": float(row),
                                   "eval_scale_spectral_mse": eval_value(row)})

    writer = threading.Thread(target=write)
    reader = RunReader(tmp_path / "live")
    reader.poll()
    reader.require("eval_scale_spectral_mse")
    writer.start()
    polls = 0
    while True:
        done = not writer.is_alive()
        reader.poll()
        polls += 1
        assert reader.error is None
        values, _ = reader.training_arrays()
        np.testing.assert_array_equal(values["train_loss"], train_value(np.arange(reader.n_train)))
        values, steps = reader.evaluation_arrays()
        np.testing.assert_array_equal(values["eval_rel_mse"], np.arange(reader.n_eval))
        np.testing.assert_array_equal(values["eval_scale_spectral_mse"],
                                      [eval_value(row) for row in range(reader.n_eval)]
                                      if reader.n_eval else np.zeros((0, T, N_BINS)))
        np.testing.assert_array_equal(steps, layout.eval_steps[:reader.n_eval])
        if done:
            break
    writer.join()
    assert reader.n_eval == layout.n_eval and reader.n_train == min(7 * layout.n_eval, 200)
    assert polls > 2
