"""The served dashboards in a real browser: Debian's chromium through pytest-playwright against
``python -m fae_lab serve`` in its own process (the command a user runs).

What is drawn is read from the page itself: the BokehJS document's data sources (one per drawn
run, named ``train:RUN`` / ``eval:RUN``) and the page's text. Expectations come from the run
folders on disk. Screenshots go to test-artifacts/lab/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from lab.cli import free_port
from tests.lab.conftest import tags_on_disk

pytestmark = pytest.mark.browser

# Models reachable from the document's roots: BokehJS keeps replaced models in
# ``all_models`` for a while, so that set would also list runs no longer drawn.
ON_PAGE = """
    const onPage = new Set();
    for (const root of Bokeh.documents[0].roots()) {
        for (const model of root.references()) {
            onPage.add(model);
        }
    }"""
DRAWN_RUNS = """() => {""" + ON_PAGE + """
    const names = new Set();
    for (const model of onPage) {
        const name = model.type === "GlyphRenderer" ? model.data_source.name : null;
        if (name && name.startsWith("eval:")) {
            names.add(name.slice(5));
        }
    }
    return [...names].sort();
}"""
EVAL_ROWS = """(run) => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "ColumnDataSource" && model.name === "eval:" + run) {
            return model.data.step.length;
        }
    }
    return -1;
}"""
DEEP_TEXT = """(element) => {
    const text = (node) => {
        if (node.nodeName === "STYLE" || node.nodeName === "SCRIPT") {
            return "";
        }
        let out = node.shadowRoot ? text(node.shadowRoot) : "";
        for (const child of node.childNodes) {
            out += child.nodeType === Node.TEXT_NODE ? child.textContent + " " : text(child);
        }
        return out;
    };
    return text(element);
}"""
SOURCE_ROWS = """(name) => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "ColumnDataSource" && model.name === name) {
            return Object.values(model.data)[0].length;
        }
    }
    return -1;
}"""
STEP_AXIS = """() => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "Figure" && model.title.text.startsWith("Test relative MSE")) {
            return [model.x_range.start, model.x_range.end];
        }
    }
    return null;
}"""
ERROR_TEXT = ("Traceback", "Exception", "Error:", "error:")


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def served(runs_dir, tmp_path_factory):
    """``python -m fae_lab serve`` over a copy of the fixture's runs, on 127.0.0.1."""
    runs = Path(shutil.copytree(runs_dir, tmp_path_factory.mktemp("served") / "runs"))
    yield from serve(runs)


def serve(runs: Path):
    """Serve ``runs`` until the generator is closed; yields (runs, url)."""
    port = free_port("127.0.0.1")
    log = open(runs.parent / "server.log", "w+")  # closed in the finally below
    server = subprocess.Popen(
        [sys.executable, "-m", "fae_lab", "serve", "--runs", str(runs), "--port", str(port),
         "--poll-interval", "0.5"], stdout=log, stderr=subprocess.STDOUT)

    def listening():
        assert server.poll() is None, f"server exited: {Path(log.name).read_text()}"
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 90, what="the server")
        yield runs, f"http://127.0.0.1:{port}/"
    finally:
        stop(server)
        log.close()


class PageWatch:
    """Console errors, uncaught exceptions and requests leaving this machine, of one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.external: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "ws://127",
                                                                "data:", "blob:"))
                else self.external.append(r.url))


def more_rows(page, count: int, run: str = "live") -> None:
    """Wait until ``count`` more evaluations of ``run`` are on the page, and drawn."""
    rows = page.evaluate(EVAL_ROWS, run)
    wait_for(lambda: page.evaluate(EVAL_ROWS, run) >= rows + count, 10,
             what=f"{count} more evaluations")
    next_render(page)


def next_render(page) -> None:
    """Return once the browser has drawn two frames after now (BokehJS renders new data and
    ranges on an animation frame)."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def open_app(page, url: str) -> PageWatch:
    watch = PageWatch(page)
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(url)
    page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0",
                           timeout=60_000)
    page.wait_for_function(f"() => ({DRAWN_RUNS})().length > 0", timeout=60_000)
    return watch


