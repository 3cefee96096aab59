"""The run store reader (fae_lab.store.RunReader, RunsDirectory): runs discovered under a directory, read incrementally and only up to the rows
progress.json declares valid. Checked against plain xarray / zarr reads of the same stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

from fae_lab.store import CURVE_VARIABLES, SPECTRAL_VARIABLES, RunReader, RunsDirectory, RunStore
from tests.lab.conftest import RUNS, live_run, on_disk, tags_on_disk
from tests.train_helpers import read_json


@pytest.mark.slow
def test_every_run_is_found_with_its_tags_and_status(runs_dir):
    source = RunsDirectory(runs_dir)
    result = source.poll()
    assert sorted(result.new_runs) == sorted(name for name, *_ in RUNS)
    for name, loss, decoder, status in RUNS:
        reader = source[name]
        assert reader.tags == tags_on_disk(runs_dir / name)
        assert (reader.tags["loss_type"], reader.tags["decoder_type"]) == (loss, decoder)
        progress = read_json(runs_dir / name / "progress.json")
        assert reader.status == status == progress["status"]
        assert (reader.n_train, reader.n_eval) == (progress["n_train"], progress["n_eval"])
    assert source.poll().new_runs == []


@pytest.mark.slow
def test_rows_read_equal_the_valid_rows_of_the_store(runs_dir):
    source = RunsDirectory(runs_dir)
    source.poll()
    for name, *_ in RUNS:
        reader = source[name]
        reader.require(*SPECTRAL_VARIABLES)
        training, evaluations = reader.training(), reader.evaluations()
        for variable in ("train_loss", *(f"train_loss_{t}" for t in reader.loss_terms)):
            np.testing.assert_array_equal(training[variable].values,
                                          on_disk(runs_dir / name, variable))
        for variable in (*CURVE_VARIABLES[1:], *SPECTRAL_VARIABLES):
            np.testing.assert_array_equal(evaluations[variable].values,
                                          on_disk(runs_dir / name, variable))
        assert not np.isnan(evaluations["eval_rel_mse"].values).any()


def test_a_poll_reads_only_rows_written_since_the_last_one(tmp_path):
    run_dir = tmp_path / "live"
    writer = live_run(tmp_path, "live", n_evals=10, eval_every=10)
    writer.advance(2)
    reader = RunReader(run_dir)
    first = reader.poll()
    assert (first.eval.start, first.eval.stop) == (0, 2)
    before = reader.evaluations()["eval_rel_mse"].values.copy()
    # Rows a reader has are never read again: change them on disk behind its back.
    group = zarr.open_group(str(run_dir / "metrics.zarr"), mode="r+", use_consolidated=False)
    group["eval_rel_mse"][0:2] = -1.0
    writer.advance(3)
    second = reader.poll()
    assert (second.eval.start, second.eval.stop) == (2, 5)
    assert second.train.start == first.train.stop
    values = reader.evaluations()["eval_rel_mse"].values
    np.testing.assert_array_equal(values[:2], before)  # not re-read
    np.testing.assert_array_equal(values[2:], on_disk(run_dir, "eval_rel_mse")[2:5])
    nothing = reader.poll()
    assert not nothing.has_rows and not nothing.reset


def test_rows_past_the_valid_count_are_never_read(tmp_path):
    run_dir = tmp_path / "run"
    writer = live_run(tmp_path, "run", n_evals=6, eval_every=10)
    writer.advance(2)
    # A row being written: on disk, but progress.json does not count it yet.
    group = zarr.open_group(str(run_dir / "metrics.zarr"), mode="r+", use_consolidated=False)
    group["eval_rel_mse"][2] = 123.0
    reader = RunReader(run_dir)
    reader.poll()
    assert reader.n_eval == 2
    assert 123.0 not in reader.evaluations()["eval_rel_mse"].values
    assert np.isfinite(reader.latest("eval_high_freq_mse"))


@pytest.mark.slow
def test_a_truncated_run_resets_and_rereads(tmp_path):
    run_dir = tmp_path / "resumed"
    writer = live_run(tmp_path, "resumed", n_evals=8, eval_every=10)
    writer.advance(5)
    reader = RunReader(run_dir)
    reader.poll()
    RunStore.open(run_dir).truncate(n_train=3, n_eval=2)  # --resume from an earlier checkpoint
    # A row below the cut that differs from the reader's copy: the reset must re-read it.
    group = zarr.open_group(str(run_dir / "metrics.zarr"), mode="r+", use_consolidated=False)
    group["eval_rel_mse"][0] = -1.0
    delta = reader.poll()
    assert delta.reset
    assert reader.n_eval == 2 and reader.n_train == 3
    assert reader.evaluations()["eval_rel_mse"].values[0] == -1.0
    np.testing.assert_array_equal(reader.evaluations()["eval_rel_mse"].values,
                                  on_disk(run_dir, "eval_rel_mse"))


def test_required_variables_are_read_whole_then_kept_up_to_date(tmp_path):
    run_dir = tmp_path / "run"
    writer = live_run(tmp_path, "run", n_evals=6, eval_every=10)
    writer.advance(2)
    reader = RunReader(run_dir)
    reader.poll()
    assert "eval_scale_mse" not in reader.evaluations()
    reader.require("eval_scale_mse")
    writer.advance(2)
    reader.poll()
    np.testing.assert_array_equal(reader.evaluations()["eval_scale_mse"].values,
                                  on_disk(run_dir, "eval_scale_mse"))


def test_reconstructions_are_the_stored_fields(runs_dir):
    reader = RunReader(runs_dir / "h1")
    reader.poll()
    with xr.open_zarr(runs_dir / "h1" / "reconstructions.zarr") as ds:
        np.testing.assert_array_equal(reader.truth(), ds["truth"].values)
        for index in (0, reader.n_eval - 1):
            np.testing.assert_array_equal(reader.reconstruction(index),
                                          ds["recon"].isel(eval_step=index).values)
    with pytest.raises(IndexError, match="not written yet"):
        reader.reconstruction(reader.n_eval)


def test_a_broken_run_does_not_stop_the_others(runs_dir, tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "garbled").mkdir()
    (root / "garbled" / "config.json").write_text("{not json")
    (root / "starting").mkdir()
    (root / "starting" / "config.json").write_text(json.dumps({"tags": ["multi_scale", "l2"]}))
    live_run(root, "fine", n_evals=3, eval_every=10).advance(1)
    source = RunsDirectory(root)
    result = source.poll()
    assert sorted(result.new_runs) == ["fine", "starting"]
    assert "garbled" in source.unreadable
    assert source["fine"].n_eval == 1 and source["fine"].error is None
    assert source["starting"].error is not None and not source["starting"].ready
    assert source["starting"].tags["decoder_type"] == "?"
