"""The learned-fraction page on stores made by the fixture (server side, no browser): each run's
line holds 1 − E/T of the evaluation at the chosen step, and its bandwidth curve the resolved
bandwidth of every evaluation, both computed here from the stored spectra with plain xarray and
a bin-by-bin loop; new evaluations stream into the same sources."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from bokeh.document import Document

from lab.app import LabApp
from lab.state import LabState
from lab.transforms import evaluation_frame
from lab.views import CurvesView, LearnedFractionView
from tests.lab.conftest import RUNS, live_run, on_disk


def expected_fraction(run_dir, scale=None) -> np.ndarray:
    """1 − E/T of every valid evaluation, ``(n_eval, n_bins)``, NaN where T = 0."""
    suffix = "spectral" if scale is None else "scale_spectral"
    error, target = (on_disk(run_dir, f"eval_{suffix}_{kind}") for kind in ("mse", "target"))
    if scale is not None:
        error, target = error[:, scale], target[:, scale]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(target > 0, 1 - error / target, np.nan)


def bandwidth_by_loop(fraction: np.ndarray, upper: np.ndarray) -> float:
    width = 0.0
    for value, edge in zip(fraction, upper, strict=True):
        if np.isnan(value):
            continue
        if value < 0.5:
            break
        width = edge
    return width


def coords(run_dir):
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        return ds["eval_step"].values, ds["k"].values, ds["k_upper"].values


@pytest.mark.slow
def test_lines_and_bandwidths_are_the_stored_spectra_of_every_run(runs_dir):
    view = LearnedFractionView(LabState(runs_dir))
    assert sorted(view.fraction_sources) == sorted(name for name, *_ in RUNS)
    newest = max(int(coords(runs_dir / name)[0][len(on_disk(runs_dir / name, "eval_rel_mse")) - 1])
                 for name, *_ in RUNS)
    assert view.step == newest  # following the newest evaluation of any drawn run
    for name, *_ in RUNS:
        run_dir = runs_dir / name
        steps, k, upper = coords(run_dir)
        fraction = expected_fraction(run_dir)
        line = view.fraction_sources[name].data
        np.testing.assert_array_equal(line["k"], k)
        np.testing.assert_allclose(line["learned_fraction"], fraction[-1], rtol=1e-12)
        curve = view.bandwidth_sources[name].data
        np.testing.assert_array_equal(curve["step"], steps[:len(fraction)])
        np.testing.assert_array_equal(curve["resolved_bandwidth"],
                                      [bandwidth_by_loop(f, upper) for f in fraction])
    widths = view.bandwidth_sources["baseline"].data["resolved_bandwidth"]
    assert widths[-1] > widths[0]  # the fabricated runs learn bands over training


@pytest.mark.slow
def test_the_slider_and_the_scale_choose_what_is_drawn(runs_dir):
    view = LearnedFractionView(LabState(runs_dir))
    steps, *_ = coords(runs_dir / "h1")
    view.follow = False
    view.step = int(steps[2]) + 1  # between two evaluations: the one before
    np.testing.assert_allclose(view.fraction_sources["h1"].data["learned_fraction"],
                               expected_fraction(runs_dir / "h1")[2], rtol=1e-12)
    view.scale = 1
    np.testing.assert_allclose(view.fraction_sources["h1"].data["learned_fraction"],
                               expected_fraction(runs_dir / "h1", scale=1)[2], rtol=1e-12)
    _, _, upper = coords(runs_dir / "h1")
    np.testing.assert_array_equal(
        view.bandwidth_sources["h1"].data["resolved_bandwidth"],
        [bandwidth_by_loop(f, upper) for f in expected_fraction(runs_dir / "h1", scale=1)])
    view.step = int(steps[1])
    view.follow = True  # back to the newest
    assert view.step == max(view.bandwidth_sources[r].data["step"][-1] for r in view.bandwidth_sources)


@pytest.mark.slow
def test_new_evaluations_stream_into_the_same_sources(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(2)
    state = LabState(fresh_runs)
    view = LearnedFractionView(state)
    Document().add_root(view.__panel__().get_root())
    curve, line = view.bandwidth_sources["live"], view.fraction_sources["live"]
    writer.advance(3)
    state.poll()
    assert view.bandwidth_sources["live"] is curve and view.fraction_sources["live"] is line
    fraction = expected_fraction(fresh_runs / "live")
    steps, _, upper = coords(fresh_runs / "live")
    assert len(fraction) == 5
    np.testing.assert_array_equal(curve.data["step"], steps[:5])
    np.testing.assert_array_equal(curve.data["resolved_bandwidth"],
                                  [bandwidth_by_loop(f, upper) for f in fraction])
    np.testing.assert_allclose(line.data["learned_fraction"], fraction[-1], rtol=1e-12)


@pytest.mark.slow
def test_the_app_has_the_learned_fraction_tab(runs_dir):
    app = LabApp(runs_dir)
    assert isinstance(app.views["Learned fraction"], LearnedFractionView)


@pytest.mark.slow
def test_the_curves_page_draws_resolved_bandwidth_and_the_gap_where_stored(runs_dir):
    view = CurvesView(LabState(runs_dir))
    for name, *_ in RUNS:
        _, _, upper = coords(runs_dir / name)
        evals = view.eval_sources[name].data
        np.testing.assert_array_equal(evals["resolved_bandwidth"],
                                      [bandwidth_by_loop(f, upper)
                                       for f in expected_fraction(runs_dir / name)])
        assert np.isnan(evals["generalisation_gap"]).all()  # no training-split rows stored
    assert [r.name for r in view.figures["resolved_bandwidth"].renderers] == list(view.eval_sources)
    # A store with the training split: test minus training relative MSE.
    with xr.open_zarr(runs_dir / "h1" / "metrics.zarr") as ds:
        metrics = ds.isel(eval_step=slice(0, 4)).load()
    train = metrics["eval_rel_mse"] * 0.25
    frame = evaluation_frame(metrics.assign(eval_train_rel_mse=train), metrics["k_upper"].values)
    np.testing.assert_allclose(frame["generalisation_gap"], metrics["eval_rel_mse"].values * 0.75)


@pytest.mark.slow
def test_a_new_evaluation_redraws_only_the_lines_it_changes(fresh_runs):
    """One run writes an evaluation past every other run's newest step: the step follows it,
    yet the other runs' lines still show their newest evaluation, so only its line is sent."""
    writer = live_run(fresh_runs, n_evals=12)
    writer.advance(9)
    state = LabState(fresh_runs)
    view = LearnedFractionView(state)
    doc = Document()
    doc.add_root(view.__panel__().get_root())
    before = {run: source.data for run, source in view.fraction_sources.items()}
    events: list = []
    doc.on_change(events.append)
    writer.advance(1)
    state.poll()
    redrawn = {event.model.name for event in events
               if getattr(event, "attr", None) == "data"
               and str(getattr(event.model, "name", "")).startswith("fraction:")}
    assert redrawn == {"fraction:live"}
    steps, *_ = coords(fresh_runs / "live")
    assert view.step == int(steps[9])
    for run, source in view.fraction_sources.items():
        fraction = expected_fraction(fresh_runs / run)
        np.testing.assert_allclose(source.data["learned_fraction"], fraction[-1], rtol=1e-12)
        if run != "live":
            assert source.data is before[run]
    assert len(expected_fraction(fresh_runs / "live")) == 10
