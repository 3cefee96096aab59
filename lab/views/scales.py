"""Error per scale, training and held-out scales, the drawn runs side by side.

One group of bars per scale (labelled with its t and whether it is held out), one bar per run
in the run's colour, at each run's newest evaluation: ``eval_scale_mse`` or
``eval_scale_rel_mse``. This is the seed's ``final/train_time_mse_t{i}`` /
``final/held_out_mse_t{i}`` comparison, live. Bokeh: the bars' heights are replaced when a drawn
run writes an evaluation; the linear axis (bars from zero) follows the data until the user zooms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool
from bokeh.plotting import figure

from fae_lab.store import SCALE_VARIABLES, PollResult
from lab.state import LabState
from lab.transforms import per_scale_table
from lab.views.base import LiveView

METRICS = {"MSE per scale": "mse", "relative MSE per scale": "rel_mse"}


def scale_label(row: pd.Series) -> str:
    return f"scale {row['scale']} (t={row['time']:.2g}, {row['split']})"


def bar_columns(table: pd.DataFrame, metric: str, colours: dict[str, str],
                keys: dict[str, str]) -> dict[str, list]:
    """One bar per (scale, run): nested factor ``x``, height ``value`` from zero on a linear
    axis (a log axis would need an arbitrary floor), held-out scales hatched, the run's colour
    and legend entry ``key`` (``colours`` and ``keys`` map run -> value), and the hover
    fields."""
    if table.empty:
        return {key: [] for key in ("x", "value", "run", "split", "hatch", "step",
                                    "colour", "key")}
    labels = table.apply(scale_label, axis=1)
    values = table[metric].to_numpy(dtype=float)
    return {
        "x": list(zip(labels, table["run"], strict=True)),
        "value": values,
        "hatch": np.where(table["held_out"].to_numpy(), "/", " ").tolist(),
        "run": list(table["run"]),
        "split": list(table["split"]),
        "step": table["eval_step"].to_numpy(),
        "colour": [colours[run] for run in table["run"]],
        "key": [keys[run] for run in table["run"]],
    }


class PerScaleView(LiveView):
    """Bars of the error per scale, runs side by side, at each run's newest evaluation."""

    metric = param.Selector(default="mse", objects=METRICS)

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.source = ColumnDataSource(bar_columns(pd.DataFrame(), "mse", {}, {}),
                                       name="scale-bars")
        self.x_range = FactorRange(factors=[], group_padding=1.2)
        self.figure = figure(x_range=self.x_range, height=420,
                             y_range=DataRange1d(only_visible=True, start=0),
                             sizing_mode="stretch_width", y_axis_label="error",
                             title="Error per scale at each run's newest evaluation",
                             tools="pan,wheel_zoom,box_zoom,reset,save")
        self.figure.toolbar.logo = None
        bars = self.figure.vbar(x="x", top="value", bottom=0, width=0.9,
                                source=self.source, fill_color="colour", line_color=None,
                                hatch_pattern="hatch", hatch_color="white", hatch_alpha=0.6,
                                legend_field="key")
        self.figure.legend.location = "top_right"
        self.figure.legend.label_text_font_size = "8pt"
        self.figure.xaxis.major_label_orientation = np.pi / 3
        self.figure.xaxis.group_label_orientation = 0
        self.figure.add_tools(HoverTool(renderers=[bars], tooltips=[
            ("run", "@run"), ("scale", "@x"), ("value", "@value{0.000e}"), ("step", "@step")]))
        self.table = pd.DataFrame()
        self._tables: dict[str, pd.DataFrame] = {}  # run -> its rows of self.table
        self.start()

    def __panel__(self):
        return pn.Column(pn.widgets.RadioButtonGroup.from_param(self.param.metric),
                         pn.pane.Bokeh(self.figure, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    def _newest(self, run: str) -> pd.DataFrame:
        """``run``'s rows of the table: its newest evaluation, one row per scale."""
        reader = self.state.source[run]
        reader.require(*SCALE_VARIABLES)
        return per_scale_table(
            {run: reader.evaluations(slice(max(reader.n_eval - 1, 0), reader.n_eval))})

    def _combine(self) -> None:
        tables = [self._tables[run] for run in self.state.visible
                  if run in self._tables and len(self._tables[run])]
        self.table = pd.concat(tables, ignore_index=True) if tables else per_scale_table({})

    def refresh(self) -> None:
        """Read each drawn run's newest evaluation into the table, then draw it."""
        self._tables = {run: self._newest(run) for run in self.state.visible
                        if self.state.source[run].ready}
        self._combine()
        self._draw()

    @param.depends("metric", watch=True)
    def _draw(self) -> None:
        """The bars of ``self.table`` for the chosen metric (a metric switch reads nothing)."""
        runs = [r for r in self.state.visible if self.state.source[r].ready]
        colours = {run: self.state.colour(run) for run in runs}
        keys = {run: self.state.style(run).label for run in runs}
        data = bar_columns(self.table, self.metric, colours, keys)
        # Run names under the bars while they fit; beyond that the hover tool names them.
        self.figure.xaxis.major_label_text_font_size = "8pt" if len(runs) <= 8 else "0pt"
        factors = list(dict.fromkeys(data["x"]))
        if factors != list(self.x_range.factors):
            self.x_range.factors = factors
        self.source.data = data
        self.figure.yaxis.axis_label = next(k for k, v in METRICS.items() if v == self.metric)

    def ingest(self, result: PollResult) -> None:
        """Re-read only the runs with new evaluations (a few hundred runs drawn: re-reading
        every run's newest evaluation at each poll was most of an update)."""
        changed = [d.name for d in result.deltas
                   if d.name in self.state.visible and d.new_evaluations]
        if not changed:
            return
        if any(run not in self._tables for run in changed):
            self.refresh()
            return
        for run in changed:
            self._tables[run] = self._newest(run)
        self._combine()
        self._draw()
