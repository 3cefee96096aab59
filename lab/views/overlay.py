"""The error spectra of many runs at one step, overlaid (the Compare view shows two).

For each drawn run, E(s, k) (error power per |n| bin over the training scales, docs/metrics.md)
at s = its newest evaluation at or before the chosen step, on log-log axes, in the run's colour
and dash, one legend entry per run. The step slider runs over every step any drawn run has
evaluated; "follow newest" keeps it at the newest. A run with no evaluation by then draws
nothing, and the message says which.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    GlyphRenderer,
    HoverTool,
    Legend,
    LegendItem,
    Line,
)
from bokeh.plotting import figure

from fae_lab.store import PollResult
from lab.state import LabState
from lab.text import markdown_text
from lab.transforms import evaluation_at_step
from lab.views.axes import readable_log_axes
from lab.views.base import LiveView


class SpectraOverlayView(LiveView):
    """E(k) of every drawn run at one step."""

    step = param.Integer(default=0, bounds=(0, 1), doc="The step shown.")
    follow = param.Boolean(default=True, doc="Keep the step at the newest evaluated step.")

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.sources: dict[str, ColumnDataSource] = {}
        self.steps = np.zeros(0, dtype=np.int64)
        self.slider = pn.widgets.IntSlider.from_param(self.param.step, name="Step",
                                                      sizing_mode="stretch_width")
        self.message = pn.pane.Markdown("", disable_math=True, css_classes=["overlay-message"])
        self._plot = pn.pane.Bokeh(sizing_mode="stretch_width")
        self.figure = None
        self.start()

    def __panel__(self):
        return pn.Column(
            pn.Row(self.slider, pn.widgets.Checkbox.from_param(
                self.param.follow, name="Follow newest step", align="end"),
                sizing_mode="stretch_width"),
            self.message, self._plot, sizing_mode="stretch_width")

    def _columns(self, run: str) -> dict[str, np.ndarray]:
        """``k`` and ``power`` = E(s, k) of ``run`` at its newest evaluation at or before the
        step (empty if none)."""
        reader = self.state.source[run]
        index = evaluation_at_step(reader.eval_steps[:reader.n_eval], self.step)
        if index < 0:
            return {"k": np.zeros(0), "power": np.zeros(0)}
        reader.require("eval_spectral_mse")
        power = reader.evaluations(slice(index, index + 1))["eval_spectral_mse"].values[0]
        return {"k": reader.k, "power": np.asarray(power, dtype=np.float64)}

    def refresh(self) -> None:
        """A line per drawn run with evaluations, the slider over their steps."""
        runs = [run for run, reader in self.state.ready_readers() if reader.n_eval]
        self._update_steps(runs)
        fig = figure(title="Error power per |n| band, every drawn run at one step",
                     x_axis_type="log", y_axis_type="log", x_axis_label="|n| (cycles per unit length)",
                     y_axis_label="error power E(k)", height=420, sizing_mode="stretch_width",
                     x_range=DataRange1d(), y_range=DataRange1d(),
                     tools="pan,wheel_zoom,box_zoom,reset,save")
        fig.toolbar.logo = None
        readable_log_axes(fig)
        self.sources = {}
        items = []
        for run in runs:
            style = self.state.style(run)
            source = ColumnDataSource(self._columns(run), name=f"overlay:{run}")
            renderer = GlyphRenderer(data_source=source, name=run, glyph=Line(
                x="k", y="power", line_color=style.colour, line_dash=style.dash, line_width=1.8))
            fig.renderers.append(renderer)
            self.sources[run] = source
            items.append(LegendItem(label=style.label, renderers=[renderer]))
        if items:
            fig.add_layout(Legend(items=items, click_policy="hide", label_text_font_size="8pt",
                                  spacing=0, padding=4), "right")
        fig.add_tools(HoverTool(tooltips=[("run", "$name"), ("|n|", "$snap_x{0.00}"),
                                          ("E", "$snap_y{0.000e}")]))
        self.figure = fig
        self._plot.object = fig
        self._say()

    def _update_steps(self, runs: list[str]) -> None:
        steps = [self.state.source[r].eval_steps[:self.state.source[r].n_eval] for r in runs]
        self.steps = np.unique(np.concatenate(steps)) if steps else np.zeros(0, np.int64)
        last = int(self.steps[-1]) if self.steps.size else 0
        with self._hold():
            self.param.step.bounds = (0, max(last, 1))
            if self.follow or self.step > last:
                self.step = last

    @param.depends("step", watch=True)
    def _redraw(self) -> None:
        if self._holding:
            return
        for run, source in self.sources.items():
            source.data = self._columns(run)
        self._say()

    def _say(self) -> None:
        missing = [run for run, source in self.sources.items() if not len(source.data["k"])]
        text = f"Step {self.step}: each run at its newest evaluation at or before it."
        if missing:
            text += " No evaluation yet: " + ", ".join(markdown_text(r) for r in missing) + "."
        self.message.object = text

    @param.depends("follow", watch=True)
    def _follow(self) -> None:
        if self.follow and self.steps.size:
            self.step = int(self.steps[-1])

    def ingest(self, result: PollResult) -> None:
        drawn = set(self.sources)
        if any(d.new_evaluations and d.name in self.state.visible and d.name not in drawn
               for d in result.deltas):
            self.refresh()  # a run's first evaluation: a new line
            return
        if any(d.new_evaluations and d.name in drawn for d in result.deltas):
            before = self.step
            self._update_steps(list(self.sources))
            if self.step != before:
                self._redraw()
