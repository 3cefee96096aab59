"""Error against radial wavenumber |n|, for one run and one scale (or the training scales).

Left: the error power E(s, k) per bin at a few evaluations spread over training (always the
first and the newest), coloured by step, with the target's power at the newest evaluation
(dashed) and the low/high cutoff. Right: a step × |n| map of log10 E(s, k) / E(s_0, k), the
error relative to the first evaluation: 0 (white) where a band has not moved, blue where it has
been learned, red where it got worse. A high band that flat-lines stays white while the low
bands turn blue.

Bokeh sources: the map gains one column of cells per new evaluation by streaming; the few
spectra are replaced (a few hundred numbers). Axes follow the data until the user zooms.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    DataRange1d,
    HoverTool,
    LinearColorMapper,
    Span,
)
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from fae_lab.store import SPECTRAL_VARIABLES, PollResult, RunReader
from lab.state import LabState
from lab.transforms import (
    ALL_TRAINING_SCALES,
    band_error_relative_to_first,
    evaluations_to_draw,
    spectral_error,
    step_bin_cells,
)
from lab.views.axes import readable_log_axes
from lab.views.base import LiveView
from lab.views.choices import scale_options

RELATIVE_LIMIT = 2.0  # colour range of the map: ±2 decades


def spectra_columns(error: xr.DataArray, n_curves: int) -> dict[str, list]:
    """Multi-line data: one row per drawn evaluation, ``xs`` = |n| bin centres, ``ys`` = E
    (``error``: :func:`~lab.transforms.spectral_error` of the run's evaluations)."""
    n_eval = error.sizes["eval_step"]
    if n_eval == 0:
        return {"xs": [], "ys": [], "step": []}
    rows = evaluations_to_draw(n_eval, n_curves)
    k = error["k"].values
    return {"xs": [k] * len(rows), "ys": [error.values[i] for i in rows],
            "step": [int(s) for s in error["eval_step"].values[rows]]}


def target_columns(evaluations: xr.Dataset, scale: int) -> dict[str, np.ndarray]:
    """The target's power per bin at the newest of a run's ``evaluations``."""
    name = "eval_spectral_target" if scale == ALL_TRAINING_SCALES else "eval_scale_spectral_target"
    if evaluations.sizes.get("eval_step", 0) == 0 or name not in evaluations:
        return {"k": np.zeros(0), "power": np.zeros(0)}
    target = evaluations[name].isel(eval_step=-1)
    if scale != ALL_TRAINING_SCALES:
        target = target.sel(scale=scale)
    return {"k": evaluations["k"].values, "power": np.ravel(target.values)}


def map_columns(reader: RunReader, error: xr.DataArray, rows: slice) -> dict[str, np.ndarray]:
    """Cells of the relative-error map for evaluation rows ``rows``: one quad per (row, bin)
    (``error``: :func:`~lab.transforms.spectral_error` of the run's evaluations).

    Evaluation i spans steps [(s_{i-1} + s_i)/2, s_i + (s_i - s_{i-1})/2]; bin k spans its
    edges. ``log_ratio`` = log10 E(s_i, k) / E(s_0, k).
    """
    stop = min(rows.stop, reader.n_eval)
    if stop <= rows.start:
        return map_columns_empty()
    # The first evaluation and the rows asked for: only those are divided.
    relative = band_error_relative_to_first(error.isel(eval_step=np.r_[0, rows.start:stop]))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log10(relative.values[1:])
    cells = step_bin_cells(reader.eval_steps, rows.start, stop, reader.k, reader.k_lower, reader.k_upper)
    return {**cells, "log_ratio": log_ratio.ravel()}


class FrequencyBandsView(LiveView):
    """Error power per |n| band over training, for one run and scale."""

    run = param.Selector(default=None, objects=[], doc="The run shown.")
    scale = param.Selector(default=ALL_TRAINING_SCALES,
                           objects={"training scales (mean)": ALL_TRAINING_SCALES})
    n_curves = param.Integer(default=8, bounds=(1, 40), doc="Evaluations drawn as spectra.")

    _structure = ("visible",)

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.spectra = ColumnDataSource({"xs": [], "ys": [], "step": []}, name="band-spectra")
        self.target = ColumnDataSource({"k": [], "power": []}, name="band-target")
        self.cells = ColumnDataSource(map_columns_empty(), name="band-map")
        self._step_colours = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self._cutoffs = [Span(dimension="height", line_dash="dashed", line_color="grey"),
                         Span(dimension="width", line_dash="dashed", line_color="grey")]
        self._built: tuple[figure, figure] | None = None  # see _built_figures
        self._run_select = pn.widgets.Select.from_param(self.param.run, name="Run")
        self._scale_select = pn.widgets.Select.from_param(self.param.scale, name="Scale")
        self._curves = pn.widgets.IntSlider.from_param(self.param.n_curves,
                                                       name="Spectra drawn")
        self.start()

    def __panel__(self):
        return pn.Column(
            pn.Row(self._run_select, self._scale_select, self._curves),
            # Built when first rendered (a hidden tab is not: Tabs(dynamic=True)).
            pn.param.ParamFunction(pn.bind(self._figure_row), lazy=True, sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    def _figure_row(self) -> pn.Row:
        return pn.Row(pn.pane.Bokeh(self.spectrum_figure, sizing_mode="stretch_width"),
                      pn.pane.Bokeh(self.map_figure, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")

    def _built_figures(self) -> tuple[figure, figure]:
        """(spectra, map), built on first use: a tab never shown costs no Bokeh figures (the
        sources they draw exist from the start)."""
        if self._built is None:
            self._built = (self._spectrum_figure(), self._map_figure())
        return self._built

    @property
    def spectrum_figure(self) -> figure:
        return self._built_figures()[0]

    @property
    def map_figure(self) -> figure:
        return self._built_figures()[1]

    @property
    def reader(self) -> RunReader | None:
        return self.state.source.readers.get(self.run)

    def _spectrum_figure(self) -> figure:
        fig = figure(title="Error power per |n| band", x_axis_type="log", y_axis_type="log",
                     x_axis_label="|n| (cycles per unit length)", y_axis_label="error power",
                     height=360, sizing_mode="stretch_width", x_range=DataRange1d(),
                     y_range=DataRange1d(), tools="pan,wheel_zoom,box_zoom,reset,save")
        fig.toolbar.logo = None
        readable_log_axes(fig)
        lines = fig.multi_line("xs", "ys", source=self.spectra, line_width=2,
                               color={"field": "step", "transform": self._step_colours})
        fig.line("k", "power", source=self.target, color="black", line_dash="dashed",
                 legend_label="target power (newest)")
        fig.add_layout(self._cutoffs[0])
        fig.add_layout(ColorBar(color_mapper=self._step_colours, title="step"), "right")
        fig.add_tools(HoverTool(renderers=[lines], tooltips=[("step", "@step")]))
        fig.legend.location = "bottom_left"
        return fig

    def _map_figure(self) -> figure:
        mapper = LinearColorMapper(palette=RdBu11, low=-RELATIVE_LIMIT,
                                   high=RELATIVE_LIMIT, nan_color="#dddddd")
        fig = figure(title="log10 E(step, |n|) / E(first evaluation, |n|)", height=360,
                     x_axis_label="step", y_axis_label="|n| (cycles per unit length)",
                     sizing_mode="stretch_width", x_range=DataRange1d(range_padding=0),
                     y_range=DataRange1d(range_padding=0),
                     tools="pan,wheel_zoom,box_zoom,reset,save")
        fig.toolbar.logo = None
        quads = fig.quad(left="left", right="right", bottom="bottom", top="top",
                         source=self.cells, line_color=None,
                         fill_color={"field": "log_ratio", "transform": mapper})
        fig.add_layout(self._cutoffs[1])
        fig.add_layout(ColorBar(color_mapper=mapper, title="decades"), "right")
        fig.add_tools(HoverTool(renderers=[quads], tooltips=[
            ("step", "@step"), ("|n|", "@k{0.00}"), ("log10 ratio", "@log_ratio{0.00}")]))
        return fig

    # -- updates ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Follow the drawn runs (keeping the shown one if still drawn) and redraw."""
        visible = list(self.state.visible)
        self.param.run.objects = visible
        run = self.run if self.run in visible else (visible[0] if visible else None)
        if run != self.run:
            self.run = run  # redraws, through _update_scales
        else:
            self._update_scales()

    @param.depends("run", watch=True)
    def _update_scales(self) -> None:
        options = scale_options(self.reader)
        self.param.scale.objects = options
        if self.scale not in options.values():
            self.scale = ALL_TRAINING_SCALES
        self.redraw()

    @param.depends("scale", "n_curves", watch=True)
    def redraw(self) -> None:
        """Replace every source's data from the run's rows read so far."""
        reader = self.reader
        if reader is None or not reader.ready:
            self.spectra.data = {"xs": [], "ys": [], "step": []}
            self.target.data = {"k": [], "power": []}
            self.cells.data = map_columns_empty()
            return
        reader.require(*SPECTRAL_VARIABLES)
        self._step_colours.high = max(reader.max_steps, 1)
        cutoff = reader.spectral_cutoff
        for span in self._cutoffs:
            span.location = cutoff if np.isfinite(cutoff) else None
        evaluations = reader.evaluations()
        error = spectral_error(evaluations, self.scale)
        self.spectra.data = spectra_columns(error, self.n_curves)
        self.target.data = target_columns(evaluations, self.scale)
        self.cells.data = map_columns(reader, error, slice(0, reader.n_eval))

    def ingest(self, result: PollResult) -> None:
        """New evaluations of the shown run: stream their map cells, redraw the spectra."""
        reader = self.reader
        delta = next((d for d in result.deltas if reader and d.name == reader.name), None)
        if delta is None or not delta.new_evaluations:
            return
        have = len(self.cells.data["step"]) // max(len(reader.k), 1)
        if delta.reset or have == 0:
            self.redraw()
        elif reader.n_eval > have:
            # From what the map holds, not from the delta (a redraw this poll has its rows).
            evaluations = reader.evaluations()
            error = spectral_error(evaluations, self.scale)
            self.cells.stream(map_columns(reader, error, slice(have, reader.n_eval)))
            self.spectra.data = spectra_columns(error, self.n_curves)
            self.target.data = target_columns(evaluations, self.scale)


def map_columns_empty() -> dict[str, list]:
    return {key: [] for key in ("left", "right", "bottom", "top", "step", "k", "log_ratio")}
