"""The run store (docs/run-store.md): schema read back with plain xarray, region
writes, progress.json, overwrite refusal, the background writer, the reader, synthetic runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fae_lab import config as cfg
from fae_lab.errors import UsageError
from fae_lab.grid import radial_bin_edges
from fae_lab.store import (
    AsyncStoreWriter,
    RunStore,
    StoreLayout,
    eval_schedule,
    list_runs,
    open_run,
    preallocate,
    read_json,
    train_schedule,
    write_json_atomic,
)
from fae_lab.testing.fake_runs import main as synthetic_main
from fae_lab.testing.fake_runs import write_synthetic_run

R, T, S, N_BINS = 8, 3, 2, 4
TERMS = ("l2", "grad", "latent")
TRAIN_NAMES = ("train_loss", "train_loss_l2", "train_loss_grad", "train_loss_latent",
               "grad_norm", "learning_rate", "wall_time", "lambda_grad")
# name -> (dims, seed_key), written out from docs/run-store.md, not from the code's table.
DOC_EVAL = {
    "eval_mse": (("eval_step",), "eval/mse"),
    "eval_rel_mse": (("eval_step",), "eval/rel_mse"),
    "eval_scale_mse": (("eval_step", "scale"), "eval/scale_mse_t{i}"),
    "eval_scale_rel_mse": (("eval_step", "scale"), None),
    "eval_spectral_mse": (("eval_step", "k"), "eval/spectral/mse_by_k"),
    "eval_spectral_target": (("eval_step", "k"), None),
    "eval_scale_spectral_mse": (("eval_step", "scale", "k"), None),
    "eval_scale_spectral_target": (("eval_step", "scale", "k"), None),
    "eval_low_freq_mse": (("eval_step",), "eval/spectral/low_freq_mse"),
    "eval_high_freq_mse": (("eval_step",), "eval/spectral/high_freq_mse"),
    "eval_high_freq_error_ratio": (("eval_step",), "eval/spectral/high_freq_error_ratio"),
    "eval_wall_time": (("eval_step",), None),
}
# The training split's mirror of every evaluation variable but the wall time (docs/run-store.md).
DOC_EVAL.update({"eval_train_" + name.removeprefix("eval_"): (dims, None)
                 for name, (dims, _) in list(DOC_EVAL.items()) if name != "eval_wall_time"})
DOC_TRAIN_SEED_KEYS = {"train_loss": "train/loss", "train_loss_l2": "train/loss_l2",
                       "train_loss_grad": "train/loss_grad",
                       "train_loss_latent": "train/loss_latent"}


def make_layout(max_steps=600, log_every=2, eval_every=100) -> StoreLayout:
    centres, lower, upper = radial_bin_edges(R, N_BINS)
    return StoreLayout(
        train_steps=train_schedule(max_steps, log_every),
        eval_steps=eval_schedule(max_steps, eval_every), loss_terms=TERMS,
        scales=np.arange(T), times=np.array([0.0, 0.5, 2.0]),
        sigmas=np.array([0.0, np.nan, 0.1]), held_out=np.array([False, True, False]),
        k_centres=centres, k_lower=lower, k_upper=upper, spectral_cutoff=R / 4, resolution=R,
        recon_samples=np.array([7, 3]), run_name="unit", tags=("multi_scale", "h1", "standard",
                                                                "attention"))


def make_truth(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((S, T, R, R)).astype(np.float32)


def train_value(name: str, rows: np.ndarray) -> np.ndarray:
    return 1000.0 * TRAIN_NAMES.index(name) + rows + 0.5


def eval_value(name: str, row: int, shape) -> np.ndarray:
    return row + 1000.0 * list(DOC_EVAL).index(name) + np.arange(math.prod(shape)).reshape(shape)


def eval_metrics(layout: StoreLayout, row: int) -> dict[str, np.ndarray]:
    sizes = {"scale": T, "k": N_BINS}
    return {name: eval_value(name, row, tuple(sizes[d] for d in dims[1:]))
            for name, (dims, _) in DOC_EVAL.items()}


def recon_value(row: int) -> np.ndarray:
    return (row + np.arange(S * T * R * R).reshape(S, T, R, R) / 7.0).astype(np.float32)


def create(tmp_path: Path, layout=None, **kwargs) -> RunStore:
    config = cfg.to_json_dict(cfg.RunConfig(wandb_project="group-a"))
    return RunStore.create(tmp_path / "run", layout or make_layout(), config=config,
                           command_line=["fae-lab", "train", "--max-steps", "600"],
                           truth=make_truth(), **kwargs)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_schedules_and_bins_follow_their_definitions():
    assert train_schedule(95, 10).tolist() == [*range(10, 91, 10), 95]
    assert train_schedule(100, 10).tolist() == list(range(10, 101, 10))
    assert train_schedule(3, 10).tolist() == [3]
    assert eval_schedule(95, 10).tolist() == [*range(0, 91, 10), 95]
    assert eval_schedule(100, 50).tolist() == [0, 50, 100]
    assert train_schedule(100, 10).dtype == np.int64
    centres, lower, upper = radial_bin_edges(64, 16)
    width = 64 / math.sqrt(2) / 16
    np.testing.assert_allclose(lower, width * np.arange(16), rtol=1e-14)
    np.testing.assert_allclose(upper, width * np.arange(1, 17), rtol=1e-14)
    np.testing.assert_allclose(centres, width * (np.arange(16) + 0.5), rtol=1e-14)


def test_created_store_has_the_documented_schema(tmp_path):
    layout = make_layout()
    create(tmp_path, layout)
    run = tmp_path / "run"
    ds = xr.open_zarr(run / "metrics.zarr")  # warnings are errors: no consolidated-metadata warning
    assert dict(ds.sizes) == {"step": 300, "eval_step": 7, "scale": T, "k": N_BINS}
    np.testing.assert_array_equal(ds.step, np.arange(2, 601, 2))
    np.testing.assert_array_equal(ds.eval_step, np.arange(0, 601, 100))
    assert ds.step.dtype == np.int64 and ds.eval_step.dtype == np.int64
    assert ds.held_out.dims == ("scale",) and ds.held_out.dtype == bool
    assert ds.held_out.values.tolist() == [False, True, False]
    np.testing.assert_array_equal(ds.time, [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(ds.sigma, [0.0, np.nan, 0.1])
    edges = np.linspace(0, R / math.sqrt(2), N_BINS + 1)
    np.testing.assert_allclose(ds.k_lower, edges[:-1])
    np.testing.assert_allclose(ds.k_upper, edges[1:])
    np.testing.assert_allclose(ds.k, (edges[:-1] + edges[1:]) / 2)
    assert set(ds.coords) == {"step", "eval_step", "scale", "time", "sigma", "held_out", "k",
                              "k_lower", "k_upper"}
    assert set(ds.data_vars) == set(TRAIN_NAMES) | set(DOC_EVAL)
    for name in TRAIN_NAMES:
        assert ds[name].dims == ("step",)
        assert ds[name].attrs.get("seed_key") == DOC_TRAIN_SEED_KEYS.get(name)
    for name, (dims, seed_key) in DOC_EVAL.items():
        assert ds[name].dims == dims
        assert ds[name].attrs.get("seed_key") == seed_key
    for name in ds.data_vars:
        assert ds[name].dtype == np.float64
        assert isinstance(ds[name].attrs["long_name"], str) and ds[name].attrs["long_name"]
        assert np.isnan(ds[name].values).all()
    assert ds.attrs["run_name"] == "unit"
    assert list(ds.attrs["tags"]) == ["multi_scale", "h1", "standard", "attention"]
    assert ds.attrs["resolution"] == R and ds.attrs["spectral_n_bins"] == N_BINS
    assert ds.attrs["spectral_cutoff"] == R / 4 and ds.attrs["fae_lab_version"]

    rec = xr.open_zarr(run / "reconstructions.zarr")
    assert rec.truth.dims == ("sample", "scale", "y", "x")
    assert rec.recon.dims == ("eval_step", "sample", "scale", "y", "x")
    assert rec.truth.dtype == np.float32 and rec.recon.dtype == np.float32
    np.testing.assert_array_equal(rec.truth.values, make_truth())
    assert np.isnan(rec.recon.values).all() and rec.recon.shape == (7, S, T, R, R)
    np.testing.assert_array_equal(rec.sample, [7, 3])
    np.testing.assert_array_equal(rec.x, np.arange(R) / R)
    assert rec.held_out.values.tolist() == [False, True, False]

    progress = read_json(run / "progress.json")
    assert {k: progress[k] for k in ("status", "step", "max_steps", "n_train", "n_eval",
                                     "message")} == {"status": "running", "step": 0,
                                                     "max_steps": 600, "n_train": 0,
                                                     "n_eval": 0, "message": ""}
    assert datetime.fromisoformat(progress["updated"]).utcoffset().total_seconds() == 0
    document = read_json(run / "config.json")
    assert cfg.from_json_dict(document["config"]) == cfg.RunConfig(wandb_project="group-a")
    assert document["tags"] == ["multi_scale", "h1", "standard", "attention"]
    assert document["command_line"] == ["fae-lab", "train", "--max-steps", "600"]
    assert document["run_name"] == "unit" and document["group"] == "group-a"
    assert document["versions"]["numpy"] == np.__version__
    assert document["versions"]["xarray"] == xr.__version__
    assert datetime.fromisoformat(document["created"]).utcoffset().total_seconds() == 0


@pytest.mark.slow
@pytest.mark.parametrize("chunks", ["writer's", "256 / 64 rows"])
def test_region_writes_land_in_their_rows_and_progress_counts_the_prefix(tmp_path, chunks,
                                                                          monkeypatch):
    if chunks != "writer's":  # the chunks of stores written before 2026-11-30
        monkeypatch.setattr(preallocate, "chunk_rows",
                            lambda n_rows, row_values, max_rows: 256 if max_rows > 1024 else 64)
    store = create(tmp_path)
    run = tmp_path / "run"
    expected_train = {name: np.full(300, np.nan) for name in TRAIN_NAMES}
    # With chunks of 256 rows: blocks that start and end inside chunks and cross the chunk
    # boundary (the writer's own chunks hold all 300 rows: blocks rewrite a partly written one).
    for start, stop in [(0, 7), (7, 250), (250, 261), (261, 262)]:
        rows = np.arange(start, stop)
        block = {name: train_value(name, rows) for name in TRAIN_NAMES}
        store.write_train_rows(start, block)
        for name in TRAIN_NAMES:
            expected_train[name][start:stop] = block[name]
        assert read_json(run / "progress.json")["n_train"] == stop
    # A block past a gap is written but not yet valid.
    store.write_train_rows(270, {"train_loss": train_value("train_loss", np.arange(270, 280))})
    expected_train["train_loss"][270:280] = train_value("train_loss", np.arange(270, 280))
    assert read_json(run / "progress.json")["n_train"] == 262

    layout = store.layout
    counts = []
    for row in (0, 2, 1, 4):
        store.write_eval(row, eval_metrics(layout, row), recon_value(row))
        counts.append(read_json(run / "progress.json")["n_eval"])
    assert counts == [1, 1, 3, 3]
    progress = read_json(run / "progress.json")
    assert progress["step"] == max(layout.train_steps[261], layout.eval_steps[2]) == 524

    ds = xr.open_zarr(run / "metrics.zarr")
    assert ds["train_loss"].encoding["chunks"] == ((300,) if chunks == "writer's" else (256,))
    for name in TRAIN_NAMES:
        np.testing.assert_array_equal(ds[name].values, expected_train[name])
    for name in DOC_EVAL:
        values = ds[name].values
        for row in range(7):
            if row in (0, 1, 2, 4):
                np.testing.assert_array_equal(values[row], eval_value(name, row, values.shape[1:]))
            else:
                assert np.isnan(values[row]).all()
    recon = xr.open_zarr(run / "reconstructions.zarr").recon.values
    for row in range(7):
        if row in (0, 1, 2, 4):
            np.testing.assert_array_equal(recon[row], recon_value(row))
        else:
            assert np.isnan(recon[row]).all()


def test_bad_rows_are_refused_before_anything_is_written(tmp_path):
    store = create(tmp_path)
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match="no step variable 'eval_mse'"):
        store.write_train_rows(0, {"eval_mse": [1.0]})
    with pytest.raises(ValueError, match="outside"):
        store.write_train_rows(299, {"train_loss": [1.0, 2.0]})
    with pytest.raises(ValueError, match="eval_scale_mse has shape"):
        store.write_eval(0, {"eval_mse": 1.0, "eval_scale_mse": np.zeros(T + 1)})
    with pytest.raises(ValueError, match="recon has shape"):
        store.write_eval(0, {"eval_mse": 1.0}, np.zeros((S, T, R, R + 1)))
    with pytest.raises(ValueError, match="status"):
        store.update_progress(status="done")
    assert snapshot(tmp_path / "run") == before


@pytest.mark.slow
def test_progress_json_is_replaced_atomically_and_never_ahead_of_the_arrays(tmp_path):
    store = create(tmp_path)
    run = tmp_path / "run"
    for block in range(10):
        rows = np.arange(block * 30, block * 30 + 30)
        store.write_train_rows(int(rows[0]), {"train_loss": train_value("train_loss", rows)})
        progress = read_json(run / "progress.json")
        values = xr.open_zarr(run / "metrics.zarr").train_loss.values
        n = progress["n_train"]
        assert n == rows[-1] + 1
        np.testing.assert_array_equal(values[:n], train_value("train_loss", np.arange(n)))
        assert np.isnan(values[n:]).all()
    store.update_progress(status="diverged", step=301, message="loss is NaN")
    progress = read_json(run / "progress.json")
    assert (progress["status"], progress["step"], progress["message"]) == (
        "diverged", 301, "loss is NaN")
    assert progress["n_train"] == 300
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_write_json_atomic_turns_nan_into_null_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "final.json"
    write_json_atomic(path, {"a": math.nan, "b": [1.0, math.inf, np.float32(2.5)],
                             "c": np.arange(3), "d": np.bool_(True)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None, 2.5], "c": [0, 1, 2],
                                            "d": True}
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


@pytest.mark.slow
def test_an_existing_run_is_refused_byte_for_byte_and_overwrite_removes_only_its_files(tmp_path):
    store = create(tmp_path)
    store.write_train_rows(0, {"train_loss": [1.0, 2.0]})
    store.write_final({"final/step": 4})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "latest").write_text("state")
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    with pytest.raises(UsageError) as refused:
        create(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and str(run) in message and "--overwrite" in message
    assert snapshot(run) == before

    create(tmp_path, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "checkpoints").exists() and not (run / "final.json").exists()
    assert read_json(run / "progress.json")["n_train"] == 0
    assert np.isnan(xr.open_zarr(run / "metrics.zarr").train_loss.values).all()


def test_reopened_store_has_the_same_layout_and_continues_the_rows(tmp_path):
    layout = make_layout()
    store = create(tmp_path, layout)
    store.write_train_rows(0, {"train_loss": train_value("train_loss", np.arange(5))})
    store.write_eval(0, eval_metrics(layout, 0), recon_value(0))
    reopened = RunStore.open(tmp_path / "run")
    assert reopened.layout == layout
    assert (reopened.n_train, reopened.n_eval) == (5, 1)
    reopened.write_train_rows(5, {"train_loss": train_value("train_loss", np.arange(5, 9))})
    assert read_json(tmp_path / "run" / "progress.json")["n_train"] == 9
    with pytest.raises(UsageError, match="no run to resume"):
        RunStore.open(tmp_path / "empty")


def test_truncate_resets_later_rows_to_nan(tmp_path):
    layout = make_layout()
    store = create(tmp_path, layout)
    store.write_train_rows(0, {"train_loss": train_value("train_loss", np.arange(280))})
    for row in range(4):
        store.write_eval(row, eval_metrics(layout, row), recon_value(row))
    store.truncate(n_train=100, n_eval=2)
    progress = read_json(tmp_path / "run" / "progress.json")
    assert (progress["n_train"], progress["n_eval"]) == (100, 2)
    assert progress["step"] == max(layout.train_steps[99], layout.eval_steps[1])
    ds = xr.open_zarr(tmp_path / "run" / "metrics.zarr")
    np.testing.assert_array_equal(ds.train_loss.values[:100], train_value("train_loss",
                                                                           np.arange(100)))
    assert np.isnan(ds.train_loss.values[100:]).all()
    assert np.isnan(ds.eval_scale_spectral_mse.values[2:]).all()
    np.testing.assert_array_equal(ds.eval_mse.values[:2], [eval_value("eval_mse", r, ())
                                                           for r in range(2)])
    recon = xr.open_zarr(tmp_path / "run" / "reconstructions.zarr").recon.values
    assert np.isnan(recon[2:]).all()
    np.testing.assert_array_equal(recon[1], recon_value(1))


def test_async_writer_writes_in_order_from_copies_and_reraises_failures(tmp_path):
    store = create(tmp_path)
    gate = threading.Event()
    blocking_update = store.update_progress

    def wait_then_update(*args):
        assert gate.wait(10)
        blocking_update(*args)

    store.update_progress = wait_then_update
    writer = AsyncStoreWriter(store)
    writer.update_progress(None, 2, "started")  # holds the thread until the gate opens
    values = train_value("train_loss", np.arange(4))
    writer.write_train_rows(0, {"train_loss": values})
    values[:] = -1.0  # the caller reuses its buffer; the queued copy must not change
    gate.set()
    writer.flush()
    written = xr.open_zarr(tmp_path / "run" / "metrics.zarr").train_loss.values[:4]
    np.testing.assert_array_equal(written, train_value("train_loss", np.arange(4)))

    writer.write_train_rows(4, {"not_a_variable": [1.0]})
    with pytest.raises(ValueError, match="not_a_variable"):
        writer.flush()
    with pytest.raises(ValueError, match="not_a_variable"):
        writer.write_train_rows(4, {"train_loss": [1.0]})
    with pytest.raises(ValueError, match="not_a_variable"):
        writer.close()
    assert not writer._thread.is_alive()
    assert read_json(tmp_path / "run" / "progress.json")["n_train"] == 4


@pytest.mark.slow
def test_async_writer_context_manager_flushes_everything(tmp_path):
    layout = make_layout()
    with AsyncStoreWriter(create(tmp_path, layout), max_pending=2) as writer:
        for start in range(0, 300, 10):
            rows = np.arange(start, start + 10)
            writer.write_train_rows(start, {n: train_value(n, rows) for n in TRAIN_NAMES})
        for row in range(layout.n_eval):
            writer.write_eval(row, eval_metrics(layout, row), recon_value(row))
        writer.set_status("finished")
    view = open_run(tmp_path / "run")
    assert view.progress["status"] == "finished"
    assert (view.progress["n_train"], view.progress["n_eval"]) == (300, layout.n_eval)
    ds = view.metrics()
    np.testing.assert_array_equal(ds.grad_norm.values, train_value("grad_norm", np.arange(300)))


def test_reader_slices_to_valid_rows_and_lists_runs(tmp_path):
    layout = make_layout()
    store = create(tmp_path, layout)
    store.write_train_rows(0, {n: train_value(n, np.arange(12)) for n in TRAIN_NAMES})
    store.write_train_rows(20, {"train_loss": [5.0]})  # beyond a gap: not valid yet
    for row in range(3):
        store.write_eval(row, eval_metrics(layout, row), recon_value(row))
    view = open_run(tmp_path / "run")
    assert list(view.tags.values()) == ["multi_scale", "h1", "standard", "attention"]
    assert view.config["wandb_project"] == "group-a"
    ds = view.metrics()
    assert dict(ds.sizes) == {"step": 12, "eval_step": 3, "scale": T, "k": N_BINS}
    np.testing.assert_array_equal(ds.step, layout.train_steps[:12])
    np.testing.assert_array_equal(ds.wall_time, train_value("wall_time", np.arange(12)))
    assert np.isfinite(ds.eval_scale_spectral_target.values).all()
    rec = view.reconstructions()
    assert rec.sizes["eval_step"] == 3
    np.testing.assert_array_equal(rec.recon.isel(eval_step=2).values, recon_value(2))
    assert view.final is None
    store.write_final({"final/test_mse": 0.5, "final/held_out_avg_mse": math.nan})
    view.poll()
    assert view.final == {"final/test_mse": 0.5, "final/held_out_avg_mse": None}

    for name in ("b/run2", "a/deep/run3"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "c").mkdir()
    assert list_runs(tmp_path) == [tmp_path / "a/deep/run3", tmp_path / "b/run2",
                                   tmp_path / "run"]
    assert list_runs(tmp_path / "run") == [tmp_path / "run"]
    with pytest.raises(UsageError, match="holds no run"):
        open_run(tmp_path / "c")


def _np_bins(n_bins):
    """Bin of every mode, edges compared in integers: b R <= sqrt(2) n_bins |n| < (b + 1) R
    (a mode on an edge goes up; the corner |n| = R/sqrt(2) stays in the last bin)."""
    n = (np.fft.fftfreq(R) * R).astype(np.int64)
    ny, nx = np.meshgrid(n, n, indexing="ij")
    scaled = 2 * n_bins**2 * (nx**2 + ny**2)
    bins = np.full((R, R), -1)
    for b in range(n_bins):
        upper = np.inf if b == n_bins - 1 else ((b + 1) * R) ** 2
        bins[((b * R) ** 2 <= scaled) & (scaled < upper)] = b
    assert (bins >= 0).all()
    return bins, np.hypot(nx, ny)


@pytest.mark.parametrize("options", [
    dict(loss_type="l2"),
    dict(loss_type="h1", decoder_type="rff_output", training_mode="single_scale", n_scales=3),
])
def test_synthetic_run_is_consistent_with_its_own_reconstructions(tmp_path, options):
    run = write_synthetic_run(tmp_path / "syn", resolution=R, n_evals=6, n_bins=N_BINS,
                              **options)
    ds = xr.open_zarr(run / "metrics.zarr").load()
    rec = xr.open_zarr(run / "reconstructions.zarr").load()
    train = ~ds.held_out.values
    error = rec.recon.values.astype(np.float64) - rec.truth.values.astype(np.float64)[None]
    truth = rec.truth.values.astype(np.float64)
    # Direct space: MSE, per scale and over the training scales; relative MSE.
    scale_mse = (error**2).mean(axis=(1, 3, 4))
    np.testing.assert_allclose(ds.eval_scale_mse.values, scale_mse, rtol=1e-6)
    np.testing.assert_allclose(ds.eval_mse.values, scale_mse[:, train].mean(1), rtol=1e-6)
    rel = (error[:, :, train] ** 2).sum(axis=(1, 2, 3, 4)) / (truth[:, train] ** 2).sum()
    np.testing.assert_allclose(ds.eval_rel_mse.values, rel, rtol=1e-6)
    # Parseval: the bins sum to the MSE; low + high = MSE.
    np.testing.assert_allclose(ds.eval_spectral_mse.sum("k"), ds.eval_mse, rtol=1e-9)
    np.testing.assert_allclose(ds.eval_scale_spectral_mse.sum("k"), ds.eval_scale_mse, rtol=1e-9)
    low, high = ds.eval_low_freq_mse.values, ds.eval_high_freq_mse.values
    np.testing.assert_allclose(low + high, ds.eval_mse.values, rtol=1e-9)
    np.testing.assert_allclose(ds.eval_high_freq_error_ratio, high / (low + high), rtol=1e-12)
    # Per-bin error power from the stored fields, binned by explicit edge comparison.
    np.testing.assert_allclose(ds.k_upper, (np.arange(N_BINS) + 1) * R / math.sqrt(2) / N_BINS)
    bins, magnitude = _np_bins(N_BINS)
    power = np.abs(np.fft.fft2(error) / R**2) ** 2
    per_bin = np.stack([power[..., bins == b].sum(-1) for b in range(N_BINS)], -1).mean(1)
    np.testing.assert_allclose(ds.eval_scale_spectral_mse.values, per_bin, rtol=1e-6, atol=1e-15)
    high_direct = power[:, :, train][..., magnitude >= R / 4].sum(-1).mean(axis=(1, 2))
    np.testing.assert_allclose(high, high_direct, rtol=1e-6, atol=1e-15)
    target = np.abs(np.fft.fft2(truth) / R**2) ** 2
    target_bins = np.stack([target[..., bins == b].sum(-1) for b in range(N_BINS)], -1).mean(0)
    np.testing.assert_allclose(ds.eval_scale_spectral_target.values[-1], target_bins, rtol=1e-6)
    # Training losses: the terms sum to the total; the loss falls.
    terms = ds.attrs["loss_terms"]
    total = sum(ds[f"train_loss_{t}"] for t in terms)
    np.testing.assert_allclose(ds.train_loss, total, rtol=1e-12)
    assert ds.train_loss.values[-1] < ds.train_loss.values[0]
    # config.json: the real RunConfig shape and the seed's tags.
    document = read_json(run / "config.json")
    config = cfg.from_json_dict(document["config"])
    assert document["tags"] == cfg.tags(config) == [
        options.get("training_mode", "multi_scale"), options["loss_type"],
        options.get("decoder_type", "standard"), "attention"]
    # final.json: the last evaluation under the seed's keys.
    final = read_json(run / "final.json")
    scales = ds.scale.values
    expected_keys = {"final/test_rel_mse", "final/test_mse", "final/train_times_avg_mse",
                     "final/held_out_avg_mse", "final/spectral/low_freq_mse",
                     "final/spectral/high_freq_mse", "final/spectral/high_freq_error_ratio",
                     "final/spectral/mse_by_k", "final/spectral/k", "final/step", "final/status"}
    expected_keys |= {f"final/train_time_mse_t{i}" for i in scales[train]}
    expected_keys |= {f"final/held_out_mse_t{i}" for i in scales[~train]}
    assert set(final) == expected_keys
    last = ds.isel(eval_step=-1)
    assert final["final/test_mse"] == pytest.approx(float(last.eval_mse), rel=1e-12)
    assert final["final/held_out_avg_mse"] == pytest.approx(
        float(last.eval_scale_mse.values[~train].mean()), rel=1e-12)
    for i in scales[train]:
        assert final[f"final/train_time_mse_t{i}"] == pytest.approx(
            float(last.eval_scale_mse.values[i]), rel=1e-12)
    assert final["final/step"] == int(ds.eval_step[-1]) and final["final/status"] == "finished"


@pytest.mark.slow
def test_synthetic_runs_show_spectral_bias_and_its_mitigation(tmp_path):
    def remaining(run):  # error power per bin at the end / at the start, training scales
        spectral = xr.open_zarr(run / "metrics.zarr").eval_spectral_mse.values
        return spectral[-1] / spectral[0]

    baseline = remaining(write_synthetic_run(tmp_path / "l2", n_evals=8))
    h1 = remaining(write_synthetic_run(tmp_path / "h1", n_evals=8, loss_type="h1"))
    # Low |n| converge far more than high |n| (spectral bias) ...
    assert baseline[0] < 0.01 * baseline[-3]
    # ... and the H1 loss removes much more of the high-band error than L2.
    assert h1[-3] < 0.5 * baseline[-3]


@pytest.mark.slow
def test_synthetic_statuses(tmp_path):
    running = open_run(write_synthetic_run(tmp_path / "r", n_evals=6, status="running"))
    assert running.progress["status"] == "running" and running.progress["n_eval"] == 3
    assert running.final is None
    diverged = open_run(write_synthetic_run(tmp_path / "d", n_evals=6, status="diverged"))
    ds = diverged.metrics()
    assert diverged.progress["status"] == "diverged"
    assert np.isnan(ds.train_loss.values[-1]) and np.isfinite(ds.train_loss.values[:-1]).all()
    assert diverged.final["final/status"] == "diverged"


def test_synthetic_command_line_refuses_bad_input_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as bad_flag:
        synthetic_main([str(tmp_path / "x"), "--loss-type", "l3"])
    assert bad_flag.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--loss-type" in err and "fourier_weighted" in err
    assert synthetic_main([str(tmp_path / "x"), "--n-evals", "3"]) == 0
    assert synthetic_main([str(tmp_path / "x"), "--n-evals", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err


@pytest.mark.slow
def test_store_package_does_not_import_jax():
    code = ("import sys, fae_lab, fae_lab.config, fae_lab.store, fae_lab.testing.fake_runs, "
            "fae_lab.store.reader, fae_lab.store.runs; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', "
            "'flax', 'optax')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_a_whole_config_document_keeps_its_extra_keys(tmp_path):
    resolved = cfg.to_json_dict(cfg.RunConfig(wandb_project="g"))
    document = {"config": resolved, "n_parameters": 1234, "tags": ["a", "b", "c", "d"]}
    RunStore.create(tmp_path / "run", make_layout(), config=document, command_line=["x"],
                    truth=make_truth())
    written = read_json(tmp_path / "run" / "config.json")
    assert written["config"] == json.loads(json.dumps(resolved))
    assert written["n_parameters"] == 1234 and written["tags"] == ["a", "b", "c", "d"]
    assert written["group"] == "g" and written["command_line"] == ["x"]
    assert set(written) == {"config", "n_parameters", "tags", "command_line", "versions",
                            "run_name", "group", "created"}


@pytest.mark.slow
@pytest.mark.parametrize(("resolution", "n_bins"), [(16, 5), (24, 16)])
def test_synthetic_metrics_match_the_training_engines_definitions(resolution, n_bins, tmp_path):
    """The fabricated runs are evaluated exactly as ``fae_lab.spectral`` evaluates real ones
    (R = 24: fftfreq(R) * R is not exactly integer there, which once put modes in other bins)."""
    import jax

    from fae_lab import spectral

    run = write_synthetic_run(tmp_path / "syn", resolution=resolution, n_bins=n_bins, n_evals=3,
                              n_samples=3)
    ds = xr.open_zarr(run / "metrics.zarr").load()
    rec = xr.open_zarr(run / "reconstructions.zarr").load()
    with jax.enable_x64(True):
        bins = spectral.radial_bins(resolution, n_bins)
        for row in range(3):
            sums = spectral.evaluation_sums(rec.recon.values[row].astype(np.float64),
                                            rec.truth.values.astype(np.float64), bins, resolution / 4)
            engine = spectral.evaluation_metrics(sums, ~ds.held_out.values)
            for name, value in engine.items():
                np.testing.assert_allclose(ds[name].values[row], np.asarray(value), rtol=1e-9,
                                           atol=1e-18, err_msg=name)
