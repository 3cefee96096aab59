"""Tabs not shown build no Bokeh figures with the page (server side, no browser): the
Frequency bands, Compare and Reconstructions figures are built when their tab is first shown,
then drawn from the sources that were kept up to date meanwhile, and follow new rows."""

from __future__ import annotations

import pytest
from bokeh.document import Document

from lab.app import LabApp
from tests.lab.conftest import live_run, on_disk


def show(app: LabApp, tab: str) -> None:
    app.tabs.active = list(app.views).index(tab)


@pytest.mark.slow
def test_hidden_tabs_build_their_figures_when_first_shown(fresh_runs):
    writer = live_run(fresh_runs)
    writer.advance(3)
    app = LabApp(fresh_runs)
    bands, compare = app.views["Frequency bands"], app.views["Compare two runs"]
    recon = app.views["Reconstructions"]
    doc = Document()
    app.template.server_doc(doc)
    assert bands._built is None and compare._built is None
    assert compare.images._figures is None and recon.images._figures is None
    assert doc.select_one({"name": "band-map"}) is None  # not on the page yet
    show(app, "Frequency bands")
    bands.run = "live"
    assert bands.spectrum_figure.document is doc and bands.map_figure.document is doc
    n_bins = on_disk(fresh_runs / "live", "eval_spectral_mse").shape[-1]
    cells = doc.select_one({"name": "band-map"})
    assert cells is bands.cells and len(cells.data["step"]) == 3 * n_bins
    writer.advance(2)  # new rows reach a figure built late
    app.poll()
    assert len(cells.data["step"]) == 5 * n_bins
    show(app, "Compare two runs")
    assert compare.ratio_figure.document is doc
    assert all(fig.document is doc for fig in compare.images.figures)
    show(app, "Reconstructions")
    assert all(fig.document is doc for fig in recon.images.figures)
    assert recon.images.figures[0].frame_width == recon.size
