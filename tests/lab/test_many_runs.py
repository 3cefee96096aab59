"""Views over many runs. Curves: past ``MERGE_ABOVE`` drawn runs each panel is one MultiLine
(the merge threshold and the legend's cap are lowered here so that the fixture's few runs take
that path). Per scale: a poll re-reads only the runs with new evaluations. What is drawn is
checked against plain xarray reads of the stores."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from bokeh.document import Document
from bokeh.models import MultiLine

import lab.views.curves as curves
from lab.state import LabState
from lab.views import CurvesView, PerScaleView
from tests.lab.conftest import RUNS, live_run, on_disk


@pytest.fixture
def merged(monkeypatch):
    monkeypatch.setattr(curves, "MERGE_ABOVE", 1)
    monkeypatch.setattr(curves, "LEGEND_CAP", 2)


def rows_of(view: CurvesView, variable: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = view.panel_sources[variable].data
    return {run: (np.asarray(x), np.asarray(y))
            for run, x, y in zip(data["run"], data["xs"], data["ys"], strict=True)}


def ema_loop(values, weight):
    """The browser's EMA (EMA_JS), written out independently."""
    out, last = [], math.nan
    for x in values:
        if math.isnan(x):
            out.append(math.nan)
            continue
        last = x if math.isnan(last) else weight * last + (1 - weight) * x
        out.append(last)
    return np.array(out)


@pytest.mark.slow
def test_merged_panels_draw_every_runs_stored_rows_in_its_own_colour(runs_dir, merged):
    state = LabState(runs_dir)
    view = CurvesView(state)
    names = sorted(name for name, *_ in RUNS)
    assert view.merged and sorted(view.train_sources) == names
    for fig in view.figures.values():  # one renderer per panel, whatever the number of runs
        (renderer,) = fig.renderers
        assert isinstance(renderer.glyph, MultiLine)
    evals, train = rows_of(view, "eval_rel_mse"), rows_of(view, "train_loss")
    terms = rows_of(view, "terms")
    n_terms = 0
    for name in names:
        with xr.open_zarr(runs_dir / name / "metrics.zarr") as ds:
            eval_steps, steps = ds["eval_step"].values, ds["step"].values
            n_terms += len(ds.attrs["loss_terms"])
            first_term = ds.attrs["loss_terms"][0]
        y = on_disk(runs_dir / name, "eval_rel_mse")
        np.testing.assert_array_equal(evals[name][1], y)
        np.testing.assert_array_equal(evals[name][0], eval_steps[:len(y)])
        y = on_disk(runs_dir / name, "train_loss")
        np.testing.assert_array_equal(train[name][1], y)
        np.testing.assert_array_equal(train[name][0], steps[:len(y)])
        np.testing.assert_array_equal(terms[f"{name}: {first_term}"][1],
                                      on_disk(runs_dir / name, f"train_loss_{first_term}"))
    assert len(view.panel_sources["terms"].data["ys"]) == n_terms
    # Each run keeps the colour and dash it has when drawn one renderer per run.
    data = view.panel_sources["eval_rel_mse"].data
    merged_styles = {run: (c, d) for run, c, d in zip(data["run"], data["colour"], data["dash"],
                                                      strict=True)}
    curves.MERGE_ABOVE = 100
    single = CurvesView(state)
    assert not single.merged
    single_colours = {r.name: r.glyph.line_color for r in single.figures["eval_rel_mse"].renderers}
    assert {run: c for run, (c, _) in merged_styles.items()} == single_colours
    assert {run: d for run, (_, d) in merged_styles.items()} == \
        {run: state.style(run).dash for run in names}
    assert len({c for c, _ in merged_styles.values()}) > 1
    # A capped legend naming the first runs, the rest counted.
    (legend,) = view.figures["train_loss"].legend
    assert [item.label.value for item in legend.items] == list(view.train_sources)[:2]
    assert legend.title == f"first 2 of {len(names)} (+{len(names) - 2} more)"
    assert "+2 more" in view._merged_note.object
    doc = Document()
    doc.add_root(view.__panel__().get_root(doc))
    json.dumps(doc.to_json(), default=str)  # the page serialises


@pytest.mark.slow
def test_merged_panels_patch_only_the_new_rows_in_place(fresh_runs, merged):
    writer = live_run(fresh_runs)
    writer.advance(2)
    state = LabState(fresh_runs)
    view = CurvesView(state)
    doc = Document()
    doc.add_root(view.__panel__().get_root(doc))
    source, figure = view.panel_sources["eval_rel_mse"], view.figures["eval_rel_mse"]
    before = {run: y.copy() for run, (_, y) in rows_of(view, "eval_rel_mse").items()}
    events = []
    doc.on_change(events.append)
    writer.advance(3)
    state.poll()
    assert view.panel_sources["eval_rel_mse"] is source and view.figures["eval_rel_mse"] is figure
    after = rows_of(view, "eval_rel_mse")
    np.testing.assert_array_equal(after["live"][1], on_disk(fresh_runs / "live", "eval_rel_mse"))
    assert len(after["live"][1]) == 5
    for run, y in before.items():
        if run != "live":
            np.testing.assert_array_equal(after[run][1], y)
    # Patches of the live run's rows, not new sources.
    kinds = {type(event).__name__ for event in events}
    assert "ColumnsPatchedEvent" in kinds and "ColumnDataChangedEvent" not in kinds
    np.testing.assert_array_equal(rows_of(view, "train_loss")["live"][1],
                                  on_disk(fresh_runs / "live", "train_loss"))
    # Smoothing: the merged training panels carry the EMA the browser would draw.
    view.smoothing = 0.8
    raw = on_disk(fresh_runs / "live", "train_loss")
    np.testing.assert_allclose(rows_of(view, "train_loss")["live"][1], ema_loop(raw, 0.8),
                               rtol=1e-12)


def test_ema_matches_the_browsers_loop_with_gaps():
    values = np.array([np.nan, 2.0, 4.0, np.nan, 1.0, 8.0])
    np.testing.assert_allclose(curves.ema(values, 0.3), ema_loop(values, 0.3), rtol=1e-12)
    assert np.isnan(curves.ema(np.array([np.nan, np.nan]), 0.5)).all()


@pytest.mark.slow
def test_per_scale_bars_re_read_only_the_runs_with_new_evaluations(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(2)
    state = LabState(fresh_runs)
    view = PerScaleView(state)
    others = view.table[view.table["run"] != "live"].reset_index(drop=True)
    reads = []
    original = view._newest
    view._newest = lambda run: (reads.append(run), original(run))[1]
    writer.advance(3)
    state.poll()
    assert reads == ["live"]  # the other runs' rows are kept, not re-read
    ours = view.table[view.table["run"] == "live"]
    np.testing.assert_array_equal(ours["mse"], on_disk(fresh_runs / "live", "eval_scale_mse")[-1])
    with xr.open_zarr(fresh_runs / "live" / "metrics.zarr") as ds:
        assert (ours["eval_step"] == int(ds["eval_step"].values[4])).all()
    pd.testing.assert_frame_equal(
        view.table[view.table["run"] != "live"].reset_index(drop=True), others)
    assert list(dict.fromkeys(view.table["run"])) == [r for r in state.visible
                                                      if r in set(view.table["run"])]
    bars = [v for run, v in zip(view.source.data["run"], view.source.data["value"], strict=True)
            if run == "live"]
    np.testing.assert_array_equal(bars, on_disk(fresh_runs / "live", "eval_scale_mse")[-1])
