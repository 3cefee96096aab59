"""The bottleneck ladder side by side: how far up in |n| each rung learns its training fields.

The ladder (docs/run-store.md) trains three kinds of model on the same data and decoder, bottom
rung first: ``decoder_alone`` (the decoder fitted to one training sample, fixed latents),
``auto_decoder`` (one free latent per training field, no encoder) and ``fae`` (encoder and
decoder). A run's rung is :attr:`fae_lab.store.RunReader.rung`; a run without one is an FAE, so
every drawn run belongs to the ladder. The rungs without an encoder have no test numbers, so
all rungs are compared on the **training split** (``eval_train_*``), like for like.

One column per rung present among the drawn runs, bottom rung first, the columns sharing their
axes: on top the learned fraction L(k) = 1 − E(k)/T(k) (:mod:`fae_lab.bands`) of each run's
newest evaluation against the |n| bin centres, with the line L = 0.5; below it the resolved
bandwidth (the largest |n| up to which L stays ≥ 0.5) against step. One line per run, so the
seeds of an experiment (``<experiment>_s0``, ``_s1`` ...) are several lines; coloured by rung.
Under the columns a table, one row per run: rung, run, step of the newest evaluation,
training-split relative MSE and resolved bandwidth there. A run whose store lacks the training
split draws nothing and has NaN in the table.

Bokeh sources, one pair per run (``ladder-fraction:<run>``, ``ladder-bandwidth:<run>``): a poll
streams new evaluations into the bandwidth curves and replaces each fraction line's few numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import xarray as xr
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    HoverTool,
    Legend,
    LegendItem,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from fae_lab.bands import LEARNED_THRESHOLD
from fae_lab.ladder import RUNG_ORDER
from fae_lab.store import SPECTRAL_VARIABLES, PollResult
from lab.state import LabState
from lab.transforms import (
    ALL_TRAINING_SCALES,
    TRAINING_SPLIT,
    bandwidth_over_training,
    learned_fraction_by_k,
    split_variable,
)
from lab.views.base import LiveView
from lab.views.learned import _line, fraction_columns

RUNG_LABELS = {"decoder_alone": "decoder alone", "auto_decoder": "auto-decoder", "fae": "FAE"}
# One colour per rung (Okabe & Ito), whatever the sidebar's colour choice.
RUNG_COLOURS = {"decoder_alone": "#D55E00", "auto_decoder": "#E69F00", "fae": "#0072B2"}
TABLE_COLUMNS = ("rung", "run", "step", "train_rel_mse", "resolved_bandwidth")
TABLE_TITLES = {"rung": "Rung", "run": "Run", "step": "Step",
                "train_rel_mse": "Training-split rel. MSE",
                "resolved_bandwidth": "Resolved |n| (training split)"}
TRAIN_REL_MSE = split_variable("eval_rel_mse", TRAINING_SPLIT)
_NUMBER = {"type": "money", "precision": 4, "symbol": ""}


def ladder_table(rows: list[dict]) -> pd.DataFrame:
    """The table's rows, bottom rung first, then by run name; columns :data:`TABLE_COLUMNS`."""
    ordered = sorted(rows, key=lambda r: (RUNG_ORDER.index(r["rung"]), r["run"]))
    return pd.DataFrame(ordered, columns=list(TABLE_COLUMNS))


