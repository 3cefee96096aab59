"""Bokeh figures of the report: static curves, and field images.

Every figure is a plain Bokeh model (no server, no Panel), so the report embeds it as a
standalone document. Legends and titles are canvas text: a run's name there is shown as text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, Label, LinearColorMapper, Range1d
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
FIELD_PALETTE = Viridis256
ERROR_PALETTE = RdBu11  # blue below zero, red above (as the dashboards)


def new_figure(title: str, x_label: str, y_label: str, *, log_y: bool = False,
               height: int = 300, width: int = 440, x_range=None) -> figure:
    fig = figure(title=title, height=height, width=width, tools=TOOLS,
                 x_axis_label=x_label, y_axis_label=y_label,
                 y_axis_type="log" if log_y else "linear",
                 **({"x_range": x_range} if x_range is not None else {}))
    fig.toolbar.logo = None
    return fig


def finite_or_nan(values, log: bool = False) -> np.ndarray:
    """``values`` as float64 with non-finite (and, on a log axis, non-positive) entries NaN:
    a gap in the line rather than a point Bokeh cannot place."""
    out = np.asarray(values, dtype=np.float64).copy()
    bad = ~np.isfinite(out) | ((out <= 0) if log else False)
    out[bad] = np.nan
    return out


def add_line(fig: figure, x, y, *, colour: str, label: str | None = None, dash: str = "solid",
             name: str | None = None, log: bool = False, width: float = 1.8):
    """A line of ``y`` against ``x`` in its own source (named ``name``); None if all NaN."""
    y = finite_or_nan(y, log)
    if not np.isfinite(y).any():
        return None
    source = ColumnDataSource({"x": np.asarray(x, dtype=np.float64), "y": y}, name=name)
    options = {"legend_label": label} if label is not None else {}
    return fig.line("x", "y", source=source, line_color=colour, line_dash=dash,
                    line_width=width, **options)


# Legend entries drawn inside the plot area; a figure with more (a phase's runs: 6 to 20 and
# more) gets its legend beside the plot, where it cannot cover the lines' ends, as the dashboards do.
LEGEND_INSIDE_UP_TO = 4
LEGEND_CHAR_PX = 6  # the width of one 8pt legend character, for sizing the legend's columns
LEGEND_ROW_PX = 20  # the height of one legend entry (Bokeh's glyph height; spacing 0)


def finish_legend(fig: figure, location: str = "top_right") -> None:
    """Small legend that hides a line when clicked (when the figure has one): inside the plot
    at ``location`` with up to :data:`LEGEND_INSIDE_UP_TO` entries; with more, beside the plot
    on the right, in as many columns as keep it within the figure's height, the figure widened
    by those columns so the plot area keeps its width."""
    if not fig.legend:
        return
    legend = fig.legend[0]
    legend.click_policy = "hide"
    legend.label_text_font_size = "8pt"
    legend.spacing = 0
    legend.padding = 4
    if len(legend.items) <= LEGEND_INSIDE_UP_TO:
        legend.location = location
        return
    fig.center.remove(legend)
    fig.add_layout(legend, "right")
    rows = max(1, (fig.height - 2 * legend.margin - 2 * legend.padding - 40) // LEGEND_ROW_PX)  # 40: title, axis
    legend.ncols = -(-len(legend.items) // rows)
    longest = max(len(str(getattr(item.label, "value", item.label) or "")) for item in legend.items)
    fig.width += legend.ncols * (LEGEND_CHAR_PX * longest + 40)  # per column: glyph, padding, label


def field_rows(truth: np.ndarray, rows: Sequence[tuple[int, np.ndarray, np.ndarray]],
               size: int = 170) -> figure:
    """One figure of ``truth`` u, reconstruction and error per row ``(step, recon, error)``,
    each field ``(R, R)`` on a unit square (grid point (iy, ix) is the cell [ix/R, (ix+1)/R) x
    [iy/R, (iy+1)/R)). Truth and reconstructions share the truth's colour range; each error is
    drawn divided by its own max|e| (a row's label gives max|e| and the MSE)."""
    gap = 0.12
    n = len(rows)
    fig = figure(width=int(3 * size + 2 * gap * size + 160), height=int(n * size * (1 + 2 * gap) + 60),
                 x_range=Range1d(-0.05, 3 + 2 * gap + 0.05), y_range=Range1d(-0.05, n * (1 + 2 * gap)),
                 tools="pan,wheel_zoom,reset,save", match_aspect=True, name="reconstructions")
    low, high = float(np.min(truth)), float(np.max(truth))
    fields = LinearColorMapper(palette=list(FIELD_PALETTE), low=low, high=high if high > low else low + 1)
    errors = LinearColorMapper(palette=list(ERROR_PALETTE), low=-1.0, high=1.0)
    for i, (step, recon, error) in enumerate(rows):
        y = (n - 1 - i) * (1 + 2 * gap)
        bound = float(np.abs(error).max()) or 1.0
        for j, (image, mapper) in enumerate(((truth, fields), (recon, fields),
                                             (error / bound, errors))):
            fig.image(image=[np.asarray(image, dtype=np.float32)], x=j * (1 + gap), y=y, dw=1, dh=1,
                      color_mapper=mapper)
        mse = float(np.mean(np.asarray(error, dtype=np.float64) ** 2))
        for j, text in enumerate(("truth u", f"g(f(u)), step {step}",
                                  f"error / {bound:.3g}, MSE {mse:.3g}")):
            fig.add_layout(Label(x=j * (1 + gap), y=y + 1.01, text=text, text_font_size="9pt"))
    fig.add_layout(ColorBar(color_mapper=fields, width=8, title="u"), "right")
    fig.add_layout(ColorBar(color_mapper=errors, width=8, title="e / max|e|"), "right")
    fig.axis.visible = False
    fig.grid.visible = False
    fig.toolbar.logo = None
    return fig