def text_of(page, css_class: str) -> str:
    """All text under the component with ``css_class``, through its shadow roots."""
    return page.locator(f".{css_class}").first.evaluate(DEEP_TEXT)


def click_tab(page, name: str) -> None:
    page.locator(".bk-tab", has_text=name).first.click()


# The data source a tab's server-side view fills once it is shown (tabs not listed are drawn
# from the page's first load).
TAB_SOURCE = {"Frequency bands": "band-map", "Per scale": "scale-bars", "Compare two runs": "compare-map"}


def show_tab(page, name: str, screenshot: Path | None = None) -> None:
    """Click a tab, wait until its plots hold data and the browser has drawn them, and
    optionally take a screenshot."""
    click_tab(page, name)
    if name in TAB_SOURCE:
        wait_for(lambda: page.evaluate(SOURCE_ROWS, TAB_SOURCE[name]) > 0, 20, what=f"the {name} tab's data")
    next_render(page)
    if screenshot is not None:
        page.screenshot(path=screenshot, full_page=True)


def expected_runs(runs: Path, keep=lambda tags: True) -> list[str]:
    """Runs on disk (a folder with config.json) whose tags pass ``keep``, as the app names them."""
    found = [p.parent for p in runs.rglob("config.json") if ".launches" not in p.parts]
    return sorted(p.relative_to(runs).as_posix() for p in found if keep(tags_on_disk(p)))


def assert_clean(page, watch: PageWatch) -> None:
    text = page.locator("body").evaluate(DEEP_TEXT)
    assert not [t for t in ERROR_TEXT if t in text], text
    assert page.locator(".alert-danger").count() == 0
    # Both at once, so that a failed load names its address (offline: no CDN, no web fonts),
    # each in full (pytest's comparison of two lists shortens long strings).
    assert (watch.errors, watch.external) == ([], []), "\n".join(
        ["console errors:", *watch.errors, "requests leaving this machine:", *watch.external])


def test_page_loads_with_every_run_and_no_errors(served, page, artifacts):
    runs, url = served
    watch = open_app(page, url)
    assert page.evaluate(DRAWN_RUNS) == expected_runs(runs)
    for tab in ("Runs", "Frequency bands", "Learned fraction", "Ladder", "Reconstructions",
                "Per scale", "Compare two runs", "NTK", "Launch", "Curves"):
        if tab == "Ladder":  # drawn when first shown: wait for its table's rows
            click_tab(page, tab)
            wait_for(lambda: all(name in text_of(page, "ladder-table") for name in expected_runs(runs)),
                     20, what="the ladder table's rows")
        show_tab(page, tab, artifacts / f"tab-{tab.lower()}.png" if tab in ("Runs", "Reconstructions", "Ladder") else None)
    next_render(page)
    page.screenshot(path=artifacts / "loaded.png", full_page=True)
    assert_clean(page, watch)