class LadderView(LiveView):
    """The drawn runs' training-split learned fraction and resolved bandwidth, rung by rung."""

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.rungs: dict[str, str] = {}  # run -> rung, the runs drawn
        self.fractions: dict[str, xr.DataArray] = {}  # run -> training-split L(s, k)
        self.fraction_sources: dict[str, ColumnDataSource] = {}
        self.bandwidth_sources: dict[str, ColumnDataSource] = {}
        self.fraction_figures: dict[str, figure] = {}  # rung -> figure
        self.bandwidth_figures: dict[str, figure] = {}
        self._columns = pn.Row(sizing_mode="stretch_width")
        self._empty = pn.pane.Alert("No run matches the filter.", alert_type="light",
                                    visible=False)
        self.table = pn.widgets.Tabulator(
            ladder_table([]), show_index=False, disabled=True, titles=TABLE_TITLES,
            formatters={"train_rel_mse": _NUMBER, "resolved_bandwidth": _NUMBER},
            sizing_mode="stretch_width", layout="fit_data_table", css_classes=["ladder-table"])
        self._note = pn.pane.Markdown(
            "Every rung on its **training split** (the rungs without an encoder have no test "
            "numbers). Runs without a rung are FAEs; a run whose store has no training split "
            "draws nothing (NaN in the table).", margin=(0, 10))
        self.start()

    def __panel__(self):
        return pn.Column(self._note, self._empty, self._columns, self.table,
                         sizing_mode="stretch_width")

    # -- data ----------------------------------------------------------------------------------

    def _readers(self):
        return ((run, r) for run, r in self.state.ready_readers() if r.rung in RUNG_ORDER)

    @staticmethod
    def _fraction(evaluations: xr.Dataset) -> xr.DataArray:
        return learned_fraction_by_k(evaluations, ALL_TRAINING_SCALES, TRAINING_SPLIT)

    def _bandwidth(self, run: str, fraction: xr.DataArray) -> dict[str, np.ndarray]:
        return {"step": fraction["eval_step"].values.astype(np.int64),
                "resolved_bandwidth": bandwidth_over_training(
                    fraction, self.state.source[run].k_upper)}

    def _table_row(self, run: str) -> dict:
        reader, widths = self.state.source[run], self.bandwidth_sources[run].data
        n = len(widths["step"])
        return {"rung": self.rungs[run], "run": run,
                "step": int(widths["step"][-1]) if n else -1,
                "train_rel_mse": reader.latest(TRAIN_REL_MSE),
                "resolved_bandwidth": float(widths["resolved_bandwidth"][-1]) if n else np.nan}

    def _update_table(self) -> None:
        self.table.value = ladder_table([self._table_row(run) for run in self.rungs])

    # -- drawing -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read every drawn run's training-split spectra, then new sources, figures and table."""
        readers = dict(self._readers())
        self.rungs, self.fractions = {}, {}
        self.fraction_sources, self.bandwidth_sources = {}, {}
        for run, reader in readers.items():
            reader.require(TRAIN_REL_MSE,
                           *(split_variable(name, TRAINING_SPLIT) for name in SPECTRAL_VARIABLES[:2]))
            self.rungs[run] = reader.rung
            self.fractions[run] = self._fraction(reader.evaluations())
            self.bandwidth_sources[run] = ColumnDataSource(
                self._bandwidth(run, self.fractions[run]), name=f"ladder-bandwidth:{run}")
            self.fraction_sources[run] = ColumnDataSource(
                fraction_columns(self.fractions[run], self.fractions[run].sizes["eval_step"] - 1),
                name=f"ladder-fraction:{run}")
        self._empty.visible = not readers
        self._figures()
        self._columns.objects = [
            pn.Column(pn.pane.Bokeh(self.fraction_figures[rung], sizing_mode="stretch_width"),
                      pn.pane.Bokeh(self.bandwidth_figures[rung], sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
            for rung in self.fraction_figures]
        self._update_table()

    def _figures(self) -> None:
        """Two figures per rung present, bottom rung first; the columns share their ranges."""
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        k_range, fraction_range = DataRange1d(only_visible=True), Range1d(-1.0, 1.05)
        step_range = DataRange1d(only_visible=True)
        width_range = DataRange1d(only_visible=True, start=0)
        self.fraction_figures, self.bandwidth_figures = {}, {}
        for rung in RUNG_ORDER:
            runs = [run for run, r in self.rungs.items() if r == rung]
            if not runs:
                continue
            label, colour = RUNG_LABELS[rung], RUNG_COLOURS[rung]
            top = figure(title=f"{label}: learned fraction 1 − E/T, newest evaluation",
                         height=320, x_range=k_range, y_range=fraction_range,
                         x_axis_label="|n| (cycles per unit length)",
                         y_axis_label="learned fraction (training split)",
                         sizing_mode="stretch_width", tools=tools)
            bottom = figure(title=f"{label}: resolved bandwidth (training split)", height=280,
                            x_range=step_range, y_range=width_range, x_axis_label="step",
                            y_axis_label="|n| (cycles per unit length)",
                            sizing_mode="stretch_width", tools=tools)
            top.add_layout(Span(location=LEARNED_THRESHOLD, dimension="width",
                                line_dash="dashed", line_color="grey"))
            lines = []
            for run in runs:
                lines.append(_line(top, self.fraction_sources[run], "k", "learned_fraction",
                                   colour, run))
                _line(bottom, self.bandwidth_sources[run], "step", "resolved_bandwidth",
                      colour, run)
            top.add_layout(Legend(items=[LegendItem(label=f"{label} ({len(runs)} runs)",
                                                    renderers=lines)],
                                  location="bottom_left", label_text_font_size="8pt",
                                  spacing=0, padding=4))
            top.add_tools(HoverTool(tooltips=[("run", "$name"), ("|n|", "$snap_x{0.00}"),
                                              ("learned", "$snap_y{0.000}")]))
            bottom.add_tools(HoverTool(tooltips=[("run", "$name"), ("step", "$snap_x{0}"),
                                                 ("|n|", "$snap_y{0.00}")]))
            for fig in (top, bottom):
                fig.toolbar.logo = None
            self.fraction_figures[rung], self.bandwidth_figures[rung] = top, bottom

    # -- live ----------------------------------------------------------------------------------

    def ingest(self, result: PollResult) -> None:
        """Append the drawn runs' new evaluations: stream their bandwidths, replace the lines."""
        changed = False
        for delta in result.deltas:
            if delta.name not in self.state.visible or not delta.new_evaluations:
                continue
            reader = self.state.source[delta.name]
            if delta.reset or delta.name not in self.fractions:
                if reader.ready and reader.rung in RUNG_ORDER:
                    self.refresh()
                    return
                continue
            have = self.fractions[delta.name].sizes["eval_step"]
            if reader.n_eval <= have:  # a refresh this poll already read them
                continue
            new = self._fraction(reader.evaluations(slice(have, reader.n_eval)))
            fraction = xr.concat([self.fractions[delta.name], new], "eval_step")
            self.fractions[delta.name] = fraction
            self.bandwidth_sources[delta.name].stream(self._bandwidth(delta.name, new))
            self.fraction_sources[delta.name].data = fraction_columns(
                fraction, fraction.sizes["eval_step"] - 1)
            changed = True
        if changed:
            self._update_table()
