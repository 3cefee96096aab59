"""lab.transforms: band errors relative to the first evaluation, run differences, per-scale
tables, run selection; each against NumPy on the stored arrays or the store's own final.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from fae_lab.store import SCALE_VARIABLES, SPECTRAL_VARIABLES, RunsDirectory
from lab.transforms import (
    ALL_TRAINING_SCALES,
    band_error_relative_to_first,
    colour_keys,
    evaluation_frame,
    evaluations_to_draw,
    per_scale_table,
    reconstruction_error,
    select_runs,
    spectral_difference,
    spectral_error,
    step_bin_cells,
    training_frame,
)
from tests.lab.conftest import RUNS, on_disk, tags_on_disk


@pytest.fixture(scope="module")
def source(runs_dir):
    source = RunsDirectory(runs_dir)
    source.poll()
    for reader in source.readers.values():
        reader.require(*SPECTRAL_VARIABLES, *SCALE_VARIABLES, "eval_mse")
    return source


@pytest.mark.slow
def test_spectral_error_bins_sum_to_the_mse(source, runs_dir):
    """docs/metrics.md: the bins of E(s, k) sum to eval_mse; per scale, to eval_scale_mse."""
    reader = source["h1"]
    evaluations = reader.evaluations()
    total = spectral_error(evaluations).sum("k").values
    np.testing.assert_allclose(total, on_disk(runs_dir / "h1", "eval_mse"), rtol=1e-10)
    for scale in reader.scales:
        per_scale = spectral_error(evaluations, int(scale)).sum("k").values
        np.testing.assert_allclose(per_scale, on_disk(runs_dir / "h1", "eval_scale_mse")[:, scale],
                                   rtol=1e-10)


def test_band_error_relative_to_first_is_the_ratio_to_row_zero(source, runs_dir):
    error = spectral_error(source["baseline"].evaluations(), ALL_TRAINING_SCALES)
    ratio = band_error_relative_to_first(error)
    raw = on_disk(runs_dir / "baseline", "eval_spectral_mse")
    np.testing.assert_allclose(ratio.values, raw / raw[0], rtol=1e-12)
    np.testing.assert_array_equal(ratio.values[0], np.ones(raw.shape[1]))
    assert ratio.dims == ("eval_step", "k")


def test_band_error_of_an_empty_bin_is_nan_not_infinite():
    error = xr.DataArray([[0.0, 2.0], [1.0, 1.0]], dims=("eval_step", "k"),
                         coords={"eval_step": [0, 10], "k": [1.0, 2.0]})
    ratio = band_error_relative_to_first(error).values
    assert np.isnan(ratio[1, 0]) and ratio[1, 1] == 0.5


@pytest.mark.parametrize("n_evaluations,n_curves", [(1, 8), (2, 8), (9, 3), (500, 8), (7, 7),
                                                    (40, 1), (0, 5)])
def test_evaluations_to_draw_spread_over_training(n_evaluations, n_curves):
    rows = evaluations_to_draw(n_evaluations, n_curves)
    assert len(rows) == min(n_evaluations, n_curves)
    if n_evaluations:
        assert rows[-1] == n_evaluations - 1  # always the newest
        assert rows[0] == (0 if n_curves > 1 else n_evaluations - 1)
        assert np.all(np.diff(rows) > 0)


def test_spectral_difference_on_common_steps(source, runs_dir):
    a = spectral_error(source["baseline"].evaluations())
    b = spectral_error(source["group/combined-rff"].evaluations())  # half as many evaluations
    both = spectral_difference(a, b)
    n = on_disk(runs_dir / "group/combined-rff", "eval_spectral_mse").shape[0]
    raw_a = on_disk(runs_dir / "baseline", "eval_spectral_mse")[:n]
    raw_b = on_disk(runs_dir / "group/combined-rff", "eval_spectral_mse")
    np.testing.assert_allclose(both["difference"].values, raw_b - raw_a, rtol=1e-12)
    np.testing.assert_allclose(both["log10_ratio"].values, np.log10(raw_b / raw_a), rtol=1e-12)
    # The common steps: evaluations every 20 steps from 0 (conftest), as many as B has.
    np.testing.assert_array_equal(both["eval_step"].values, 20 * np.arange(n))
    np.testing.assert_array_equal(both["k"].values, a["k"].values)


def test_spectral_difference_refuses_different_bins(source):
    a = spectral_error(source["baseline"].evaluations())
    coarse = a.isel(k=slice(0, 4))
    with pytest.raises(ValueError, match="different wavenumber bins"):
        spectral_difference(a, coarse)


def test_per_scale_table_matches_final_json(source, runs_dir):
    finished = [name for name, *_, status in RUNS if status == "finished"]
    table = per_scale_table({name: source[name].evaluations() for name in finished})
    assert len(table) == 3 * len(finished)
    for name in finished:
        final = json.loads((runs_dir / name / "final.json").read_text())
        rows = table[table["run"] == name]
        assert len(rows) == 3  # the three scales
        for row in rows.itertuples():
            kind = "held_out_mse" if row.held_out else "train_time_mse"
            assert row.mse == pytest.approx(final[f"final/{kind}_t{row.scale}"], rel=1e-12)
            assert row.split == ("held-out" if row.held_out else "training")


def test_per_scale_table_skips_runs_without_an_evaluation(source):
    empty = source["h1"].evaluations(slice(0, 0))
    table = per_scale_table({"none": empty, "h1": source["h1"].evaluations()})
    assert set(table["run"]) == {"h1"}


def test_select_runs_keeps_exactly_the_allowed_tags(runs_dir):
    tags = {name: tags_on_disk(runs_dir / name) for name, *_ in RUNS}
    allowed = {"loss_type": ["l2", "combined"], "decoder_type": ["rff_output"]}
    expected = [n for n, t in tags.items()
                if t["loss_type"] in ("l2", "combined") and t["decoder_type"] == "rff_output"]
    assert select_runs(tags, allowed) == expected == ["rff", "group/combined-rff"]
    assert select_runs(tags, {}) == list(tags)
    assert select_runs(tags, {"loss_type": []}) == []


def test_colour_keys_are_the_chosen_tag_or_the_run():
    tags = {"a": {"loss_type": "h1", "decoder_type": "standard"},
            "b": {"loss_type": "l2", "decoder_type": "standard"}}
    assert colour_keys(tags, "loss_type") == {"a": "h1", "b": "l2"}
    assert colour_keys(tags, "run") == {"a": "a", "b": "b"}
    with pytest.raises(ValueError):
        colour_keys(tags, "colour")


def test_reconstruction_error_is_recon_minus_truth(source):
    reader = source["rff"]
    truth, recon = reader.truth(), reader.reconstruction(reader.n_eval - 1)
    error = reconstruction_error(truth, recon)
    np.testing.assert_array_equal(error, recon.astype(np.float64) - truth.astype(np.float64))
    # The stored MSE of the training scales is the mean of e² over samples and those scales.
    train = ~reader.held_out
    assert np.mean(error[:, train] ** 2) == pytest.approx(reader.latest("eval_mse"), rel=1e-5)


def test_frames_carry_every_term_and_nan_for_missing_ones(source):
    training = source["h1"].training()
    frame = training_frame(training, ["l2", "grad", "fourier"])
    np.testing.assert_array_equal(frame["train_loss_grad"], training["train_loss_grad"].values)
    assert frame["train_loss_fourier"].isna().all()
    np.testing.assert_allclose(
        frame[["train_loss_l2", "train_loss_grad"]].sum(axis=1) + training["train_loss_latent"],
        frame["train_loss"], rtol=1e-12)  # the terms sum to the loss (docs/run-store.md)
    evaluations = evaluation_frame(source["h1"].evaluations())
    with xr.open_zarr(source["h1"].path / "metrics.zarr") as ds:
        stored_steps = ds["eval_step"].values
    np.testing.assert_array_equal(evaluations["step"], stored_steps[:len(evaluations)])


def test_step_bin_cells_tile_the_map_without_gaps():
    """Rows of steps 0, 10, 30 and two bins: each cell spans half the gap to its neighbours
    in step (the first as wide as the first gap) and its bin's edges in |n|."""
    cells = step_bin_cells(np.array([0, 10, 30]), 1, 3, np.array([0.5, 1.5]), np.array([0.0, 1.0]),
                           np.array([1.0, 2.0]))
    np.testing.assert_array_equal(cells["left"], [5, 5, 20, 20])
    np.testing.assert_array_equal(cells["right"], [15, 15, 40, 40])
    np.testing.assert_array_equal(cells["bottom"], [0, 1, 0, 1])
    np.testing.assert_array_equal(cells["top"], [1, 2, 1, 2])
    np.testing.assert_array_equal(cells["step"], [10, 10, 30, 30])
    np.testing.assert_array_equal(cells["k"], [0.5, 1.5, 0.5, 1.5])
    first = step_bin_cells(np.array([0, 10, 30]), 0, 1, np.array([0.5]), np.array([0.0]), np.array([1.0]))
    assert (first["left"][0], first["right"][0]) == (-5, 5)