def test_live_rows_appear_without_a_reload(served, page, artifacts):
    runs, url = served
    watch = open_app(page, url)
    page.evaluate("() => { window.__not_reloaded = true; }")
    writer = subprocess.Popen(
        [sys.executable, "-m", "fae_lab.testing.fake_runs", str(runs / "live"), "--live",
         "--interval", "0.5", "--n-evals", "40", "--eval-every", "20", "--resolution", "16",
         "--n-scales", "3", "--n-bins", "8", "--loss-type", "fourier_weighted",
         "--decoder-type", "rff_output"])
    try:
        wait_for(lambda: page.evaluate(EVAL_ROWS, "live") >= 1, 30, what="the live run")
        # Each evaluation the writer declares valid reaches the page without a reload. (The
        # latency target, 2 s, is a timing: the poll interval of 0.5 s plus the server's update
        # time measured by benchmarks/bench_dashboard.py. Here a loaded CI machine gets slack.)
        def n_written() -> int:
            return json.loads((runs / "live" / "progress.json").read_text())["n_eval"]

        for _ in range(3):
            written = n_written()
            wait_for(lambda n=written: page.evaluate(EVAL_ROWS, "live") >= n, 15.0,
                     what=f"evaluation {written} on the page")
            wait_for(lambda n=written: n_written() > n, 15.0, what="the writer's next evaluation")
        # The step axis follows new rows until the user pans; then it keeps the user's view.
        before = page.evaluate(STEP_AXIS)
        more_rows(page, 2)
        # BokehJS recomputes the range on its next render, which a loaded machine may delay.
        followed = wait_for(lambda: (lambda axis: axis if axis[1] > before[1] else None)(
            page.evaluate(STEP_AXIS)), 10, what="the step axis to follow the new rows")
        # A drag to the left moves the view to later steps, so its start rises; following new
        # rows never raises it (the followed range starts 5 % of the last step below 0). That
        # tells the pan from a follow that lands meanwhile. A drag the page lost under load
        # (the start did not rise) is made again, three times at most.
        panned = None
        for _ in range(3):
            box = page.locator("canvas").first.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x - 120, y, steps=6)
            page.mouse.up()
            try:
                panned = wait_for(lambda: (lambda axis: axis if axis[0] > followed[0] else None)(
                    page.evaluate(STEP_AXIS)), 5, what="the pan to move the step axis")
                break
            except AssertionError:
                continue
        assert panned is not None, f"three drags left the step axis at {page.evaluate(STEP_AXIS)}"
        next_render(page)
        panned = page.evaluate(STEP_AXIS)
        assert panned[0] > followed[0], (panned, followed)
        more_rows(page, 3)
        assert page.evaluate(STEP_AXIS) == panned
        assert writer.wait(timeout=60) == 0
        wait_for(lambda: page.evaluate(EVAL_ROWS, "live") == 40, 15, what="all evaluations")
    finally:
        stop(writer)
    assert page.evaluate("() => window.__not_reloaded === true")
    assert "live" in text_of(page, "drawn-runs")
    show_tab(page, "Frequency bands")
    page.get_by_label("Run", exact=True).select_option("live")
    wait_for(lambda: page.evaluate(SOURCE_ROWS, "band-map") == 40 * 8, 20,
             what="the live run's step x |n| map (40 evaluations x 8 bins)")
    next_render(page)
    page.screenshot(path=artifacts / "live-bands.png", full_page=True)
    show_tab(page, "Curves", artifacts / "live-curves.png")
    assert_clean(page, watch)


def test_tag_toggles_change_which_runs_are_drawn(served, page, artifacts):
    runs, url = served
    watch = open_app(page, url)
    assert page.evaluate(DRAWN_RUNS) == expected_runs(runs)
    page.locator("button", has_text="h1").first.click()
    no_h1 = expected_runs(runs, lambda t: t["loss_type"] != "h1")
    wait_for(lambda: page.evaluate(DRAWN_RUNS) == no_h1, 10, what=f"runs {no_h1}")
    page.locator("button", has_text="rff_output").first.click()
    neither = expected_runs(runs, lambda t: t["loss_type"] != "h1"
                            and t["decoder_type"] != "rff_output")
    wait_for(lambda: page.evaluate(DRAWN_RUNS) == neither, 10, what=f"runs {neither}")
    assert neither and set(neither) < set(no_h1)
    summary = text_of(page, "drawn-runs")
    assert f"Drawing {len(neither)} of {len(expected_runs(runs))} runs" in summary
    page.screenshot(path=artifacts / "toggled.png", full_page=True)
    page.locator("button", has_text="h1").first.click()
    page.locator("button", has_text="rff_output").first.click()
    wait_for(lambda: page.evaluate(DRAWN_RUNS) == expected_runs(runs), 10, what="every run")
    assert_clean(page, watch)


def launched_pid(page, name: str, timeout: float = 60) -> int:
    """The process of ``name`` once the launch table on the page lists it (the table reaches
    the browser after the feedback line: polled, as a loaded machine may take seconds)."""
    def pid() -> int | None:
        text = text_of(page, "launch-table")
        words = text.split(name, 1)[1].split() if name in text else []
        return int(words[0]) if words and words[0].isdigit() else None

    return wait_for(pid, timeout, interval=0.5, what=f"{name} in the launch table")


