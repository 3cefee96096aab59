"""The Curves tab with more drawn runs than ``MERGE_ABOVE`` in a real browser (Debian's
chromium): each panel's one MultiLine is drawn by BokehJS with finite data ranges, its rows are
the runs, new rows patched into one run reach the page, and nothing fails on the page."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lab.views.curves import MERGE_ABOVE
from tests.lab.conftest import RUNS, live_run, on_disk
from tests.lab.test_browser import ON_PAGE, PageWatch, assert_clean, serve, wait_for

pytestmark = pytest.mark.browser

# The merged panel's source of one Curves panel: its runs and each row's y values.
PANEL_ROWS = """(name) => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "ColumnDataSource" && model.name === name) {
            return {runs: [...model.data.run], ys: model.data.ys.map((y) => Array.from(y))};
        }
    }
    return null;
}"""
# The y range BokehJS computed for a panel, and whether its MultiLine has a view on the page.
PANEL_DRAWN = """(title) => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "Figure" && model.title.text.startsWith(title)) {
            const renderer = model.renderers[0];
            return {range: [model.y_range.start, model.y_range.end],
                    glyph: renderer.glyph.type, n: model.renderers.length,
                    drawn: Bokeh.index.find_one(renderer) != null};
        }
    }
    return null;
}"""


@pytest.fixture(scope="module")
def many_runs(runs_dir, tmp_path_factory):
    """The fixture's finished runs copied under enough names to pass MERGE_ABOVE, and a live
    run with two evaluations."""
    root = tmp_path_factory.mktemp("many") / "runs"
    sources = [name for name, *_ in RUNS if "/" not in name]
    for i in range(MERGE_ABOVE + 1):
        name = sources[i % len(sources)]
        target = root / f"copy{i:02d}_{name}"
        shutil.copytree(runs_dir / name, target)
        config = json.loads((target / "config.json").read_text())
        config["run_name"] = target.name
        (target / "config.json").write_text(json.dumps(config))
    writer = live_run(root)
    writer.advance(2)
    for served_runs, url in serve(root):
        yield served_runs, url, writer


def test_merged_curves_are_drawn_and_patched_in_the_browser(many_runs, page, artifacts):
    runs, url, writer = many_runs
    watch = PageWatch(page)
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(url)
    page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0",
                           timeout=60_000)
    names = sorted(p.parent.name for p in runs.glob("*/config.json"))
    rows = wait_for(lambda: page.evaluate(PANEL_ROWS, "panel:eval_rel_mse"), 60,
                    what="the merged relative-MSE panel")
    assert sorted(rows["runs"]) == names
    for run, ys in zip(rows["runs"], rows["ys"], strict=True):
        np.testing.assert_allclose(np.array(ys, dtype=float),
                                   on_disk(runs / run, "eval_rel_mse"), rtol=1e-12)
    panel = wait_for(lambda: (lambda p: p if p and p["drawn"] else None)(
        page.evaluate(PANEL_DRAWN, "Test relative MSE")), 30, what="the panel drawn")
    assert panel["glyph"] == "MultiLine" and panel["n"] == 1
    values = np.concatenate([on_disk(runs / run, "eval_rel_mse") for run in names])
    low, high = panel["range"]
    assert np.isfinite([low, high]).all() and low <= np.nanmin(values) <= np.nanmax(values) <= high
    writer.advance(2)  # two evaluations more: patched into the live run's row of each panel
    expected = on_disk(runs / "live", "eval_rel_mse")
    assert len(expected) == 4

    def live_row():
        data = page.evaluate(PANEL_ROWS, "panel:eval_rel_mse")
        ys = data["ys"][data["runs"].index("live")]
        return ys if len(ys) == 4 else None

    np.testing.assert_allclose(np.array(wait_for(live_row, 20, what="the live run's new rows"),
                                        dtype=float), expected, rtol=1e-12)
    page.screenshot(path=artifacts / "many-runs-curves.png", full_page=True)
    assert_clean(page, watch)
