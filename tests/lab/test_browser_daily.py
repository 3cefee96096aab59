"""Daily use in a real browser (Debian's chromium): readable log axes, run colours that survive a
reload, a Runs table that follows a run failing while its tab is hidden, no allowHTML warning,
and a server log without tracebacks after the browser goes. One served directory, two page
loads (browser tests are expensive on a small machine)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.lab.conftest import live_run
from tests.lab.test_browser import (
    ON_PAGE,
    assert_clean,
    click_tab,
    open_app,
    serve,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.browser

# The tick labels BokehJS draws on a figure's y axis (its view's ticks, through the axis's own
# formatter), and the data range they label.
Y_TICK_LABELS = """(title) => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "Figure" && model.title.text.startsWith(title)) {
            const axis = model.left[0];
            const view = Bokeh.index.find_one(axis);
            if (view == null) {
                return null;
            }
            const ticks = view.tick_coords.major[1];
            return {labels: axis.formatter.doFormat(ticks, {loc: 0}), title: axis.axis_label,
                    range: [model.y_range.start, model.y_range.end]};
        }
    }
    return null;
}"""
LINE_STYLES = """(title) => {""" + ON_PAGE + """
    const out = {};
    for (const model of onPage) {
        if (model.type === "Figure" && model.title.text.startsWith(title)) {
            for (const r of model.renderers) {
                out[r.name] = JSON.stringify([r.glyph.line_color, r.glyph.line_dash]);
            }
        }
    }
    return out;
}"""
Y_TITLES = """() => {""" + ON_PAGE + """
    const out = {};
    for (const model of onPage) {
        if (model.type === "Figure" && model.left.length) {
            out[model.title.text] = model.left[0].axis_label;
        }
    }
    return out;
}"""


@pytest.fixture(scope="module")
def served_daily(runs_dir, tmp_path_factory):
    runs = Path(shutil.copytree(runs_dir, tmp_path_factory.mktemp("daily") / "runs"))
    writer = live_run(runs, "doomed")
    writer.advance(3)
    for served_runs, url in serve(runs):
        yield served_runs, url, writer


def test_daily_use_in_the_browser(served_daily, page, artifacts):
    runs, url, writer = served_daily
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    watch = open_app(page, url)
    # Log axes: three or more labels inside the data, and every curve has a y-axis title.
    ticks = wait_for(lambda: (t := page.evaluate(Y_TICK_LABELS, "Training loss")) and t["labels"]
                     and t, 20, what="the training loss axis")
    assert len(ticks["labels"]) >= 3, ticks
    assert ticks["title"] == "loss"
    assert all(page.evaluate(Y_TITLES).values())
    # Every run its own (colour, dash), also the two l2 runs.
    styles = page.evaluate(LINE_STYLES, "Test relative MSE")
    assert {"baseline", "rff", "doomed"} <= set(styles)
    assert len(set(styles.values())) == len(styles), styles
    # The run fails while the Runs tab is hidden; the tab, shown later, says so.
    writer.finish("failed", "killed by the test")
    assert json.loads((runs / "doomed" / "progress.json").read_text())["status"] == "failed"
    page.wait_for_timeout(1500)  # a few polls while hidden
    click_tab(page, "Runs")
    wait_for(lambda: "killed by the test" in text_of(page, "runs-table"), 10,
             what="the failed status in the runs table")
    row = text_of(page, "runs-table").split("doomed")[1]
    assert "failed" in row.split("killed by the test")[0]
    page.screenshot(path=artifacts / "daily-runs.png", full_page=True)
    assert_clean(page, watch)
    # The same colours after a reload.
    page.reload()
    page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0",
                           timeout=60_000)
    again = wait_for(lambda: (s := page.evaluate(LINE_STYLES, "Test relative MSE")) and
                     len(s) == len(styles) and s, 30, what="the curves after a reload")
    assert again == styles
    assert not [m for m in messages if "allowHTML" in m], messages
    page.close()
    time.sleep(3)  # the server notices the closed socket
    log = (runs.parent / "server.log").read_text()
    assert "Traceback" not in log and "Task exception" not in log, log
