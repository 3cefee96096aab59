"""How much of the target's spectrum each run reproduces, per |n| and over training.

Left: the learned fraction L(k) = 1 − E(k)/T(k) (:mod:`fae_lab.bands`) against the |n| bin
centres, the drawn runs overlaid, at the evaluation chosen with the step slider (each run's
newest evaluation at or before that step; with "follow newest" on, the slider moves to the
newest evaluation of any drawn run), with the line L = 0.5. 1 is a band reproduced exactly, 0
a band whose error has as much power as the target; the axis stops at −1 (a band the model
makes worse than predicting nothing lies below it). Right: the resolved bandwidth against
step, per run: the largest |n| up to which L stays ≥ 0.5 (the upper edge of the last bin of
the initial run of bins at or above 0.5).

Over the training scales (E and T averaged over them, ``eval_spectral_mse`` /
``eval_spectral_target``) or for one scale (``eval_scale_spectral_*``); on the test split
(default) or the training split (``eval_train_spectral_*``: a run whose store lacks it draws
nothing). A run of a ladder rung without an encoder (``auto_decoder``, ``decoder_alone``) has
no test numbers and is always drawn on its training split, as its legend entry says. Bokeh
sources, one pair per drawn run: a poll streams new evaluations into the bandwidth curves and
replaces the few numbers of each fraction line.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    GlyphRenderer,
    HoverTool,
    Legend,
    LegendItem,
    Line,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from fae_lab.bands import LEARNED_THRESHOLD
from fae_lab.store import SPECTRAL_VARIABLES, PollResult
from lab.state import LabState
from lab.transforms import (
    ALL_TRAINING_SCALES,
    SPLIT_OPTIONS,
    TEST_SPLIT,
    TRAINING_SPLIT,
    bandwidth_over_training,
    evaluation_at_step,
    learned_fraction_by_k,
    run_split,
    split_variable,
)
from lab.views.base import LiveView
from lab.views.choices import scale_options


def fraction_columns(fraction: xr.DataArray, index: int) -> dict[str, np.ndarray]:
    """One run's line: ``k`` (bin centres) and ``learned_fraction`` at evaluation ``index``
    (empty when ``index`` < 0: no evaluation at or before the chosen step)."""
    if index < 0 or fraction.sizes.get("eval_step", 0) == 0:
        return {"k": np.zeros(0), "learned_fraction": np.zeros(0)}
    return {"k": fraction["k"].values, "learned_fraction": fraction.values[index]}


def _line(fig: figure, source: ColumnDataSource, x: str, y: str, colour: str,
          name: str, dash: str | tuple = "solid") -> GlyphRenderer:
    renderer = GlyphRenderer(data_source=source, name=name, nonselection_glyph=None,
                             muted_glyph=None,
                             glyph=Line(x=x, y=y, line_color=colour, line_dash=dash,
                                        line_width=1.8))
    fig.renderers.append(renderer)
    return renderer


class LearnedFractionView(LiveView):
    """Learned fraction per |n| at a chosen step, and resolved bandwidth over training."""

    scale = param.Selector(default=ALL_TRAINING_SCALES,
                           objects={"training scales (mean)": ALL_TRAINING_SCALES})
    split = param.Selector(default=TEST_SPLIT, objects=SPLIT_OPTIONS, doc="""
        The evaluated split: test, or the training split (rungs without an encoder always).""")
    step = param.Integer(default=0, bounds=(0, 1), doc="Training step of the evaluation shown.")
    follow = param.Boolean(default=True, doc="Move to the newest evaluation as it is written.")

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.fractions: dict[str, xr.DataArray] = {}  # run -> L(s, k) of the rows read
        self.fraction_sources: dict[str, ColumnDataSource] = {}
        self.bandwidth_sources: dict[str, ColumnDataSource] = {}
        # run -> the evaluation index its line shows (a line is redrawn only when it changes)
        self._drawn_index: dict[str, int] = {}
        # Built by each refresh (none before the first: a hidden tab builds no figures).
        self.fraction_figure: figure | None = None
        self.bandwidth_figure: figure | None = None
        self._plots = pn.Row(sizing_mode="stretch_width")
        self._empty = pn.pane.Alert("No run matches the filter.", alert_type="light",
                                    visible=False)
        self.slider = pn.widgets.IntSlider.from_param(self.param.step, name="Step",
                                                      sizing_mode="stretch_width")
        self.widgets = pn.Row(
            pn.widgets.Select.from_param(self.param.scale, name="Scale"),
            pn.widgets.Select.from_param(self.param.split, name="Split"),
            pn.widgets.Checkbox.from_param(self.param.follow, name="Follow newest evaluation",
                                           align="end"))
        self.start()

    def __panel__(self):
        return pn.Column(self.widgets, self.slider, self._empty, self._plots,
                         sizing_mode="stretch_width")

    def _readers(self):
        return self.state.ready_readers()

    # -- drawing -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read every drawn run's spectra, then new sources and figures."""
        readers = dict(self._readers())
        first = next(iter(readers.values()), None)
        options = scale_options(first)
        with self._hold():  # the Select echoes the change back: redraw once, here
            self.param.scale.objects = options
            if self.scale not in options.values():
                self.scale = ALL_TRAINING_SCALES
        self.fractions, self.fraction_sources, self.bandwidth_sources = {}, {}, {}
        self._drawn_index = {}
        for run, reader in readers.items():
            split = self.run_split(run)
            reader.require(*(split_variable(name, split) for name in SPECTRAL_VARIABLES))
            self.fractions[run] = self._fraction(run, reader.evaluations())
            self.bandwidth_sources[run] = ColumnDataSource(
                self._bandwidth(run, self.fractions[run]), name=f"bandwidth:{run}")
            self.fraction_sources[run] = ColumnDataSource(
                fraction_columns(self.fractions[run], -1), name=f"fraction:{run}")
        self._empty.visible = not readers
        self.fraction_figure, self.bandwidth_figure = self._figures()
        self._plots.objects = [pn.pane.Bokeh(fig, sizing_mode="stretch_width")
                               for fig in (self.fraction_figure, self.bandwidth_figure)] if readers else []
        self._update_steps()
        self._draw_fractions()

    def run_split(self, run: str) -> str:
        """The split ``run`` is drawn on: the chosen one, or the training split for a rung
        without an encoder."""
        return run_split(self.state.source[run].rung, self.split)

    def _fraction(self, run: str, evaluations: xr.Dataset) -> xr.DataArray:
        if self.scale != ALL_TRAINING_SCALES and self.scale not in evaluations["scale"].values:
            empty = np.full((evaluations.sizes.get("eval_step", 0), evaluations.sizes["k"]), np.nan)
            return xr.DataArray(empty, dims=("eval_step", "k"),
                                coords={"eval_step": evaluations["eval_step"].values,
                                        "k": evaluations["k"].values})
        return learned_fraction_by_k(evaluations, self.scale, self.run_split(run))

    def _bandwidth(self, run: str, fraction: xr.DataArray) -> dict[str, np.ndarray]:
        k_upper = self.state.source[run].k_upper
        return {"step": fraction["eval_step"].values.astype(np.int64),
                "resolved_bandwidth": bandwidth_over_training(fraction, k_upper)}

    def _figures(self) -> tuple[figure, figure]:
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        split = "training split" if self.split == TRAINING_SPLIT else "test split"
        left = figure(title=f"Learned fraction 1 − E/T per |n| band ({split})", height=360,
                      x_axis_label="|n| (cycles per unit length)", y_axis_label="learned fraction",
                      x_range=DataRange1d(only_visible=True), y_range=Range1d(-1.0, 1.05),
                      sizing_mode="stretch_width", tools=tools)
        right = figure(title=f"Resolved bandwidth: largest |n| with learned fraction ≥ "
                             f"{LEARNED_THRESHOLD:g} ({split})", height=360, x_axis_label="step",
                       y_axis_label="|n| (cycles per unit length)",
                       x_range=DataRange1d(only_visible=True),
                       y_range=DataRange1d(only_visible=True, start=0),
                       sizing_mode="stretch_width", tools=tools)
        for fig in (left, right):
            fig.toolbar.logo = None
        left.add_layout(Span(location=LEARNED_THRESHOLD, dimension="width",
                             line_dash="dashed", line_color="grey"))
        legend: dict[str, list] = {}
        for run in self.fraction_sources:
            colour, dash, key = self.state.style(run)
            if self.run_split(run) != self.split:  # a rung without an encoder: say so
                key = f"{key} (training split: no encoder)"
            line = _line(left, self.fraction_sources[run], "k", "learned_fraction", colour, run,
                         dash)
            _line(right, self.bandwidth_sources[run], "step", "resolved_bandwidth", colour, run,
                  dash)
            legend.setdefault(key, []).append(line)
        left.add_tools(HoverTool(tooltips=[("run", "$name"), ("|n|", "$snap_x{0.00}"),
                                           ("learned", "$snap_y{0.000}")]))
        right.add_tools(HoverTool(tooltips=[("run", "$name"), ("step", "$snap_x{0}"),
                                            ("|n|", "$snap_y{0.00}")]))
        if legend:
            left.add_layout(Legend(items=[LegendItem(label=label, renderers=renderers)
                                          for label, renderers in legend.items()],
                                   click_policy="hide", label_text_font_size="8pt",
                                   spacing=0, padding=4), "right")
        return left, right

    # -- the step shown ----------------------------------------------------------------------

    def _newest_step(self) -> int:
        steps = [int(f["eval_step"].values[-1]) for f in self.fractions.values()
                 if f.sizes["eval_step"]]
        return max(steps, default=0)

    def _update_steps(self) -> None:
        """Slider bounds: 0 .. the newest evaluation of any drawn run; follow it if asked."""
        newest = self._newest_step()
        with self._hold():
            self.param.step.bounds = (0, max(newest, 1))
            self.step = newest if self.follow else min(self.step, max(newest, 1))

    @param.depends("step", watch=True)
    def _draw_fractions(self) -> None:
        """Each run's line at its newest evaluation at or before ``step``; a line already
        showing that evaluation is left as it is (one new evaluation of one of 200 runs
        redraws one line, or none, not 200)."""
        if self._holding:
            return
        for run, fraction in self.fractions.items():
            index = evaluation_at_step(fraction["eval_step"].values, self.step)
            if self._drawn_index.get(run) != index:
                self.fraction_sources[run].data = fraction_columns(fraction, index)
                self._drawn_index[run] = index
        self.slider.name = f"Step {self.step}"

    @param.depends("follow", watch=True)
    def _follow(self) -> None:
        if self.follow:
            self._update_steps()
            self._draw_fractions()

    @param.depends("scale", "split", watch=True)
    def _rescale(self) -> None:
        if not self._holding:
            self.refresh()

    # -- live --------------------------------------------------------------------------------

    def ingest(self, result: PollResult) -> None:
        """Append the drawn runs' new evaluations: stream their bandwidths, redraw the lines."""
        changed = False
        for delta in result.deltas:
            if delta.name not in self.state.visible or not delta.new_evaluations:
                continue
            reader = self.state.source[delta.name]
            if delta.reset or delta.name not in self.fractions:
                if reader.ready:
                    self.refresh()
                return
            have = self.fractions[delta.name].sizes["eval_step"]
            if reader.n_eval <= have:  # a refresh this poll already read them
                continue
            new = self._fraction(delta.name, reader.evaluations(slice(have, reader.n_eval)))
            self.fractions[delta.name] = xr.concat([self.fractions[delta.name], new], "eval_step")
            self._drawn_index.pop(delta.name, None)  # its rows changed: redraw its line
            self.bandwidth_sources[delta.name].stream(self._bandwidth(delta.name, new))
            changed = True
        if changed:
            self._update_steps()
            self._draw_fractions()
