"""Each view on stores made by the fixture (no server, no browser): what it draws equals what
plain xarray reads from the stores, live rows arrive by streaming into the same sources, and
the tag filter decides which runs are drawn."""

from __future__ import annotations

import json
import shutil

import numpy as np
import panel as pn
import pytest
import xarray as xr
from bokeh.document import Document

from lab.state import LabState
from lab.views import (
    CurvesView,
    FrequencyBandsView,
    LaunchForm,
    PerScaleView,
    ReconstructionsView,
    RunFilter,
    RunsTable,
    TwoRunComparison,
)
from tests.lab.conftest import RUNS, live_run, on_disk, tags_on_disk
from tests.lab.rendered import rendered


@pytest.mark.slow
def test_curves_draw_the_stored_rows_of_every_run(runs_dir):
    view = CurvesView(LabState(runs_dir))
    assert sorted(view.train_sources) == sorted(name for name, *_ in RUNS)
    for name, *_ in RUNS:
        train, evals = view.train_sources[name].data, view.eval_sources[name].data
        np.testing.assert_array_equal(train["train_loss"], on_disk(runs_dir / name, "train_loss"))
        np.testing.assert_array_equal(evals["eval_high_freq_error_ratio"],
                                      on_disk(runs_dir / name, "eval_high_freq_error_ratio"))
        with xr.open_zarr(runs_dir / name / "metrics.zarr") as ds:
            steps = ds["eval_step"].values[:len(evals["step"])]
        np.testing.assert_array_equal(evals["step"], steps)
    # One line per run in each panel, and one per loss term in the terms panel.
    lines = view.figures["eval_rel_mse"].renderers
    assert sorted(r.name for r in lines) == sorted(view.eval_sources)
    terms = {}
    for name, *_ in RUNS:
        with xr.open_zarr(runs_dir / name / "metrics.zarr") as ds:
            terms[name] = len(ds.attrs["loss_terms"])
    assert len(view.figures["terms"].renderers) == sum(terms.values())


