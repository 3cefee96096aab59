"""Training and evaluation curves against step, the drawn runs overlaid.

Panels: the training loss, its terms (``train_loss_<term>``, dashed), the test relative MSE,
the low- and high-frequency MSE and the high-frequency error ratio high / (low + high)
(docs/metrics.md), all but the ratio on log axes; the resolved bandwidth (the largest |n| up to
which the learned fraction 1 − E/T stays ≥ 0.5, :mod:`fae_lab.bands`) and the generalisation
gap (test minus training-split relative MSE, for runs whose store has ``eval_train_rel_mse``);
all sharing the step axis. The evaluation panels (all but the gap) show the test split or,
with the split choice, the training split (``eval_train_<name>``; a run whose store lacks it
draws nothing there); a run of a ladder rung without an encoder has no test numbers and is
always drawn on its training split, as its legend entry says.

Each drawn run has two Bokeh ``ColumnDataSource``: its training-log rows and its evaluation
rows, shared by the panels. A poll *streams* only the new rows into them, so nothing is
redrawn: axes are ``DataRange1d``, which follow the data until the user pans or zooms, keep
that view while new rows keep arriving inside it, and follow again after the reset tool.

With more than :data:`MERGE_ABOVE` drawn runs, a panel draws all of them with *one* Bokeh
``MultiLine`` over one source (one row per run, or per run and loss term), each row in its
run's own colour and dash: a Bokeh model per run and panel is what made a page of a few hundred
runs slow to build and to send. Each run's rows are then kept in memory (:class:`RunColumns`),
and a poll replaces only the rows of the runs that changed (``ColumnDataSource.patch``). The
legend lists the first :data:`LEGEND_CAP` runs with "+N more" in its title; hovering a line
names its run; a legend entry does not hide its line there (the lines share one renderer:
the sidebar's filter picks runs).

Bokeh models rather than HoloViews here: an overlay of one ``hv.DynamicMap`` per run
re-evaluates every layer and its ranges on each ``Buffer`` event, which cost far more per update
than streaming into sources does (figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import (
    ColumnDataSource,
    CustomJSTransform,
    DataRange1d,
    GlyphRenderer,
    HoverTool,
    Legend,
    LegendItem,
    Line,
    MultiLine,
)
from bokeh.plotting import figure
from scipy.signal import lfilter

from fae_lab.store import EVAL_CURVES, PollResult, RunReader, require_all
from lab.state import LabState
from lab.transforms import (
    SPLIT_OPTIONS,
    TEST_SPLIT,
    TRAINING_SPLIT,
    evaluation_columns,
    run_split,
    split_variable,
    training_columns,
)
from lab.views.axes import readable_log_axes
from lab.views.base import LiveView

# One dash pattern per loss term, the same in every run (docs/run-store.md names the terms).
TERM_DASHES = {"l2": "dashed", "grad": "dotted", "fourier": "dotdash", "latent": "dashdot"}


def term_dash(term: str) -> str:
    return TERM_DASHES.get(term, "dotted")


class CurvePanel(NamedTuple):
    """One plot of the grid: ``variable`` of the training log (``source="train"``) or of the
    evaluations (``"eval"``); ``variable="terms"`` draws every loss term of each run.
    ``y_label`` titles its y axis."""

    variable: str
    source: str
    title: str
    log: bool
    y_label: str


PANELS = (
    CurvePanel("train_loss", "train", "Training loss", True, "loss"),
    CurvePanel("terms", "train", "Loss terms (dash pattern: term)", True, "loss term"),
    CurvePanel("eval_rel_mse", "eval", "Test relative MSE  Σe²/Σu²", True, "relative MSE"),
    CurvePanel("eval_high_freq_error_ratio", "eval",
               "High-frequency error ratio  high/(low+high)", False, "high / (low + high)"),
    CurvePanel("eval_low_freq_mse", "eval", "Low-frequency MSE  (|n| < cutoff)", True,
               "error power, |n| < c"),
    CurvePanel("eval_high_freq_mse", "eval", "High-frequency MSE  (|n| ≥ cutoff)", True,
               "error power, |n| ≥ c"),
    CurvePanel("resolved_bandwidth", "eval",
               "Resolved bandwidth  largest |n| with 1 − E/T ≥ 0.5", False, "|n|"),
    CurvePanel("generalisation_gap", "eval",
               "Generalisation gap  test − train relative MSE", False, "Δ relative MSE"),
)
# What the derived curves need besides the curve variables (a run without the training split
# has no gap curve).
DERIVED_INPUTS = ("eval_spectral_mse", "eval_spectral_target", "eval_train_rel_mse")


def _line(fig: figure, source: ColumnDataSource, y: str | dict, colour: str, name: str,
          dash: str | tuple = "solid", x: str = "step") -> GlyphRenderer:
    """A line of ``y`` (a column, or a field with a transform) against ``x``: one glyph, no
    selection or mute variants (half the models of ``figure.line``, which matters with a
    hundred lines to serialise)."""
    renderer = GlyphRenderer(
        data_source=source, name=name, nonselection_glyph=None, muted_glyph=None,
        glyph=Line(x=x, y=y, line_color=colour, line_dash=dash, line_width=1.6))
    fig.renderers.append(renderer)
    return renderer


# Exponential moving average of a column, in the browser (new rows streamed into the source are
# smoothed too): y_0 = x_0, y_i = a y_{i-1} + (1 - a) x_i, NaN rows skipped.
EMA_JS = """
const out = new Float64Array(xs.length);
let last = NaN;
for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (x === null || Number.isNaN(x)) {
        out[i] = NaN;
        continue;
    }
    last = Number.isNaN(last) ? x : weight * last + (1 - weight) * x;
    out[i] = last;
}
return out;
"""
LEGEND_RUNS = 12  # legends on every panel up to this many runs; beyond, on the first two only
MERGE_ABOVE = 20  # beyond this many drawn runs, one MultiLine per panel (module docstring)
LEGEND_CAP = 20  # runs a merged panel's legend lists


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """:data:`EMA_JS` in NumPy, for the merged panels: y_0 = x_0,
    y_i = a y_{i-1} + (1 - a) x_i over the non-NaN rows, NaN where x is NaN; ``(n,)``."""
    out = np.full(len(values), np.nan)
    valid = ~np.isnan(values)
    x = np.asarray(values, dtype=float)[valid]
    if len(x):
        # lfilter's y_0 = (1 - a) x_0 + a * zi; zi = x_0 makes it x_0.
        out[valid] = lfilter([1.0 - weight], [1.0, -weight], x, zi=[weight * x[0]])[0]
    return out


class RunColumns:
    """One run's rows in memory, shaped as a ``ColumnDataSource``'s ``data`` (column ->
    ``(rows,)`` array): what a merged panel draws from, with no Bokeh model per run."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.data = data

    def stream(self, new: dict[str, np.ndarray]) -> None:
        """Append rows (the same columns)."""
        self.data = {name: np.concatenate([values, new[name]])
                     for name, values in self.data.items()}
