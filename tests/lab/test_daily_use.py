"""The dashboards as a daily user meets them (no browser): informative default samples,
readable axes, stable run colours (the browser checks are in test_browser_daily.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from bokeh.models import Line

from fae_lab.testing.fake_runs import write_synthetic_run
from lab.state import LabState
from lab.views import (
    CurvesView,
    PerScaleView,
    ReconstructionsView,
    RunsTable,
    TwoRunComparison,
)
from lab.views.axes import LOG_TICKS_JS, MAX_LOG_TICKS
from lab.views.curves import PANELS
from tests.lab.conftest import RUNS, live_run, on_disk


def high_power_by_hand(truth: np.ndarray, cutoff: float) -> np.ndarray:
    """Σ_t Σ_{|n| >= c} |FFT(u)/R²|² per sample, wavenumbers folded by hand (min(i, R - i))."""
    S, T, R, _ = truth.shape
    folded = np.array([min(i, R - i) for i in range(R)], dtype=float)
    out = np.zeros(S)
    for s in range(S):
        for t in range(T):
            spectrum = np.fft.fft2(truth[s, t].astype(np.float64)) / R**2
            for i in range(R):
                for j in range(R):
                    if np.sqrt(folded[i] ** 2 + folded[j] ** 2) >= cutoff:
                        out[s] += abs(spectrum[i, j]) ** 2
    return out


@pytest.fixture(scope="module")
def blank_first(tmp_path_factory):
    """Two runs of four test samples whose sample 0 is an empty (all-zero) field."""
    root = tmp_path_factory.mktemp("blank")
    for name, loss in (("a", "l2"), ("b", "h1")):
        write_synthetic_run(root / name, loss_type=loss, n_evals=3, eval_every=10, log_every=5,
                            resolution=16, n_scales=2, n_samples=4, n_bins=6, seed=3)
        group = zarr.open_group(root / name / "reconstructions.zarr", mode="r+")
        truth = group["truth"][...]
        truth[0] = 0.0
        group["truth"][...] = truth
    return root


def truth_on_disk(run_dir) -> tuple[np.ndarray, float]:
    with xr.open_zarr(run_dir / "reconstructions.zarr") as recon:
        truth = recon["truth"].values
    with xr.open_zarr(run_dir / "metrics.zarr") as metrics:
        cutoff = float(metrics.attrs["spectral_cutoff"])
    return truth, cutoff


def test_views_open_on_the_sample_with_most_high_band_power(blank_first):
    truth, cutoff = truth_on_disk(blank_first / "a")
    power = high_power_by_hand(truth, cutoff)
    assert power[0] == 0.0 and power.max() > 0
    best = int(np.argmax(power))
    state = LabState(blank_first)
    recon = ReconstructionsView(state)
    compare = TwoRunComparison(state)
    assert recon.sample == best
    assert compare.sample == best
    # The choices are ordered by that power, the blank field last.
    assert list(recon.param.sample.objects.values()) == list(np.argsort(-power, kind="stable"))
    # A user's pick is kept when the other run (same samples) is chosen.
    recon.sample = 2
    recon.run = "b"
    assert recon.sample == 2


def test_a_constant_field_paints_mid_map_and_colour_bars_have_ticks(blank_first):
    state = LabState(blank_first)
    view = ReconstructionsView(state)
    view.sample = 0  # the empty field
    mapper = view.images.mappers[0]
    assert mapper.low < 0.0 < mapper.high  # not at the top of the map (low == high == 0)
    for figure in view.images.figures:
        (bar,) = figure.right
        assert bar.ticker.desired_num_ticks >= 3


# -- log axes ------------------------------------------------------------------------------------

def log_ticks(low: float, high: float, max_ticks: int = MAX_LOG_TICKS) -> list[float]:
    """The browser's ticks: LOG_TICKS_JS run by node exactly as BokehJS's CustomJSTicker runs
    it (``new Function("cb_data", ...args, code)``)."""
    script = (f"const f = new Function('cb_data', 'max_ticks', {json.dumps(LOG_TICKS_JS)});"
              f"console.log(JSON.stringify(f({{start: {low!r}, end: {high!r}}}, {max_ticks})));")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("low, high", [(0.004, 0.1), (1.0, 11.3), (0.031, 0.039),
                                       (1e-9, 2.0), (3e-5, 0.7), (0.9, 1.1)])
def test_log_axes_get_at_least_three_labels_inside_the_range(low, high):
    ticks = log_ticks(low, high)
    assert 3 <= len(ticks) <= MAX_LOG_TICKS, ticks
    assert all(low * (1 - 1e-9) <= t <= high * (1 + 1e-9) for t in ticks), ticks
    assert ticks == sorted(set(ticks))


def test_curves_have_y_titles_and_readable_log_axes_and_per_scale_bars_are_linear(runs_dir):
    state = LabState(runs_dir)
    curves = CurvesView(state)
    for spec in PANELS:
        fig = curves.figures[spec.variable]
        assert fig.yaxis[0].axis_label, spec.variable
        if spec.log:
            assert type(fig.yaxis[0]).__name__ == "LogAxis"
            assert fig.yaxis[0].ticker.major_code == LOG_TICKS_JS
    curves.y_scale = "linear"
    assert all(type(f.yaxis[0]).__name__ == "LinearAxis" for f in curves.figures.values())
    bars = PerScaleView(state)
    assert type(bars.figure.yaxis[0]).__name__ == "LinearAxis"
    (renderer,) = [r for r in bars.figure.renderers if type(r.glyph).__name__ == "VBar"]
    assert renderer.glyph.bottom == 0


# -- colours -------------------------------------------------------------------------------------

COLOURS_OF = ("import json, sys; from lab.state import LabState; s = LabState(sys.argv[1]);"
              "print(json.dumps({r: s.style(r) for r in s.visible}))")


def dash_key(dash) -> str | tuple:
    """A dash as Bokeh stores it ("solid" becomes []), hashable."""
    stored = Line(line_dash=dash if isinstance(dash, str) else list(dash)).line_dash
    return stored if isinstance(stored, str) else tuple(stored)


def styles_in_a_new_process(runs_dir, seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", COLOURS_OF, str(runs_dir)], env=env,
                         capture_output=True, text=True, check=True)
    return {run: (colour, dash_key(dash), label)
            for run, (colour, dash, label) in json.loads(out.stdout).items()}


def test_every_run_is_distinguishable_and_keeps_its_style_across_page_loads_and_views(runs_dir):
    state = LabState(runs_dir)
    loss = state.tags()
    same_loss = [r for r in state.visible if loss[r]["loss_type"] == "l2"]
    assert len(same_loss) == 2  # the fixture's baseline and rff runs
    curves = CurvesView(state)

    def drawn(view) -> dict[str, tuple]:
        lines = view.figures["eval_rel_mse"].renderers
        return {r.name: (r.glyph.line_color, dash_key(r.glyph.line_dash)) for r in lines}

    for colour_by in ("run", "loss_type"):
        state.colour_by = colour_by
        styles = drawn(curves)
        assert len(set(styles.values())) == len(styles) == len(state.visible)
        # One legend entry per run, on every panel.
        for fig in curves.figures.values():
            (legend,) = fig.right
            labels = [item.label.value for item in legend.items]
            if fig is not curves.figures["terms"]:
                assert len(labels) == len(state.visible) and all(
                    any(run in label for label in labels) for run in state.visible)
    state.colour_by = "run"
    first = drawn(curves)
    # The same in another view (per-scale bars, runs table) ...
    bars = PerScaleView(state)
    for run, colour in zip(bars.source.data["run"], bars.source.data["colour"], strict=True):
        assert colour == first[run][0]
    table = RunsTable(state).table.value
    assert dict(zip(table["run"], table["colour"], strict=True)) == {r: c for r, (c, _) in first.items()}
    # ... and after a reload, in a new process (another string hash seed).
    for seed in ("1", "2"):
        again = styles_in_a_new_process(runs_dir, seed)
        assert {r: (s[0], s[1]) for r, s in again.items()} == first


# -- tracker features of the curves -------------------------------------------------------------

def ema_by_hand(values: np.ndarray, weight: float) -> np.ndarray:
    out, last = [], None
    for x in values:
        if np.isnan(x):
            out.append(np.nan)
            continue
        last = x if last is None else weight * last + (1 - weight) * x
        out.append(last)
    return np.array(out)


def test_smoothing_is_an_ema_of_the_rows_and_the_csv_holds_what_is_shown(runs_dir):
    state = LabState(runs_dir)
    curves = CurvesView(state)
    curves.smoothing = 0.8
    (line,) = [r for r in curves.figures["train_loss"].renderers if r.name == "h1"]
    transform = line.glyph.y["transform"]
    xs = on_disk(runs_dir / "h1", "train_loss").astype(float)
    xs[3] = np.nan
    script = (f"const f = new Function('xs', 'weight', {json.dumps(transform.v_func)});"
              f"console.log(JSON.stringify(Array.from(f({json.dumps([None if np.isnan(x) else x for x in xs])}, "
              f"{transform.args['weight']})).map(v => Number.isNaN(v) ? null : v)));")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    drawn = np.array([np.nan if v is None else v for v in json.loads(out.stdout)])
    np.testing.assert_allclose(drawn, ema_by_hand(xs, 0.8), rtol=1e-12)
    # The evaluation panels are not smoothed.
    assert all(isinstance(r.glyph.y, str) for r in curves.figures["eval_rel_mse"].renderers)
    table = pd.read_csv(curves.csv())
    for name, *_ in RUNS:
        rows = table[(table["run"] == name) & (table["curve"] == "train_loss")]
        np.testing.assert_allclose(rows["value"], on_disk(runs_dir / name, "train_loss"), rtol=1e-6)
        rows = table[(table["run"] == name) & (table["curve"] == "eval_rel_mse")]
        np.testing.assert_allclose(rows["value"], on_disk(runs_dir / name, "eval_rel_mse"), rtol=1e-6)
    assert set(table["run"]) == {name for name, *_ in RUNS}


def test_the_wall_clock_axis_draws_against_the_stored_wall_time(runs_dir):
    curves = CurvesView(LabState(runs_dir))
    curves.x_axis = "wall_time"
    for fig in curves.figures.values():
        assert all(r.glyph.x == "wall_time" for r in fig.renderers)
        assert "wall-clock" in fig.xaxis[0].axis_label
    np.testing.assert_array_equal(curves.train_sources["h1"].data["wall_time"],
                                  on_disk(runs_dir / "h1", "wall_time"))
    np.testing.assert_array_equal(curves.eval_sources["h1"].data["wall_time"],
                                  on_disk(runs_dir / "h1", "eval_wall_time"))


# -- the runs table ------------------------------------------------------------------------------

def test_the_runs_table_follows_a_run_that_fails_while_its_tab_is_hidden(fresh_runs):
    writer, going = live_run(fresh_runs), live_run(fresh_runs, "going")
    writer.advance(2)
    going.advance(1)
    state = LabState(fresh_runs)
    table = RunsTable(state, shown=False)
    table.prime()
    writer.finish("failed", "killed")
    state.poll()
    status_on_disk = json.loads((fresh_runs / "live" / "progress.json").read_text())["status"]
    assert status_on_disk == "failed"
    assert table.table.value.set_index("run").loc["live", "status"] == "failed"  # while hidden
    # Shown now: the browser builds the table meanwhile, so a changed cell replaces the value
    # (a patch cannot reach a Tabulator being built) ...
    table.shown = True
    before = table.table.value
    going.advance(1)
    state.poll()
    assert table.table.value is not before
    assert table.table.value.set_index("run").loc["going", "evaluations"] == 2
    # ... and once it is built, cells are patched in place.
    table._replace_until = 0.0
    before = table.table.value
    going.advance(1)
    state.poll()
    assert table.table.value is before
    assert table.table.value.set_index("run").loc["going", "evaluations"] == 3


# -- a browser that disconnects ------------------------------------------------------------------

def test_a_write_to_a_closed_browser_logs_no_traceback(caplog):
    """asyncio's report of a task that failed writing to a closed WebSocket is dropped; any
    other task failure is still logged with its traceback."""
    import asyncio

    from tornado.websocket import WebSocketClosedError

    from lab.app import quiet_disconnects

    quiet_disconnects()

    async def write_to_closed():
        raise WebSocketClosedError()

    async def real_fault():
        raise ZeroDivisionError("a real fault")

    def run(coroutine) -> None:
        # In a thread of its own: a test process that ran the browser tests before this one may
        # still have an event loop running in its main thread.
        done = []

        def body() -> None:
            loop = asyncio.new_event_loop()
            try:
                task = loop.create_task(coroutine())
                loop.run_until_complete(asyncio.sleep(0.01))
                done.append(task.done())
                del task  # never retrieved: asyncio reports it when the task is collected
                import gc
                gc.collect()
            finally:
                loop.close()

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        assert done == [True]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(write_to_closed)
        assert not [r for r in caplog.records if r.name == "asyncio"]
        run(real_fault)
        faults = [r for r in caplog.records if r.name == "asyncio"]
        assert faults and "Task exception was never retrieved" in faults[0].getMessage()
        assert isinstance(faults[0].exc_info[1], ZeroDivisionError)


# -- archive and delete --------------------------------------------------------------------------

def tree(root) -> dict[str, bytes | str]:
    """Every file and link under ``root``: path -> content (links: their target), not
    following links."""
    out = {}
    for directory, subdirs, files in os.walk(root):
        for name in files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            out[rel] = "-> " + os.readlink(path) if os.path.islink(path) else open(path, "rb").read()
    return out


def test_archive_and_delete_need_a_confirmation_and_stay_inside_runs(fresh_runs, tmp_path):
    from lab.views.runs import RunActions

    state = LabState(fresh_runs)
    actions = RunActions(state)
    everything = tree(fresh_runs)
    # Asked, not confirmed: nothing on disk changes (also after another run is chosen).
    actions.run = "h1"
    actions.ask("delete")
    actions.ask("archive")
    actions.run = "baseline"
    actions.confirm()  # the question was withdrawn with the change of run
    actions.ask("delete")
    actions.cancel()
    actions.confirm()
    assert tree(fresh_runs) == everything
    assert "h1" in state.runs and "baseline" in state.runs
    # Archive, confirmed: moved under .archive, gone from the page.
    actions.run = "h1"
    actions.ask("archive")
    actions.confirm()
    assert not (fresh_runs / "h1").exists()
    moved = {k.removeprefix(".archive/"): v for k, v in tree(fresh_runs).items()
             if k.startswith(".archive/")}
    assert moved == {k: v for k, v in everything.items() if k.startswith("h1/")}
    assert "h1" not in state.runs and "h1" not in state.visible
    state.poll()
    assert "h1" not in state.runs  # .archive is hidden from run discovery
    # Delete, confirmed, of a real folder.
    actions.run = "baseline"
    actions.ask("delete")
    actions.confirm()
    assert not (fresh_runs / "baseline").exists()
    assert {"baseline", "h1"}.isdisjoint(state.runs)


def test_run_folders_outside_runs_are_refused(fresh_runs, tmp_path):
    from fae_lab.errors import UsageError
    from lab.archive import archive_run, delete_run

    outside = tmp_path / "elsewhere"
    write_synthetic_run(outside / "run", n_evals=2, eval_every=10, log_every=5, resolution=16,
                        n_scales=2, n_bins=6)
    os.symlink(outside, fresh_runs / "door")  # a folder link out of RUNS, a run behind it
    before = tree(outside)
    for name in ("door/run", "../elsewhere/run", str(outside / "run"), "", ".", ".archive/x",
                 "group/../../elsewhere/run", "no-such-run"):
        for act in (archive_run, delete_run):
            with pytest.raises(UsageError):
                act(fresh_runs, name)
    assert tree(outside) == before
    # A run folder that is itself a link is moved or removed as a link, never followed.
    os.symlink(outside / "run", fresh_runs / "linked")
    archived = archive_run(fresh_runs, "linked")
    assert archived.is_symlink() and tree(outside) == before
    os.symlink(outside / "run", fresh_runs / "linked")
    delete_run(fresh_runs, "linked")
    assert not os.path.lexists(fresh_runs / "linked") and tree(outside) == before


# -- hyperparameters -----------------------------------------------------------------------------

def leaves_on_disk(run_dir) -> dict[str, object]:
    """config.json's settings, one level, read with json (sections' settings by name)."""
    config = json.loads((run_dir / "config.json").read_text())["config"]
    out = {}
    for key, value in config.items():
        for name, leaf in (value.items() if isinstance(value, dict) else [(key, value)]):
            out[name] = json.dumps(leaf)
    return out


def test_the_settings_table_has_a_column_per_differing_setting_and_a_two_run_diff(runs_dir):
    from lab.views.settings import SettingsView

    state = LabState(runs_dir)
    view = SettingsView(state)
    disk = {run: leaves_on_disk(runs_dir / run) for run in state.visible}
    names = set().union(*disk.values())
    differing = {n for n in names if len({d.get(n) for d in disk.values()}) > 1}
    differing -= {"output_dir", "wandb_name"}  # where the run was written, not how it trained
    table = view.table.value
    assert set(table.columns) == {"run", *differing}
    assert {"loss_type", "decoder_type", "seed"} <= set(table.columns)
    for _, row in table.iterrows():
        assert row["loss_type"] == json.loads(disk[row["run"]]["loss_type"])
    assert view.table.header_filters
    view.run_a, view.run_b = "baseline", "h1"
    diff = view.diff.value
    expected = {n for n in names if disk["baseline"].get(n) != disk["h1"].get(n)}
    assert set(diff["setting"]) == expected
    row = diff.set_index("setting").loc["loss_type"]
    assert list(row) == ["l2", "h1"]


def test_the_overlay_draws_every_run_at_its_newest_evaluation_by_the_step(runs_dir):
    from lab.views.overlay import SpectraOverlayView

    state = LabState(runs_dir)
    view = SpectraOverlayView(state)
    assert set(view.sources) == set(state.visible)  # more than two runs, one line each
    assert len(view.figure.legend[0].items) == len(state.visible)
    for step in (0, 50, view.param.step.bounds[1]):
        view.follow = False
        view.step = step
        for run, source in view.sources.items():
            with xr.open_zarr(runs_dir / run / "metrics.zarr") as ds:
                n = json.loads((runs_dir / run / "progress.json").read_text())["n_eval"]
                steps = ds["eval_step"].values[:n]
                earlier = np.flatnonzero(steps <= step)
                if earlier.size == 0:
                    assert len(source.data["power"]) == 0
                    continue
                expected = ds["eval_spectral_mse"].values[earlier[-1]]
            np.testing.assert_allclose(source.data["power"], expected, rtol=1e-6)


def test_the_settings_table_follows_new_runs_while_its_tab_is_hidden(fresh_runs):
    """A run with a setting of its own appears while the Settings tab is hidden: the table has
    its column already, so the tab is built with it when shown (a column change sent while the
    browser builds the table left page errors)."""
    from lab.views.settings import SettingsView

    state = LabState(fresh_runs)
    view = SettingsView(state, shown=False)
    view.prime()
    assert not any("rff_sigma" in c for c in view.table.value.columns)
    write_synthetic_run(fresh_runs / "sharper", loss_type="l2", n_evals=3, eval_every=10, log_every=5,
                        resolution=16, n_scales=3, n_samples=2, n_bins=8, seed=9)
    path = fresh_runs / "sharper" / "config.json"
    payload = json.loads(path.read_text())
    payload["config"]["model"]["rff_sigma"] = 9.5  # the only run with this value
    path.write_text(json.dumps(payload))
    state.poll()
    assert not view.shown and "sharper" in set(view.table.value["run"])
    column = [c for c in view.table.value.columns if "rff_sigma" in c]
    assert column, list(view.table.value.columns)
    assert view.table.value.set_index("run").loc["sharper", column[0]] in (9.5, "9.5")