@pytest.mark.slow
def test_new_rows_stream_into_the_same_sources(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(2)
    state = LabState(fresh_runs)
    view = CurvesView(state)
    Document().add_root(view.__panel__().get_root())
    source = view.eval_sources["live"]
    figure = view.figures["eval_rel_mse"]
    writer.advance(3)
    state.poll()
    assert view.eval_sources["live"] is source  # streamed, not redrawn
    assert view.figures["eval_rel_mse"] is figure
    np.testing.assert_array_equal(source.data["eval_rel_mse"],
                                  on_disk(fresh_runs / "live", "eval_rel_mse"))
    assert len(source.data["step"]) == 5
    np.testing.assert_array_equal(view.train_sources["live"].data["train_loss"],
                                  on_disk(fresh_runs / "live", "train_loss"))


@pytest.mark.slow
def test_a_new_run_is_drawn_at_the_next_poll(fresh_runs):
    state = LabState(fresh_runs)
    view = CurvesView(state)
    assert "late" not in view.train_sources
    live_run(fresh_runs, "late").advance(1)
    state.poll()
    assert "late" in view.train_sources and len(view.eval_sources["late"].data["step"]) == 1


@pytest.mark.slow
def test_the_tag_toggles_decide_which_runs_are_drawn(runs_dir):
    state = LabState(runs_dir)
    view, table, controls = CurvesView(state), RunsTable(state), RunFilter(state)
    tags = {name: tags_on_disk(runs_dir / name) for name, *_ in RUNS}
    state.loss_type = [v for v in state.loss_type if v != "h1"]
    expected = sorted(n for n, t in tags.items() if t["loss_type"] != "h1")
    assert sorted(view.train_sources) == expected
    assert sorted(table.table.value["run"]) == expected
    state.decoder_type = ["standard"]
    expected = sorted(n for n, t in tags.items()
                      if t["loss_type"] != "h1" and t["decoder_type"] == "standard")
    assert sorted(view.train_sources) == expected == ["baseline"]
    assert "Drawing 1 of 4 runs: <bdi>baseline</bdi>" in controls.summary.object
    # The toggle widgets are the state's own parameters.
    controls.toggles["decoder_type"].value = ["standard", "rff_output"]
    assert "rff" in view.train_sources


@pytest.mark.slow
def test_colours_follow_the_chosen_tag(runs_dir):
    state = LabState(runs_dir, colour_by="decoder_type")
    view = CurvesView(state)
    colours = {r.name: r.glyph.line_color for r in view.figures["eval_rel_mse"].renderers}
    decoders = {name: tags_on_disk(runs_dir / name)["decoder_type"] for name, *_ in RUNS}
    assert sorted(colours) == sorted(decoders)  # every run drawn
    for a in colours:
        for b in colours:
            assert (colours[a] == colours[b]) == (decoders[a] == decoders[b])


def test_runs_table_shows_status_step_and_final_metrics(runs_dir):
    table = RunsTable(LabState(runs_dir)).table.value.set_index("run")
    for name, *_, status in RUNS:
        progress = json.loads((runs_dir / name / "progress.json").read_text())
        row = table.loc[name]
        assert (row["status"], row["step"], row["evaluations"]) == (
            status, progress["step"], progress["n_eval"])
        final_path = runs_dir / name / "final.json"
        if final_path.exists():
            final = json.loads(final_path.read_text())
            assert row["final_test_rel_mse"] == pytest.approx(final["final/test_rel_mse"])
        else:
            assert np.isnan(row["final_test_rel_mse"])


@pytest.mark.slow
def test_runs_table_patches_cells_as_a_run_progresses(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(1)
    state = LabState(fresh_runs)
    table = RunsTable(state)
    before = table.table.value
    runs_before = list(before["run"])  # a copy: a patch changes the frame in place
    assert before.set_index("run").loc["live", "evaluations"] == 1
    writer.advance(2)
    state.poll()
    assert table.table.value is before  # patched, not replaced
    row = table.table.value.set_index("run").loc["live"]
    assert row["evaluations"] == 3
    assert row["rel_mse"] == on_disk(fresh_runs / "live", "eval_rel_mse")[-1]
    assert list(table.table.value["run"]) == runs_before


@pytest.mark.slow
def test_frequency_bands_map_is_log_error_relative_to_the_first_evaluation(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(3)
    state = LabState(fresh_runs)
    view = FrequencyBandsView(state, run="live", n_curves=2)
    raw = on_disk(fresh_runs / "live", "eval_spectral_mse")
    n_bins = raw.shape[1]
    cells = view.cells.data
    assert len(cells["log_ratio"]) == 3 * n_bins
    np.testing.assert_allclose(np.asarray(cells["log_ratio"]).reshape(3, n_bins),
                               np.log10(raw / raw[0]), rtol=1e-12)
    # Spectra at the first and the newest evaluation, the newest last.
    assert list(view.spectra.data["step"]) == [0, 40]
    np.testing.assert_array_equal(view.spectra.data["ys"][-1], raw[-1])
    source = view.cells
    writer.advance(2)
    state.poll()
    assert view.cells is source and len(source.data["log_ratio"]) == 5 * n_bins
    raw = on_disk(fresh_runs / "live", "eval_spectral_mse")
    np.testing.assert_allclose(np.asarray(source.data["log_ratio"])[-n_bins:],
                               np.log10(raw[-1] / raw[0]), rtol=1e-12)
    # One scale: the per-scale variant.
    view.scale = 2
    per_scale = on_disk(fresh_runs / "live", "eval_scale_spectral_mse")[:, 2]
    np.testing.assert_allclose(view.spectra.data["ys"][-1], per_scale[-1], rtol=1e-12)


@pytest.mark.slow
def test_reconstructions_follow_the_newest_evaluation(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(2)
    state = LabState(fresh_runs)
    view = ReconstructionsView(state)
    view.param.update(run="live", scale=1, sample=1)
    assert view.evaluation == 1
    writer.advance(2)
    state.poll()
    assert view.evaluation == 3
    truth_img, recon_img, error_img = (source.data["image"][0] for source in view.images.sources)
    truth = on_disk(fresh_runs / "live", "truth", "reconstructions.zarr")[1, 1]
    recon = on_disk(fresh_runs / "live", "recon", "reconstructions.zarr")[3, 1, 1]
    np.testing.assert_array_equal(truth_img, truth)
    np.testing.assert_array_equal(recon_img, recon)
    np.testing.assert_allclose(error_img, recon.astype(float) - truth, rtol=1e-12)
    assert "Step 60" in view.message.object
    view.follow = False
    view.evaluation = 0
    writer.advance(1)
    state.poll()
    assert view.evaluation == 0  # held where the user put it


def test_per_scale_bars_are_each_runs_newest_scale_errors(runs_dir):
    view = PerScaleView(LabState(runs_dir))
    data = view.source.data
    for name, *_ in RUNS:
        newest = on_disk(runs_dir / name, "eval_scale_mse")[-1]
        ours = [v for run, v in zip(data["run"], data["value"], strict=True) if run == name]
        np.testing.assert_array_equal(ours, newest)
    held = [h for h, x in zip(data["hatch"], data["x"], strict=True) if "held-out" in x[0]]
    assert held and set(held) == {"/"}


@pytest.mark.slow
def test_two_run_comparison_spectra_and_ratio(runs_dir):
    state = LabState(runs_dir)
    view = TwoRunComparison(state)
    # Defaults: the l2 / standard baseline, and the first run found that differs from it.
    tags = {name: tags_on_disk(runs_dir / name) for name in state.runs}
    other = next(n for n in state.runs if (tags[n]["loss_type"], tags[n]["decoder_type"])
                 != ("l2", "standard"))
    assert (view.run_a, view.run_b) == ("baseline", other)
    view.run_b = "h1"
    a = on_disk(runs_dir / "baseline", "eval_spectral_mse")
    b = on_disk(runs_dir / "h1", "eval_spectral_mse")
    assert view.step == 140  # newest common evaluation: 8 evaluations, every 20 steps
    np.testing.assert_array_equal(view.spectra.data["a"], a[-1])
    np.testing.assert_allclose(view.spectra.data["log10_ratio"], np.log10(b[-1] / a[-1]))
    assert len(view.cells.data["log10_ratio"]) == a.size
    view.run_b = "group/combined-rff"  # half way: common steps end earlier
    n = on_disk(runs_dir / "group/combined-rff", "eval_spectral_mse").shape[0]
    assert view.step == 20 * (n - 1)
    # Images of the first training scale (the spectra are over the training scales).
    images = [source.data["image"][0] for source in view.images.sources]
    truth = on_disk(runs_dir / "baseline", "truth", "reconstructions.zarr")[0, 0]
    recon = on_disk(runs_dir / "baseline", "recon", "reconstructions.zarr")[n - 1, 0, 0]
    np.testing.assert_array_equal(images[0], truth)
    np.testing.assert_allclose(images[3], recon.astype(float) - truth)
    bound = max(np.abs(images[3]).max(), np.abs(images[4]).max())
    assert (view.images.mappers[3].low, view.images.mappers[3].high) == (-bound, bound)


@pytest.mark.slow
def test_a_hidden_view_catches_up_when_shown(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(1)
    state = LabState(fresh_runs)
    view = PerScaleView(state, shown=False)
    assert len(view.source.data["value"]) == 0  # nothing drawn while hidden
    writer.advance(2)
    state.poll()
    assert len(view.source.data["value"]) == 0
    view.shown = True
    newest = on_disk(fresh_runs / "live", "eval_scale_mse")[-1]
    ours = [v for run, v in zip(view.source.data["run"], view.source.data["value"], strict=True)
            if run == "live"]
    np.testing.assert_array_equal(ours, newest)


def test_launch_form_refuses_bad_values_with_the_clis_message(fresh_runs):
    form = LaunchForm(LabState(fresh_runs), run_name="bad", batch_size=0)

    def shown() -> str:  # the feedback's text on the page (its Markdown escapes punctuation)
        return rendered(form.feedback)[0]

    assert form.submit() is None
    assert form.feedback.alert_type == "danger" and "--batch-size" in shown()
    form.batch_size, form.rff_dim = 4, 33
    assert form.submit() is None and "--rff-dim" in shown()
    form.rff_dim, form.run_name = 32, "../escape"
    assert form.submit() is None and "run name '../escape'" in shown()
    assert not (fresh_runs / "bad").exists() and not form.launches


def test_launch_form_takes_data_files_from_its_data_directory_only(fresh_runs, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    outside = tmp_path / "secret.npz"
    outside.write_bytes(b"")
    form = LaunchForm(LabState(fresh_runs), data_dir, run_name="stolen", data_source="data file")
    messages = set()
    for path in (str(outside), "/etc/passwd", "../secret.npz", "missing.npz"):
        form.data_path = path
        assert form.submit() is None and form.feedback.alert_type == "danger"
        messages.add(rendered(form.feedback)[0])
    assert messages == {f"Not launched: --data-path: not an allowed data file "
                        f"(files under {data_dir} only)\n"}
    assert not (fresh_runs / "stolen").exists() and not form.launches


@pytest.mark.slow
def test_two_run_comparison_map_grows_with_the_common_steps(fresh_runs):
    first = live_run(fresh_runs, "a", loss_type="l2", decoder_type="standard")
    second = live_run(fresh_runs, "b", loss_type="h1")
    first.advance(3)
    second.advance(2)
    state = LabState(fresh_runs)
    view = TwoRunComparison(state)
    view.param.update(run_a="a", run_b="b")
    n_bins = len(state.source["a"].k)
    cells = view.cells
    assert len(cells.data["log10_ratio"]) == 2 * n_bins and view.step == 20
    first.advance(1)
    state.poll()  # nothing new in common: the map is unchanged
    assert len(cells.data["log10_ratio"]) == 2 * n_bins and view.step == 20
    second.advance(2)
    state.poll()
    assert view.cells is cells and view.step == 60  # follows the newest common step
    a = on_disk(fresh_runs / "a", "eval_spectral_mse")[:4]
    b = on_disk(fresh_runs / "b", "eval_spectral_mse")[:4]
    np.testing.assert_allclose(np.asarray(cells.data["log10_ratio"]).reshape(4, n_bins),
                               np.log10(b / a), rtol=1e-12)
    np.testing.assert_allclose(view.spectra.data["log10_ratio"], np.log10(b[-1] / a[-1]))


@pytest.mark.slow
def test_a_poll_that_finds_a_new_run_draws_each_view_once(fresh_runs):
    """The new run changes ``visible`` (a refresh, which reads this poll's rows) and is in the
    same poll's deltas: the view must not then ingest those rows a second time."""
    state = LabState(fresh_runs)
    view = PerScaleView(state)
    calls = []
    view.refresh = lambda original=view.refresh: (calls.append("refresh"), original())[1]
    view.ingest = lambda result, original=view.ingest: (calls.append("ingest"), original(result))[1]
    live_run(fresh_runs).advance(2)
    state.poll()
    assert calls == ["refresh"]
    assert "live" in set(view.table["run"])
    live_run(fresh_runs, "second").advance(1)
    state.poll()  # the next poll: the live run has nothing new, the second run is new
    assert calls == ["refresh", "refresh"]


@pytest.mark.slow
def test_a_run_whose_progress_counts_rows_the_store_lacks_is_listed_not_drawn(fresh_runs):
    """One bad run (n_eval beyond the store's rows; another with a garbled config.json) leaves
    every view working: the good runs draw their stored rows, the runs table marks the bad run
    unreadable with the reason, and the filter's panel lists both bad runs as plain text."""
    progress_path = fresh_runs / "h1" / "progress.json"
    progress = json.loads(progress_path.read_text())
    with xr.open_zarr(fresh_runs / "h1" / "metrics.zarr") as ds:
        rows = ds.sizes["eval_step"]
    progress["n_eval"] = rows + 3
    progress_path.write_text(json.dumps(progress))
    (fresh_runs / "broken").mkdir()
    (fresh_runs / "broken" / "config.json").write_text("{<b>not json</b>")
    state = LabState(fresh_runs)
    views = [CurvesView(state), FrequencyBandsView(state), PerScaleView(state),
             ReconstructionsView(state), TwoRunComparison(state)]
    table, controls = RunsTable(state), RunFilter(state)
    for view in (*views, table, controls):
        Document().add_root(view.__panel__().get_root())
    state.poll()
    curves = views[0]
    for name, *_ in RUNS:
        if name != "h1":
            np.testing.assert_array_equal(curves.eval_sources[name].data["eval_rel_mse"],
                                          on_disk(fresh_runs / name, "eval_rel_mse"))
    assert len(curves.eval_sources["h1"].data["step"]) == 0
    frame = table.table.value.set_index("run")
    why = f"progress.json: n_eval = {rows + 3} is outside 0..{rows}"
    assert frame.loc["h1", "status"] == "unreadable"
    assert frame.loc["h1", "message"].startswith(why)
    assert frame.loc["baseline", "status"] == "finished"
    listed = controls.unreadable.object
    assert controls.unreadable.visible and isinstance(controls.unreadable, pn.pane.Str)
    assert f"h1: {why}" in listed and "broken: JSONDecodeError" in listed
    # Repaired: the note goes away and the run draws at the next poll.
    progress["n_eval"] = rows
    progress_path.write_text(json.dumps(progress))
    (fresh_runs / "broken" / "config.json").unlink()
    state.poll()
    assert not controls.unreadable.visible and controls.unreadable.object == ""
    np.testing.assert_array_equal(curves.eval_sources["h1"].data["eval_rel_mse"],
                                  on_disk(fresh_runs / "h1", "eval_rel_mse"))


@pytest.mark.slow
def test_a_run_kept_without_its_reconstructions_says_so_in_the_image_views(fresh_runs):
    """A store kept without reconstructions.zarr (archived runs keep their metrics only): the
    image views say so for that run and blank their fields; the other runs draw as before."""
    shutil.rmtree(fresh_runs / "h1" / "reconstructions.zarr")
    state = LabState(fresh_runs)
    assert not state.source.readers["h1"].has_reconstructions
    assert state.source.readers["baseline"].has_reconstructions
    view = ReconstructionsView(state)
    view.param.update(run="h1")
    assert "without its reconstructions" in view.message.object
    assert all(np.all(source.data["image"][0] == 0) for source in view.images.sources)  # blank
    view.param.update(run="baseline")
    truth = on_disk(fresh_runs / "baseline", "truth", "reconstructions.zarr")[view.sample, view.scale]
    np.testing.assert_array_equal(view.images.sources[0].data["image"][0], truth)
    assert "Step" in view.message.object
    compare = TwoRunComparison(state)
    compare.param.update(run_a="baseline", run_b="h1")
    assert "without its reconstructions" in compare.message.object
    assert "Step" in compare.message.object  # the spectra need only the metrics