X_AXES = {"step": "step", "wall-clock time (s)": "wall_time"}


class CurvesView(LiveView):
    """The curves of every drawn run, streamed in place as rows arrive."""

    height = param.Integer(default=250, bounds=(120, 1000), doc="Height of each plot, pixels.")
    split = param.Selector(default=TEST_SPLIT, objects=SPLIT_OPTIONS, doc="""
        The evaluated split of the evaluation panels: test, or the training split (rungs
        without an encoder always).""")

    y_scale = param.Selector(default="log", objects=["log", "linear"], doc="""
        Scale of the y axes of the loss and error panels (the ratio, bandwidth and gap panels
        stay linear).""")
    smoothing = param.Number(default=0.0, bounds=(0.0, 0.99), step=0.01, doc="""
        Weight a of the exponential moving average drawn for the training-log panels
        (0: the raw rows).""")
    x_axis = param.Selector(default="step", objects=X_AXES, doc="""
        The shared x axis: training step, or wall-clock seconds since each run started.""")

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.train_sources: dict[str, ColumnDataSource | RunColumns] = {}
        self.eval_sources: dict[str, ColumnDataSource | RunColumns] = {}
        self.figures: dict[str, figure] = {}
        # Merged panels (more than MERGE_ABOVE runs): panel -> its one source, and the
        # (run, column) each of its rows draws.
        self.merged = False
        self.panel_sources: dict[str, ColumnDataSource] = {}
        self._panel_rows: dict[str, list[tuple[str, str]]] = {}
        self._grid = pn.GridBox(ncols=2, sizing_mode="stretch_width")
        self._empty = pn.pane.Alert("No run matches the filter.", alert_type="light",
                                    visible=False)
        self.split_choice = pn.widgets.Select.from_param(
            self.param.split, name="Evaluation panels: split", width=220)
        self.controls = pn.Row(
            self.split_choice,
            pn.widgets.RadioButtonGroup.from_param(self.param.y_scale, align="end"),
            pn.widgets.Select.from_param(self.param.x_axis, name="x axis", width=180),
            self._smoothing_slider(),
            pn.widgets.FileDownload(callback=self.csv, filename="curves.csv",
                                    label="Download shown curves (CSV)", align="end",
                                    button_type="light", css_classes=["curves-csv"]))
        self._merged_note = pn.pane.Markdown("", visible=False, css_classes=["curves-merged"])
        self._layout = pn.Column(self.controls, self._empty, self._merged_note, self._grid,
                                 sizing_mode="stretch_width")
        self.start()

    def __panel__(self):
        return self._layout

    def _smoothing_slider(self) -> pn.widgets.FloatSlider:
        """The smoothing weight, applied when the slider is let go (each change redraws)."""
        slider = pn.widgets.FloatSlider(name="Smoothing (EMA) of training curves", start=0.0,
                                        end=0.99, step=0.01, value=self.smoothing, width=220)
        slider.param.watch(lambda event: setattr(self, "smoothing", event.new), "value_throttled")
        return slider

    # -- data --------------------------------------------------------------------------------

    @staticmethod
    def _training(reader: RunReader, rows: slice | None = None) -> dict[str, np.ndarray]:
        # Plain arrays, not a Dataset and a DataFrame per run: over a few hundred runs those
        # were most of the first render after the reads.
        return training_columns(*reader.training_arrays(rows), reader.loss_terms)

    def run_split(self, run: str) -> str:
        """The split ``run``'s evaluation curves show: the chosen one, or the training split
        for a rung without an encoder."""
        return run_split(self.state.source[run].rung, self.split)

    def _needed(self, run: str) -> tuple[str, ...]:
        """The evaluation variables ``run``'s curves need beyond the tracked ones (and the
        wall-clock columns when that axis is chosen: read only once asked for)."""
        split = self.run_split(run)
        wall = ("wall_time", "eval_wall_time") if self.x_axis == "wall_time" else ()
        return (*DERIVED_INPUTS, *(split_variable(name, split) for name in
                                   (*EVAL_CURVES, *DERIVED_INPUTS[:2])), *wall)

    def _evaluations(self, reader: RunReader, rows: slice | None = None) -> dict[str, np.ndarray]:
        split = self.run_split(reader.name)
        reader.require(*self._needed(reader.name))
        return evaluation_columns(*reader.evaluation_arrays(rows), reader.k_upper, split)

    def ingest(self, result: PollResult) -> None:
        """Stream each drawn run's new rows into its sources (a reset run is redrawn)."""
        changed = [d.name for d in result.deltas if d.reset or d.name not in self.train_sources]
        if any(run in self.state.visible and self.state.source[run].ready for run in changed):
            self.refresh()
            return
        for delta in result.deltas:
            if delta.name not in self.train_sources:
                continue
            reader = self.state.source[delta.name]
            # From what each source holds, not from the delta: a source built during this poll
            # (a filter change, a new run) already has the delta's rows.
            streamed = False
            for source, count, rows in ((self.train_sources[delta.name], reader.n_train,
                                         self._training),
                                        (self.eval_sources[delta.name], reader.n_eval,
                                         self._evaluations)):
                have = len(source.data["step"])
                if count > have:
                    source.stream(rows(reader, slice(have, count)))
                    streamed = True
            if streamed and self.merged:
                self._patch_run(delta.name)

    def _patch_run(self, run: str) -> None:
        """Replace ``run``'s rows of every merged panel by its rows now in memory."""
        for variable, rows in self._panel_rows.items():
            patches: dict[str, list] = {"xs": [], "ys": []}
            for index, (name, column) in enumerate(rows):
                if name == run:
                    xs, ys = self._merged_row(variable, name, column)
                    patches["xs"].append((index, xs))
                    patches["ys"].append((index, ys))
            if patches["xs"]:
                self.panel_sources[variable].patch(patches)

    # -- download ----------------------------------------------------------------------------

    def shown_table(self) -> pd.DataFrame:
        """What the panels show, one row per (run, curve, row): columns ``run``, ``curve``
        (the store variable, or ``train_loss_<term>``), ``split`` of the evaluation curves
        (empty for the training log), ``step``, ``wall_time`` (NaN unless the wall-clock axis
        was chosen) and ``value`` (unsmoothed)."""
        parts = []
        for run, train in self.train_sources.items():
            curves = [(train, "", name) for name in train.data
                      if name.startswith("train_loss")]
            curves += [(self.eval_sources[run], self.run_split(run), spec.variable)
                       for spec in PANELS if spec.source == "eval"]
            for source, split, name in curves:
                parts.append(pd.DataFrame({
                    "run": run, "curve": name, "split": split, "step": source.data["step"],
                    "wall_time": source.data["wall_time"], "value": source.data[name]}))
        columns = ["run", "curve", "split", "step", "wall_time", "value"]
        return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)

    def csv(self) -> io.StringIO:
        """:meth:`shown_table` as CSV (the download button's file)."""
        return io.StringIO(self.shown_table().to_csv(index=False))

    # -- plots -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """New sources and figures for the drawn runs (after a filter or colour change)."""
        self.train_sources, self.eval_sources = {}, {}
        self.panel_sources, self._panel_rows = {}, {}
        drawn = [run for run in self.state.visible if self.state.source[run].ready]
        self.merged = len(drawn) > MERGE_ABOVE
        # Every drawn run's missing variables in one trip to zarr (one per run was most of the
        # first render's wait over a few hundred runs).
        require_all([(self.state.source[run], self._needed(run)) for run in drawn])
        for run in drawn:
            reader = self.state.source[run]
            train, evals = self._training(reader), self._evaluations(reader)
            if self.merged:
                self.train_sources[run], self.eval_sources[run] = RunColumns(train), RunColumns(evals)
            else:
                self.train_sources[run] = ColumnDataSource(train, name=f"train:{run}")
                self.eval_sources[run] = ColumnDataSource(evals, name=f"eval:{run}")
        self._empty.visible = not self.train_sources
        self._merged_note.visible = self.merged
        if self.merged:
            listed = min(LEGEND_CAP, len(drawn))
            self._merged_note.object = (
                f"{len(drawn)} runs drawn, one line set per panel. The legends list the first "
                f"{listed} (+{len(drawn) - listed} more); hover a line for its run. Pick runs "
                "with the sidebar's filter (a legend entry does not hide lines here).")
        x_range = DataRange1d(only_visible=True)
        self.figures = {spec.variable: self._figure(spec, x_range) for spec in PANELS}
        self._grid.objects = [pn.pane.Bokeh(fig, sizing_mode="stretch_width")
                              for fig in self.figures.values()] if self.train_sources else []

    @param.depends("split", "y_scale", "x_axis", "smoothing", watch=True)
    def _resplit(self) -> None:
        if self.shown:
            self._refresh_now()
        else:
            self._stale = True

    def _title(self, spec: CurvePanel) -> str:
        if self.split != TRAINING_SPLIT or spec.source != "eval" or spec.variable == "generalisation_gap":
            return spec.title
        return spec.title.replace("Test ", "Training-split ") if spec.title.startswith("Test ") \
            else f"{spec.title}  (training split)"

    def _figure(self, spec: CurvePanel, x_range: DataRange1d) -> figure:
        x = self.x_axis
        fig = figure(title=self._title(spec), height=self.height, sizing_mode="stretch_width",
                     x_range=x_range, y_range=DataRange1d(only_visible=True),
                     y_axis_type="log" if spec.log and self.y_scale == "log" else "linear",
                     tools="pan,wheel_zoom,box_zoom,reset,save",
                     x_axis_label="step" if x == "step" else "wall-clock time since start (s)",
                     y_axis_label=spec.y_label if not (self.smoothing and spec.source == "train")
                     else f"{spec.y_label} (EMA {self.smoothing:g})")
        fig.toolbar.logo = None
        readable_log_axes(fig)
        smooth = CustomJSTransform(args={"weight": self.smoothing}, v_func=EMA_JS) \
            if self.smoothing and spec.source == "train" else None

        if self.merged:
            self._merged_lines(fig, spec)
            return fig

        def y_of(column: str):
            return {"field": column, "transform": smooth} if smooth is not None else column

        legend: dict[str, list] = {}
        for run, train in self.train_sources.items():
            reader = self.state.source[run]
            style = self.state.style(run)
            if spec.variable == "terms":
                for term in reader.loss_terms:
                    line = _line(fig, train, y_of(f"train_loss_{term}"), style.colour,
                                 f"{run}: {term}", term_dash(term), x)
                    legend.setdefault(f"term {term}", []).append(line)
                continue
            source = train if spec.source == "train" else self.eval_sources[run]
            label = style.label
            if self.run_split(run) != self.split:  # a rung without an encoder: say so
                label = f"{label} (training split: no encoder)"
            line = _line(fig, source, y_of(spec.variable), style.colour, run, style.dash, x)
            legend.setdefault(label, []).append(line)
        fig.add_tools(HoverTool(tooltips=[("run", "$name"), (x, "$snap_x{0}"),
                                          ("value", "$snap_y{0.000e}")]))
        first_two = spec.variable in ("train_loss", "terms")
        if legend and (first_two or len(self.train_sources) <= LEGEND_RUNS):
            fig.add_layout(Legend(items=[LegendItem(label=label, renderers=renderers)
                                         for label, renderers in legend.items()],
                                  click_policy="hide", label_text_font_size="8pt",
                                  spacing=0, padding=4), "right")
        return fig

    # -- merged panels (more than MERGE_ABOVE runs) -----------------------------------------

    def _merged_row(self, variable: str, run: str, column: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of one row of merged panel ``variable``: ``column`` of ``run`` against
        the chosen x axis, smoothed like the browser's EMA for training-log panels."""
        train = variable in ("train_loss", "terms")
        data = (self.train_sources if train else self.eval_sources)[run].data
        y = np.asarray(data[column], dtype=float)
        if train and self.smoothing:
            y = ema(y, self.smoothing)
        return np.asarray(data[self.x_axis], dtype=float), y

    def _merged_lines(self, fig: figure, spec: CurvePanel) -> None:
        """Every drawn run of panel ``spec`` as one MultiLine (one row per run, or per run and
        loss term), a capped legend, and a hover naming the run."""
        rows, names, colours, dashes, labels = [], [], [], [], []
        for run in self.train_sources:
            reader, style = self.state.source[run], self.state.style(run)
            if spec.variable == "terms":
                for term in reader.loss_terms:
                    rows.append((run, f"train_loss_{term}"))
                    names.append(f"{run}: {term}")
                    colours.append(style.colour)
                    dashes.append(term_dash(term))
                    labels.append(f"term {term}")
                continue
            label = style.label
            if spec.source == "eval" and self.run_split(run) != self.split:
                label = f"{label} (training split: no encoder)"
            rows.append((run, spec.variable))
            names.append(run)
            colours.append(style.colour)
            dashes.append(style.dash)
            labels.append(label)
        xs, ys = zip(*(self._merged_row(spec.variable, run, column) for run, column in rows),
                     strict=True) if rows else ((), ())
        source = ColumnDataSource({"xs": list(xs), "ys": list(ys), "run": names,
                                   "colour": colours, "dash": dashes},
                                  name=f"panel:{spec.variable}")
        self.panel_sources[spec.variable], self._panel_rows[spec.variable] = source, rows
        renderer = GlyphRenderer(
            data_source=source, name=spec.variable, nonselection_glyph=None, muted_glyph=None,
            glyph=MultiLine(xs="xs", ys="ys", line_color="colour", line_dash="dash",
                            line_width=1.6))
        fig.renderers.append(renderer)
        fig.add_tools(HoverTool(renderers=[renderer],
                                tooltips=[("run", "@run"), (self.x_axis, "$snap_x{0}"),
                                          ("value", "$snap_y{0.000e}")]))
        if spec.variable not in ("train_loss", "terms"):
            return
        first: dict[str, int] = {}  # legend label -> its first row
        for index, label in enumerate(labels):
            first.setdefault(label, index)
        items = [LegendItem(label=label, renderers=[renderer], index=index)
                 for label, index in list(first.items())[:LEGEND_CAP]]
        more = len(first) - len(items)
        fig.add_layout(Legend(items=items, click_policy="none", label_text_font_size="8pt",
                              spacing=0, padding=4,
                              title=f"first {len(items)} of {len(first)} (+{more} more)"
                              if more else None), "right")
