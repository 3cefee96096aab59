"""The one run-store reader isolates a bad run: each kind of damage to one run (its
progress.json, config.json or metrics.zarr, written first by the real writer) marks that run
unreadable with a one-line reason, while the run beside it reads exactly what plain xarray
reads; a run that heals reads on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fae_lab.errors import UsageError
from fae_lab.store import RunReader, RunsDirectory, open_run
from fae_lab.testing.fake_runs import SyntheticRunWriter

N_EVALS = 6  # rows along eval_step of every run here


def _write(run_dir: Path, written: int) -> SyntheticRunWriter:
    writer = SyntheticRunWriter(run_dir, n_evals=N_EVALS, eval_every=10, log_every=5,
                                resolution=16, n_scales=3, n_samples=2, n_bins=8,
                                loss_type="h1", seed=3)
    writer.advance(written)
    return writer


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template")
    _write(root / "good", 4)
    _write(root / "bad", 3)
    return root


@pytest.fixture
def root(template, tmp_path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "runs"))


def valid_rows(run_dir: Path, name: str) -> np.ndarray:
    """Rows of ``name`` that progress.json counts, read with plain json + xarray."""
    progress = json.loads((run_dir / "progress.json").read_text())
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        return ds[name].isel(eval_step=slice(0, progress["n_eval"])).values


def store_rows(run_dir: Path) -> tuple[int, int]:
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        return ds.sizes["step"], ds.sizes["eval_step"]


def set_progress(run_dir: Path, **changes) -> None:
    path = run_dir / "progress.json"
    progress = json.loads(path.read_text())
    progress.update(changes)
    path.write_text(json.dumps(progress))


def _eval_past_end(run):
    set_progress(run, n_eval=store_rows(run)[1] + 1)


def _train_past_end(run):
    set_progress(run, n_train=store_rows(run)[0] + 5)


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


# damage -> words the reason must hold
DAMAGE = {
    "n_eval beyond the rows": (_eval_past_end, ["n_eval = 7", "0..6"]),
    "n_train beyond the rows": (_train_past_end, ["n_train", "outside"]),
    "negative n_eval": (lambda run: set_progress(run, n_eval=-1), ["n_eval = -1", "outside"]),
    "fractional n_eval": (lambda run: set_progress(run, n_eval=2.5), ["n_eval = 2.5", "whole"]),
    "n_eval as text": (lambda run: set_progress(run, n_eval="2"), ["n_eval = '2'", "whole"]),
    "n_eval true": (lambda run: set_progress(run, n_eval=True), ["n_eval = True", "whole"]),
    "n_eval missing": (lambda run: set_progress(run, n_eval=None) or _drop(run, "n_eval"),
                       ["no n_eval"]),
    "step as text": (lambda run: set_progress(run, step="ten"), ["step = 'ten'"]),
    "progress.json missing": (lambda run: _remove(run / "progress.json"),
                              ["FileNotFoundError", "progress.json"]),
    "progress.json corrupt": (lambda run: (run / "progress.json").write_text('{"n_train": 3,'),
                              ["JSONDecodeError"]),
    "progress.json a list": (lambda run: (run / "progress.json").write_text("[1, 2]"),
                             ["not a JSON object"]),
    # Stands in for a file the dashboard's user may not read (the tests run as root, for whom
    # permission bits do not deny reads): the same OSError path.
    "progress.json a folder": (lambda run: _remove(run / "progress.json")
                               or (run / "progress.json").mkdir(), ["IsADirectoryError"]),
    "metrics.zarr missing": (lambda run: _remove(run / "metrics.zarr"), ["metrics.zarr"]),
    "metrics.zarr unreadable": (lambda run: (run / "metrics.zarr" / "zarr.json").write_text("{oops"),
                                ["Error"]),
}


def _drop(run, key):
    path = run / "progress.json"
    progress = json.loads(path.read_text())
    del progress[key]
    path.write_text(json.dumps(progress))


def check_good_run(source: RunsDirectory, root: Path) -> None:
    good = source["good"]
    assert good.error is None and "good" not in source.unreadable
    assert good.n_eval == 4
    np.testing.assert_array_equal(good.evaluations()["eval_rel_mse"].values,
                                  valid_rows(root / "good", "eval_rel_mse"))
    assert good.summary()["status"] == "running"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_progress_or_store_marks_only_that_run_unreadable(root, damage):
    corrupt, words = DAMAGE[damage]
    corrupt(root / "bad")
    source = RunsDirectory(root)
    result = source.poll()
    check_good_run(source, root)
    why = source.unreadable["bad"]
    assert "\n" not in why and all(word in why for word in words), why
    bad = source["bad"]
    assert bad.error == why and bad.n_train == bad.n_eval == 0
    row = bad.summary()  # what the runs table shows for it
    assert (row["status"], row["message"], row["evaluations"]) == ("unreadable", why, 0)
    assert len(bad.training()["step"]) == 0 and len(bad.evaluations().get("eval_step", [])) == 0
    assert sorted(result.new_runs) == ["bad", "good"]
    with pytest.raises(UsageError) as refused:
        open_run(root / "bad")
    assert str(refused.value) == f"{root / 'bad'}: {why}"
    # Polling again changes nothing for either run.
    assert [d.name for d in source.poll().deltas] == []
    check_good_run(source, root)


@pytest.mark.parametrize(("config", "words"), [
    ("{not json", ["JSONDecodeError"]),
    ('"a string"', ["not a JSON object"]),
    ('{"tags": "multi_scale"}', ["tags = 'multi_scale'", "list"]),
])
def test_a_damaged_config_lists_the_run_as_unreadable_and_retries_it(root, config, words):
    good_config = (root / "bad" / "config.json").read_text()
    (root / "bad" / "config.json").write_text(config)
    source = RunsDirectory(root)
    assert source.poll().new_runs == ["good"]
    check_good_run(source, root)
    why = source.unreadable["bad"]
    assert "\n" not in why and all(word in why for word in words), why
    assert "bad" not in source and source.names() == ["good"]
    with pytest.raises(UsageError, match="bad"):
        open_run(root / "bad")
    (root / "bad" / "config.json").write_text(good_config)  # repaired: found at the next poll
    assert source.poll().new_runs == ["bad"]
    assert source.unreadable == {} and source["bad"].n_eval == 3


@pytest.mark.slow
def test_a_run_that_goes_bad_keeps_its_rows_and_reads_on_once_healed(root):
    writer = _write(root / "later", 2)
    source = RunsDirectory(root)
    source.poll()
    later = source["later"]
    assert later.n_eval == 2 and later.error is None
    before = later.evaluations()["eval_rel_mse"].values.copy()
    good_progress = (root / "later" / "progress.json").read_text()
    _eval_past_end(root / "later")
    delta = later.poll()
    assert delta.status_changed and not delta.has_rows  # the table learns it, no rows
    assert "n_eval = 7" in later.error and "later" in source.unreadable
    np.testing.assert_array_equal(later.evaluations()["eval_rel_mse"].values, before)
    (root / "later" / "progress.json").write_text(good_progress)
    writer.advance(2)  # the writer rewrites progress.json: healed, with two more rows
    delta = later.poll()
    assert later.error is None and "later" not in source.unreadable
    assert delta.eval == slice(2, 4) and delta.status_changed
    np.testing.assert_array_equal(later.evaluations()["eval_rel_mse"].values,
                                  valid_rows(root / "later", "eval_rel_mse"))


def test_open_run_reads_what_xarray_reads(root):
    """The one-shot reader (notebooks, scripts, tests): counts, every metric, final.json."""
    run = open_run(root / "good")
    progress = json.loads((root / "good" / "progress.json").read_text())
    assert (run.n_train, run.n_eval) == (progress["n_train"], progress["n_eval"])
    metrics = run.metrics()
    with xr.open_zarr(root / "good" / "metrics.zarr") as ds:
        expected = ds.isel(step=slice(0, progress["n_train"]),
                           eval_step=slice(0, progress["n_eval"])).load()
    xr.testing.assert_identical(metrics, expected)
    assert run.final is None
    config = json.loads((root / "good" / "config.json").read_text())
    assert list(run.tags.values()) == config["tags"] and run.config == config["config"]
    assert isinstance(run, RunReader)


@pytest.mark.slow
def test_rows_read_before_a_failure_are_still_delivered(root):
    """A damaged final.json is found after the new rows are read: the run is unreadable, and
    the delta still names those rows, so a view that streams deltas misses none."""
    writer = _write(root / "ending", 2)
    reader = RunReader(root / "ending")
    assert reader.poll().eval == slice(0, 2)
    writer.advance(2)
    (root / "ending" / "final.json").write_text("[]")
    delta = reader.poll()
    assert reader.error == "final.json is not a JSON object"
    assert delta.eval == slice(2, 4) and delta.status_changed
    np.testing.assert_array_equal(reader.evaluations()["eval_rel_mse"].values,
                                  valid_rows(root / "ending", "eval_rel_mse"))