def test_a_run_launched_from_the_form_appears(served, page, artifacts):
    runs, url = served
    watch = open_app(page, url)
    click_tab(page, "Launch")
    form = {"Run name": "launched-h1", "Samples": "8", "Resolution R": "16", "Scales T": "3",
            "Max steps": "20", "Evaluate every": "10", "Batch size": "0"}
    for label, value in form.items():
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
    page.get_by_label("Loss type", exact=True).select_option("h1")
    page.locator("button", has_text="Launch training run").click()
    wait_for(lambda: "--batch-size" in text_of(page, "launch-feedback"), 60, what="the refusal")
    assert not (runs / "launched-h1").exists()
    field = page.get_by_label("Batch size", exact=True)
    field.fill("4")
    field.press("Enter")
    page.locator("button", has_text="Launch training run").click()
    wait_for(lambda: "Launched" in text_of(page, "launch-feedback"), 60, what="the launch")
    pid = launched_pid(page, "launched-h1")
    page.screenshot(path=artifacts / "launch-form.png", full_page=True)
    try:
        click_tab(page, "Curves")
        wait_for(lambda: "launched-h1" in page.evaluate(DRAWN_RUNS), 150, interval=1,
                 what="the launched run")
        # Its evaluations at steps 0, 10, 20 arrive live.
        wait_for(lambda: page.evaluate(EVAL_ROWS, "launched-h1") == 3, 150, interval=1,
                 what="the launched run's evaluations")
    finally:
        try:
            os.kill(pid, signal.SIGTERM)  # the trainer this test started, if still running
        except ProcessLookupError:
            pass
    assert tags_on_disk(runs / "launched-h1")["loss_type"] == "h1"
    next_render(page)
    page.screenshot(path=artifacts / "launched-run.png", full_page=True)
    assert_clean(page, watch)


@pytest.fixture(scope="module")
def served_with_a_bad_run(runs_dir, tmp_path_factory):
    """The fixture's runs, with h1's progress.json counting three evaluations more than its
    store has rows for."""
    runs = Path(shutil.copytree(runs_dir, tmp_path_factory.mktemp("bad") / "runs"))
    progress = json.loads((runs / "h1" / "progress.json").read_text())
    with xr.open_zarr(runs / "h1" / "metrics.zarr") as ds:
        rows = ds.sizes["eval_step"]
    progress["n_eval"] = rows + 3
    (runs / "h1" / "progress.json").write_text(json.dumps(progress))
    for served_runs, url in serve(runs):
        yield served_runs, url, rows


def test_a_bad_run_is_listed_as_unreadable_and_the_others_draw(served_with_a_bad_run, page,
                                                                artifacts):
    runs, url, rows = served_with_a_bad_run
    page.set_default_navigation_timeout(120_000)  # the first render of a loaded 2-core host
    watch = open_app(page, url)
    good = [name for name in expected_runs(runs) if name != "h1"]
    for name in good:
        n_eval = json.loads((runs / name / "progress.json").read_text())["n_eval"]
        wait_for(lambda name=name, n_eval=n_eval: page.evaluate(EVAL_ROWS, name) == n_eval, 20,
                 what=f"{name}'s evaluations")
    assert page.evaluate(EVAL_ROWS, "h1") <= 0  # nothing of it is drawn
    note = text_of(page, "unreadable-runs")
    assert f"h1: progress.json: n_eval = {rows + 3} is outside 0..{rows}" in note, note
    show_tab(page, "Runs")
    table = wait_for(lambda: (text := text_of(page, "runs-table")) and "unreadable" in text and text,
                     20, what="the runs table")
    assert f"n_eval = {rows + 3} is outside" in table, table
    next_render(page)
    page.screenshot(path=artifacts / "unreadable-run.png", full_page=True)
    for tab in ("Frequency bands", "Per scale", "Compare two runs", "Curves"):
        show_tab(page, tab)
    assert_clean(page, watch)
