"""A row of fields u[y, x] over the periodic unit square, drawn as Bokeh images, and the one
truth / reconstruction / error row that the Reconstructions and Compare views both show.

Grid point (iy, ix) is the cell [ix/R, (ix+1)/R) x [iy/R, (iy+1)/R), so every resolution spans
[0, 1]². The images share their axes (zoom one, zoom all) and are updated in place: new data and
colour range, same figures, so the zoom is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import panel as pn
from bokeh.models import BasicTicker, ColorBar, ColumnDataSource, LinearColorMapper, Range1d
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from lab.transforms import colour_limits, reconstruction_error

FIELD_PALETTE = Viridis256
ERROR_PALETTE = RdBu11  # blue below zero, red above


class FieldImages:
    """``len(titles)`` images side by side; ``palettes[i]`` colours image i.

    The sources and colour mappers exist from the start (updates go to them); the figures are
    built on first use (:attr:`figures`, or the row rendered on screen), so a view in a tab
    never shown costs no Bokeh figures.
    """

    def __init__(self, titles: Sequence[str], palettes: Sequence[Sequence[str]],
                 size: int = 170, name: str = "field"):
        self.size = size
        self._titles = list(titles)
        self._figures: list[figure] | None = None
        self.sources: list[ColumnDataSource] = [
            ColumnDataSource({"image": [np.zeros((2, 2))]}, name=f"{name}-{i}")
            for i in range(len(self._titles))]
        self.mappers: list[LinearColorMapper] = [
            LinearColorMapper(palette=palette, low=0, high=1)
            for _, palette in zip(self._titles, palettes, strict=True)]

    @property
    def figures(self) -> list[figure]:
        """The images' figures (built on first access)."""
        if self._figures is None:
            self._figures = self._build()
        return self._figures

    def built_figures(self) -> list[figure]:
        """The figures if built, else none (nothing is built)."""
        return self._figures or []

    def _build(self) -> list[figure]:
        x_range, y_range = Range1d(0, 1, bounds=(0, 1)), Range1d(0, 1, bounds=(0, 1))
        figures = []
        for title, source, mapper in zip(self._titles, self.sources, self.mappers, strict=True):
            fig = figure(title=title, x_range=x_range, y_range=y_range, frame_width=self.size,
                         frame_height=self.size, tools="pan,wheel_zoom,box_zoom,reset,save,hover",
                         tooltips=[("x", "$x{0.000}"), ("y", "$y{0.000}"),
                                   ("value", "@image{0.000e}")])
            fig.image(image="image", x=0, y=0, dw=1, dh=1, source=source, color_mapper=mapper)
            # An explicit ticker: labels at any range (a degenerate range had none).
            fig.add_layout(ColorBar(color_mapper=mapper, width=8, ticker=BasicTicker(
                desired_num_ticks=5), major_label_text_font_size="8pt"), "right")
            fig.toolbar.logo = None
            figures.append(fig)
        return figures

    def update(self, fields: Sequence[np.ndarray], limits: Sequence[tuple[float, float]],
               titles: Sequence[str] | None = None) -> None:
        """Show ``fields[i]`` (``(R, R)``, row iy at height iy/R) with colour range
        ``limits[i]``."""
        for i, (field, (low, high)) in enumerate(zip(fields, limits, strict=True)):
            self.sources[i].data = {"image": [np.asarray(field, dtype=np.float64)]}
            self.mappers[i].update(low=low, high=high)
        if titles is not None:
            self._titles = list(titles)
            for fig, title in zip(self._figures or [], titles, strict=False):
                fig.title.text = title

    def _row(self) -> pn.Row:
        return pn.Row(*(pn.pane.Bokeh(fig) for fig in self.figures))

    def __panel__(self):
        # Evaluated when first rendered (a hidden tab is not rendered: Tabs(dynamic=True)).
        return pn.param.ParamFunction(pn.bind(self._row), lazy=True)


class ReconstructionRow(FieldImages):
    """Truth u, one reconstruction g(f(u)) per ``labels`` entry, then each error e = g(f(u)) − u.

    Truth and reconstructions share the truth's colour range (:func:`lab.transforms.colour_limits`:
    widened around a constant truth, which then paints mid-map); the errors share one symmetric
    diverging range, ±max|e| over all of them, so their sizes compare directly. With one label
    (the Reconstructions view) the row is truth, reconstruction, error; with two (Compare) it
    is truth, reconstruction A, B, error A, B.
    """

    def __init__(self, labels: Sequence[str], size: int = 170, name: str = "field"):
        self.titles = ("truth u", *(f"reconstruction {label}" for label in labels),
                       *(f"error {label}" for label in labels))
        n = len(labels)
        super().__init__(self.titles, [FIELD_PALETTE] * (n + 1) + [ERROR_PALETTE] * n,
                         size=size, name=name)

    def show(self, truth: np.ndarray, recons: Sequence[np.ndarray],
             truths: Sequence[np.ndarray] | None = None,
             titles: Sequence[str] | None = None) -> list[np.ndarray]:
        """Draw ``truth`` ``(R, R)`` and ``recons``; error i is against ``truths[i]`` (default:
        ``truth``). Returns the errors, float64."""
        truths = [truth] * len(recons) if truths is None else truths
        errors = [reconstruction_error(t, r) for t, r in zip(truths, recons, strict=True)]
        low, high = colour_limits(truth)  # a constant truth paints mid-map
        bound = float(max(np.abs(e).max() for e in errors)) or 1.0
        n = len(recons)
        self.update((truth, *recons, *errors), [(low, high)] * (n + 1) + [(-bound, bound)] * n,
                    titles or self.titles)
        return errors

    def blank(self) -> None:
        """Nothing to show yet: zero fields, unit ranges, the default titles."""
        self.update([np.zeros((2, 2))] * len(self.titles), [(0.0, 1.0)] * len(self.titles),
                    self.titles)
