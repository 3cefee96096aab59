"""Two runs side by side (say a baseline and an H¹ run): spectra, their ratio, reconstructions.

With E_A(s, k) and E_B(s, k) the error power per |n| bin of runs A and B (over the training
scales or of one scale), on the evaluation steps both have:

- both spectra at the chosen step (log-log);
- log10 E_B / E_A against |n| at that step: below 0 where B has the smaller error;
- a step × |n| map of log10 E_B / E_A over training, so one sees where (in |n|) and when B
  pulls ahead;
- the truth, both reconstructions and both errors of one test sample (one shared colour range
  for the two errors, so their sizes compare directly).

With "follow newest" on, the step moves to the newest evaluation both runs have.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    DataRange1d,
    HoverTool,
    LinearColorMapper,
    Span,
)
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from fae_lab.store import SPECTRAL_VARIABLES, PollResult, RunReader
from lab.state import LabState
from lab.text import markdown_text
from lab.transforms import (
    ALL_TRAINING_SCALES,
    spectral_difference,
    spectral_error,
    step_bin_cells,
)
from lab.views.axes import readable_log_axes
from lab.views.base import LiveView
from lab.views.choices import (
    evaluation_index,
    no_reconstructions,
    scale_options,
    set_sample_choices,
)
from lab.views.images import ReconstructionRow

RATIO_LIMIT = 1.0  # colour range of the ratio map: ±1 decade
def default_pair(state: LabState, runs: list[str]) -> tuple[str | None, str | None]:
    """A baseline (an ``l2`` / ``standard`` run if any) and the first run that differs from it
    in loss or decoder (else the next run)."""
    if not runs:
        return None, None
    tags = state.tags(runs)
    baseline = next((r for r in runs if tags[r]["loss_type"] == "l2"
                     and tags[r]["decoder_type"] == "standard"), runs[0])
    others = [r for r in runs if r != baseline]
    different = [r for r in others if (tags[r]["loss_type"], tags[r]["decoder_type"])
                 != (tags[baseline]["loss_type"], tags[baseline]["decoder_type"])]
    return baseline, (different or others or [baseline])[0]


class TwoRunComparison(LiveView):
    """Difference of two runs' spectral error curves and their reconstructions."""

    run_a = param.Selector(default=None, objects=[], label="Run A (baseline)")
    run_b = param.Selector(default=None, objects=[], label="Run B")
    scale = param.Selector(default=ALL_TRAINING_SCALES,
                           objects={"training scales (mean)": ALL_TRAINING_SCALES})
    sample = param.Selector(default=0, objects={"sample 0": 0})
    evaluation = param.Integer(default=0, bounds=(0, 1), doc="""
        Index of the shown step among the steps both runs evaluated.""")
    follow = param.Boolean(default=True, doc="Move to the newest step both runs have.")

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self._common_key, self._common_value = None, None
        self._steps: list[int] = []
        self._map_drawn: tuple[tuple | None, list[int]] = (None, [])
        self.spectra = ColumnDataSource({"k": [], "a": [], "b": [], "log10_ratio": []},
                                        name="compare-spectra")
        self.cells = ColumnDataSource({k: [] for k in ("left", "right", "bottom", "top",
                                                       "step", "k", "log10_ratio")},
                                      name="compare-map")
        self.message = pn.pane.Markdown("", disable_math=True, css_classes=["compare-message"])
        # Over the indices of the common steps; its title shows the step.
        self.slider = pn.widgets.IntSlider.from_param(self.param.evaluation, show_value=False,
                                                      sizing_mode="stretch_width")
        self._built: tuple | None = None  # the figures, built on first use (see _built_figures)
        self.images = ReconstructionRow(("A", "B"), name="compare-image")
        self.start()

    def __panel__(self):
        widgets = pn.Row(
            pn.widgets.Select.from_param(self.param.run_a),
            pn.widgets.Select.from_param(self.param.run_b),
            pn.widgets.Select.from_param(self.param.scale, name="Scale"),
            pn.widgets.Select.from_param(self.param.sample, name="Sample"),
            pn.widgets.Checkbox.from_param(self.param.follow, name="Follow newest common step",
                                           align="end"))
        return pn.Column(
            widgets,
            self.slider,
            self.message,
            # Built when first rendered (a hidden tab is not: Tabs(dynamic=True)).
            pn.param.ParamFunction(pn.bind(self._figure_row), lazy=True, sizing_mode="stretch_width"),
            self.images, sizing_mode="stretch_width")

    def _figure_row(self) -> pn.Row:
        return pn.Row(*(pn.pane.Bokeh(f, sizing_mode="stretch_width") for f in
                        (self.spectrum_figure, self.ratio_figure, self.map_figure)),
                      sizing_mode="stretch_width")

    def _built_figures(self) -> tuple:
        """(spectra, ratio, map, line A, line B), built on first use: a tab never shown
        costs no Bokeh figures."""
        if self._built is None:
            self._built = self._figures()
        return self._built

    @property
    def spectrum_figure(self) -> figure:
        return self._built_figures()[0]

    @property
    def ratio_figure(self) -> figure:
        return self._built_figures()[1]

    @property
    def map_figure(self) -> figure:
        return self._built_figures()[2]

    @property
    def _line_a(self):
        return self._built_figures()[3]

    @property
    def _line_b(self):
        return self._built_figures()[4]

    def _reader(self, run: str | None) -> RunReader | None:
        return self.state.source.readers.get(run)

    # -- figures ---------------------------------------------------------------------------

    def _figures(self) -> tuple:
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        spectra = figure(title="Error power per |n| band", x_axis_type="log",
                         y_axis_type="log", x_axis_label="|n|", y_axis_label="error power",
                         height=320, sizing_mode="stretch_width", tools=tools,
                         x_range=DataRange1d(), y_range=DataRange1d())
        line_a = spectra.line("k", "a", source=self.spectra, line_width=2,
                                    legend_label="A")
        line_b = spectra.line("k", "b", source=self.spectra, line_width=2,
                                    line_dash="dashed", legend_label="B")
        spectra.legend.location = "bottom_left"
        ratio = figure(title="log10 E_B / E_A  (< 0: B has less error)", x_axis_type="log",
                       x_axis_label="|n|", y_axis_label="decades", height=320,
                       sizing_mode="stretch_width", tools=tools, x_range=spectra.x_range,
                       y_range=DataRange1d())
        ratio.line("k", "log10_ratio", source=self.spectra, line_width=2, color="black")
        ratio.scatter("k", "log10_ratio", source=self.spectra, size=5, color="black")
        ratio.add_layout(Span(location=0, dimension="width", line_color="grey"))
        mapper = LinearColorMapper(palette=RdBu11, low=-RATIO_LIMIT,
                                   high=RATIO_LIMIT, nan_color="#dddddd")
        ratio_map = figure(title="log10 E_B / E_A over training", x_axis_label="step",
                           y_axis_label="|n|", height=320, sizing_mode="stretch_width",
                           tools=tools, x_range=DataRange1d(range_padding=0),
                           y_range=DataRange1d(range_padding=0))
        quads = ratio_map.quad(left="left", right="right", bottom="bottom", top="top",
                               source=self.cells, line_color=None,
                               fill_color={"field": "log10_ratio", "transform": mapper})
        ratio_map.add_layout(ColorBar(color_mapper=mapper, title="decades"), "right")
        ratio_map.add_tools(HoverTool(renderers=[quads], tooltips=[
            ("step", "@step"), ("|n|", "@k{0.00}"), ("log10 B/A", "@log10_ratio{0.00}")]))
        for fig in (spectra, ratio, ratio_map):
            fig.toolbar.logo = None
            readable_log_axes(fig)
        return spectra, ratio, ratio_map, line_a, line_b

    # -- choices ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Follow the drawn runs (keeping the chosen pair if still drawn) and redraw."""
        visible = list(self.state.visible)
        a, b = default_pair(self.state, visible)
        run_a = self.run_a if self.run_a in visible else a
        run_b = self.run_b if self.run_b in visible else (b if b != run_a else a)
        with self._hold():  # the Select widgets echo each change back: redraw once, below
            self.param.run_a.objects = visible
            self.param.run_b.objects = visible
            self.param.update(run_a=run_a, run_b=run_b)
        self._update_choices()

    @param.depends("run_a", "run_b", watch=True)
    def _update_choices(self) -> None:
        if self._holding:
            return
        a = self._reader(self.run_a)
        for line, run in ((self._line_a, self.run_a), (self._line_b, self.run_b)):
            line.glyph.line_color = self.state.colour(run) if run in self.state.source else "grey"
        with self._hold():
            self.param.scale.objects = scale_options(a)
            if self.scale not in self.param.scale.objects.values():
                self.scale = ALL_TRAINING_SCALES
            set_sample_choices(self, a)
            self._update_steps()
        self.redraw()

    def _common(self):
        """The two runs' E(s, k) on their common steps, or None (with a reason shown);
        recomputed only when the runs, the scale or their evaluation counts change."""
        a, b = self._reader(self.run_a), self._reader(self.run_b)
        key = (self.run_a, self.run_b, self.scale, a and a.n_eval, b and b.n_eval)
        if key != self._common_key:
            self._common_key, self._common_value = key, self._compute_common(a, b)
        return self._common_value

    def _compute_common(self, a: RunReader | None, b: RunReader | None):
        if a is None or b is None or not (a.ready and b.ready):
            self.message.object = "Pick two runs."
            return None
        if a.n_eval == 0 or b.n_eval == 0:
            self.message.object = "Both runs need an evaluation first."
            return None
        a.require(*SPECTRAL_VARIABLES)
        b.require(*SPECTRAL_VARIABLES)
        scale = self.scale if self.scale in set(map(int, b.scales)) | {ALL_TRAINING_SCALES} \
            else ALL_TRAINING_SCALES
        try:
            both = spectral_difference(spectral_error(a.evaluations(), scale),
                                       spectral_error(b.evaluations(), scale))
        except ValueError as err:
            self.message.object = markdown_text(err)  # may quote run data
            return None
        if both.sizes["eval_step"] == 0:
            self.message.object = "The two runs have no evaluation step in common."
            return None
        return both

    @property
    def step(self) -> int | None:
        """The step shown: one both runs evaluated."""
        return self._steps[min(self.evaluation, len(self._steps) - 1)] if self._steps else None

    def _update_steps(self) -> None:
        both = self._common()
        self._steps = [int(s) for s in both["eval_step"].values] if both is not None else []
        self.param.evaluation.bounds = (0, max(len(self._steps) - 1, 1))
        self.evaluation = evaluation_index(len(self._steps), self.evaluation, self.follow)

    @param.depends("follow", watch=True)
    def _follow(self) -> None:
        if self.follow:
            self._update_steps()

    # -- drawing ---------------------------------------------------------------------------

    @param.depends("scale", "sample", "evaluation", watch=True)
    def redraw(self) -> None:
        """Spectra, ratio map and images at the chosen step."""
        self.slider.name = (f"Step {self.step} (both runs)" if self.step is not None
                            else "Step (none in common)")
        if not self._holding:
            self._draw_spectra()
            self._draw_images()

    def _draw_spectra(self) -> None:
        both = self._common()
        if both is None or self.step not in both["eval_step"].values:
            self.spectra.data = {"k": [], "a": [], "b": [], "log10_ratio": []}
            self.cells.data = {k: [] for k in self.cells.data}
            self._map_drawn = (None, [])
            return
        at = both.sel(eval_step=self.step)
        self.spectra.data = {"k": both["k"].values, "a": at["a"].values, "b": at["b"].values,
                             "log10_ratio": at["log10_ratio"].values}
        self._draw_map(both)
        better = float((at["b"].sum() - at["a"].sum()) / at["a"].sum())
        self.message.object = (f"Step {self.step}: B's error is {better:+.1%} of A's "
                               f"(sum over bins) at this step.")

    def _draw_map(self, both) -> None:
        """The ratio map: streamed when only new common steps were added, else replaced."""
        key = (self.run_a, self.run_b, self.scale)
        steps = [int(s) for s in both["eval_step"].values]
        drawn_key, drawn = self._map_drawn
        if key == drawn_key and steps[:len(drawn)] == drawn:
            if len(steps) > len(drawn):
                self.cells.stream(self._map_cells(both, start=len(drawn)))
        else:
            self.cells.data = self._map_cells(both)
        self._map_drawn = (key, steps)

    def _map_cells(self, both, start: int = 0) -> dict[str, np.ndarray]:
        """Cells of the ratio map for the common steps from ``start`` on: common step i spans
        [(s_{i-1} + s_i)/2, s_i + (s_i - s_{i-1})/2], bin k its edges."""
        reader = self._reader(self.run_a)
        steps = both["eval_step"].values
        cells = step_bin_cells(steps, start, steps.size, both["k"].values, reader.k_lower, reader.k_upper)
        return {**cells, "log10_ratio": both["log10_ratio"].values[start:].ravel()}

    def _draw_images(self) -> None:
        """Truth, both reconstructions and both errors (one shared error range) at the step."""
        a, b = self._reader(self.run_a), self._reader(self.run_b)
        titles = self.images.titles
        if (a is None or b is None or self.step is None or a.n_eval == 0 or b.n_eval == 0
                or self.step not in a.eval_steps[:a.n_eval]
                or self.step not in b.eval_steps[:b.n_eval]):
            self.images.blank()
            return
        missing = [r.name for r in (a, b) if not r.has_reconstructions]
        if missing:
            self.message.object += "  \n" + " ".join(no_reconstructions(name) for name in missing)
            self.images.blank()
            return
        training = np.flatnonzero(~a.held_out)
        scale = self.scale if self.scale >= 0 else int(training[0] if training.size else 0)
        truth_a = a.truth()
        sample = min(self.sample, truth_a.shape[0] - 1)
        scale = min(scale, truth_a.shape[1] - 1)
        truth = truth_a[sample, scale]
        truths_b = b.truth()
        same = truths_b.shape == truth_a.shape and np.allclose(truths_b, truth_a)
        truth_b = truth if same else truths_b[min(sample, truths_b.shape[0] - 1),
                                               min(scale, truths_b.shape[1] - 1)]
        if not same:
            titles = ("truth u (of A)", *titles[1:])
            self.message.object += ("  \nThe runs' test samples differ (other data or split): "
                                    "each error is against the run's own truth.")
        recon_a = a.reconstruction(int(np.searchsorted(a.eval_steps, self.step)))[sample, scale]
        recon_b = b.reconstruction(int(np.searchsorted(b.eval_steps, self.step)))
        recon_b = recon_b[min(sample, recon_b.shape[0] - 1), min(scale, recon_b.shape[1] - 1)]
        self.images.show(truth, (recon_a, recon_b), truths=(truth, truth_b), titles=titles)

    def ingest(self, result: PollResult) -> None:
        names = {self.run_a, self.run_b}
        if any(d.name in names and d.new_evaluations for d in result.deltas):
            step = self.step
            self._update_steps()  # a new step redraws
            both = self._common()
            if self.step == step and both is not None:
                self._draw_map(both)  # new common steps, if any; the step shown is unchanged
