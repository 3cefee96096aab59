"""The NTK's spectral bias beside the measured one, per run (``RUN/ntk.zarr``, no JAX).

Left: the NTK rate per |n| bin, ρ_b = mean over the bin's modes of f_nᴴ K f_n (averaged over
the stored test samples), on a log axis, one line per drawn run that has an ``ntk.zarr``
(write one with ``fae-lab ntk RUN`` or ``fae-lab train --track-ntk-every N``), for the chosen
kernel: Ker_FAE, Ker_dec or Ker_enc. Right: predicted (that NTK rate, at the NTK step nearest the
fit window's start) against measured (the decay rate of the band's test error,
:mod:`fae_lab.ntk.rates`, fitted over the first half of the evaluated steps), one point per bin;
the table gives each run's Spearman rank correlation across bins. Runs without an
``ntk.zarr`` are listed as such. The view redraws at each poll that brings new evaluations, and
when a drawn run's ``ntk.zarr`` changes (also of a finished run).
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d, HoverTool, Legend, LegendItem
from bokeh.plotting import figure

from fae_lab.ntk.rates import RateComparison
from fae_lab.ntk.store import NTK_STORE, read_ntk, variable_name
from fae_lab.store import PollResult
from lab.state import LabState
from lab.text import html_text, isolated_name
from lab.transforms import TEST_SPLIT, run_split, spectral_error, split_variable
from lab.views.base import LiveView

PART_LABELS = {"Ker_FAE = Ker_dec + Ker_enc": "fae", "Ker_dec (decoder)": "decoder",
               "Ker_enc (encoder)": "encoder"}


def ntk_columns(ntk, part: str, step_index: int = 0) -> dict[str, np.ndarray]:
    """One run's NTK-rate line: ``k`` and ``rate`` (mean over samples) at NTK step ``step_index``,
    bins with a positive rate only (the axis is logarithmic)."""
    rate = ntk[variable_name(part, "rate")].values[step_index].mean(axis=0)
    keep = np.isfinite(rate) & (rate > 0)
    return {"k": ntk["k"].values[keep], "rate": rate[keep]}


def comparison(ntk, evaluations, part: str, split: str = TEST_SPLIT) -> RateComparison:
    """Predicted against measured rates of one run (:class:`fae_lab.ntk.rates.RateComparison`)."""
    error = spectral_error(evaluations, split=split)
    rates = ntk[variable_name(part, "rate")].values.mean(axis=1)  # (ntk_step, k)
    return RateComparison(error["eval_step"].values, error.values, ntk["ntk_step"].values, rates)


class NTKView(LiveView):
    """NTK rate per |n| for the drawn runs, and NTK against measured per-band rates."""

    kernel = param.Selector(default="fae", objects=PART_LABELS, doc="Which kernel's rates.")

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.ntk: dict[str, object] = {}  # run -> its ntk.zarr dataset
        self.comparisons: dict[str, RateComparison] = {}
        self.rate_sources: dict[str, ColumnDataSource] = {}
        self.scatter_sources: dict[str, ColumnDataSource] = {}
        self._stamps: dict[str, float] = {}
        self._plots = pn.Row(sizing_mode="stretch_width")
        self._table = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["ntk-table"])
        self.widgets = pn.Row(pn.widgets.Select.from_param(self.param.kernel, name="Kernel"))
        self.start()

    def __panel__(self):
        return pn.Column(self.widgets, self._plots, self._table, sizing_mode="stretch_width")

    def _stamp(self, run: str) -> float:
        path = self.state.source[run].path / NTK_STORE / "zarr.json"
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return -1.0

    def refresh(self) -> None:
        readers = dict(self.state.ready_readers())
        self.ntk, self.comparisons, self.rate_sources, self.scatter_sources = {}, {}, {}, {}
        self._stamps = {run: self._stamp(run) for run in readers}
        missing = []
        for run, reader in readers.items():
            try:
                ntk = read_ntk(reader.path)
            except (OSError, ValueError, KeyError):  # caught mid-swap by `fae-lab ntk`: next poll
                self._stamps[run] = -2.0  # differs from any stamp: the next poll tries again
                ntk = None
            if ntk is None or ntk.sizes.get("ntk_step", 0) == 0:
                missing.append(run)
                continue
            self.ntk[run] = ntk
            split = run_split(reader.rung, TEST_SPLIT)
            reader.require(split_variable("eval_spectral_mse", split))
            self.comparisons[run] = comparison(ntk, reader.evaluations(), self.kernel, split)
            self.rate_sources[run] = ColumnDataSource(ntk_columns(ntk, self.kernel), name=f"ntk-rate:{run}")
            c = self.comparisons[run]
            keep = np.isfinite(c.predicted) & (c.predicted > 0) & np.isfinite(c.measured)
            self.scatter_sources[run] = ColumnDataSource(
                {"predicted": c.predicted[keep], "measured": c.measured[keep], "k": ntk["k"].values[keep]},
                name=f"ntk-scatter:{run}")
        self._plots.objects = ([pn.pane.Bokeh(fig, sizing_mode="stretch_width") for fig in self._figures()]
                               if self.ntk else [])
        self._table.object = self._table_html(missing)

    def _figures(self):
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        name = next(label for label, part in PART_LABELS.items() if part == self.kernel)
        left = figure(title=f"NTK rate per |n| band: {name}", height=360, y_axis_type="log",
                      x_axis_label="|n| (cycles per unit length)", y_axis_label="mean f_nᴴ K f_n",
                      x_range=DataRange1d(only_visible=True), sizing_mode="stretch_width", tools=tools)
        right = figure(title="Predicted (NTK rate) against measured band decay rate", height=360,
                       x_axis_type="log", x_axis_label="NTK rate", y_axis_label="measured rate (per step)",
                       sizing_mode="stretch_width", tools=tools)
        items = []
        for run in self.rate_sources:
            colour = self.state.colour(run)
            line = left.line("k", "rate", source=self.rate_sources[run], line_color=colour,
                             line_width=1.8, name=run)
            right.scatter("predicted", "measured", source=self.scatter_sources[run], color=colour,
                          size=7, name=run)
            items.append(LegendItem(label=self.state.colour_key(run), renderers=[line]))
        left.add_tools(HoverTool(tooltips=[("run", "$name"), ("|n|", "@k{0.00}"), ("rate", "@rate{0.000e}")]))
        right.add_tools(HoverTool(tooltips=[("run", "$name"), ("|n|", "@k{0.00}"),
                                            ("NTK", "@predicted{0.000e}"), ("measured", "@measured{0.000e}")]))
        left.add_layout(Legend(items=items, click_policy="hide", label_text_font_size="8pt"), "right")
        for fig in (left, right):
            fig.toolbar.logo = None
        return left, right

    def _table_html(self, missing: list[str]) -> str:
        rows = []
        for run, c in self.comparisons.items():
            rho = "—" if not np.isfinite(c.spearman) else f"{c.spearman:+.3f}"
            rows.append(f"<tr><td>{isolated_name(run)}</td><td>{c.ntk_step}</td>"
                        f"<td>{c.window[0]:g} – {c.window[1]:g}</td><td>{html_text(rho)}</td></tr>")
        table = ("<table><tr><th>run</th><th>NTK step</th><th>fit window (steps)</th>"
                 "<th>Spearman ρ (NTK vs measured, across bins)</th></tr>" + "".join(rows) + "</table>"
                 if rows else "")
        if missing:
            names = ", ".join(isolated_name(run) for run in missing)
            table += f"<p>No ntk.zarr (run <code>fae-lab ntk RUN</code>): {names}</p>"
        return table

    @param.depends("kernel", watch=True)
    def _rekernel(self) -> None:
        self.refresh()

    def _ntk_changed(self) -> bool:
        return any(self._stamp(run) != self._stamps.get(run, -1.0) for run in self.state.visible)

    def _on_poll(self, result: PollResult) -> None:
        # An ntk.zarr written by `fae-lab ntk` after the run finished brings no new rows.
        if self._ntk_changed():
            if self.shown and not self._stale:
                self._refresh_now()
            else:
                self._stale = True
            return
        super()._on_poll(result)

    def ingest(self, result: PollResult) -> None:
        """Redraw when a drawn run has new evaluations (the measured rates change)."""
        visible = set(self.state.visible)
        if result.new_runs or any(d.name in visible and d.new_evaluations for d in result.deltas):
            self.refresh()

