"""A report file in Debian's chromium with every network request blocked: it draws, logs no
error, runs no script from a run's name, and its step selectors swap the plots' data.

What is drawn is read back from the BokehJS document in the page (models named in
lab.report); expected spectra are read from the run's metrics.zarr with plain xarray.
"""

from __future__ import annotations

import numpy as np
import pytest

from lab.report import write_report
from tests.lab.conftest import on_disk
from tests.lab.report_pages import HOSTILE, write_report_runs
from tests.lab.test_browser import next_render, open_app, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL_DATA = """([name, column]) => {
    const model = Bokeh.documents[0].get_model_by_name(name);
    return model === null ? null : Array.from(model.data[column]);
}"""
MODEL_TITLE = """(name) => Bokeh.documents[0].get_model_by_name(name).title"""
CANVASES = """() => {
    let n = 0;
    const visit = (root) => {
        for (const el of root.querySelectorAll("*")) {
            if (el.tagName === "CANVAS" && el.width > 0 && el.height > 0) n += 1;
            if (el.shadowRoot) visit(el.shadowRoot);
        }
    };
    visit(document);
    return n;
}"""
INJECTED = """() => {
    const found = [];
    const visit = (root) => {
        for (const el of root.querySelectorAll("img, script[src]")) found.push(el.outerHTML);
        for (const el of root.querySelectorAll("*")) if (el.shadowRoot) visit(el.shadowRoot);
    };
    visit(document);
    return found;
}"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The runs, a run's report and the folder's comparison report."""
    root = tmp_path_factory.mktemp("report-browser")
    runs = write_report_runs(root / "runs")
    return runs, write_report(runs / "h1_s0", root / "run.html"), write_report(runs, root / "all.html")


class OfflinePage:
    """``page`` on ``file``: every request but the file itself is aborted and recorded, as are
    console errors, uncaught exceptions and dialogs."""

    def __init__(self, page, file):
        self.url = file.as_uri()
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.route("**/*", self._route)
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(self.url)
        page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0",
                               timeout=60_000)
        page.wait_for_function(f"() => ({CANVASES})() > 0", timeout=60_000)
        next_render(page)

    def _route(self, route):
        if route.request.url == self.url:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def assert_clean(self, page):
        assert self.blocked == [] and self.errors == [] and self.dialogs == []
        assert page.evaluate("() => window.__xss") is None
        assert page.evaluate(INJECTED) == []


def spectrum(page, column="error") -> np.ndarray:
    return np.array(page.evaluate(MODEL_DATA, ["band-spectrum", column]), dtype=np.float64)


def test_a_run_report_draws_offline_and_its_step_selector_swaps_the_data(reports, page, artifacts):
    runs, run_html, _ = reports
    view = OfflinePage(page, run_html)
    assert page.evaluate(CANVASES) >= 5  # curves, bands, learned fraction, map, reconstructions
    error = on_disk(runs / "h1_s0", "eval_spectral_mse")  # (n_eval, n_bins), valid rows
    scale_error = on_disk(runs / "h1_s0", "eval_scale_spectral_mse")  # (n_eval, T, n_bins)
    n_eval = error.shape[0]
    np.testing.assert_allclose(spectrum(page), error[-1], rtol=1e-6)  # the newest first
    # The user drags nothing: the slider's handle takes the keyboard like a user's.
    handle = page.locator(".noUi-handle").first
    handle.focus()
    handle.press("Home")
    next_render(page)
    np.testing.assert_allclose(spectrum(page), error[0], rtol=1e-6)
    assert page.evaluate(MODEL_TITLE, "band-step").endswith("step 0")
    handle.press("ArrowRight")
    next_render(page)
    np.testing.assert_allclose(spectrum(page), error[1], rtol=1e-6)
    # The scale menu: scale 0 (option 1, after the training-scale mean) at evaluation 1.
    page.locator("select").first.select_option(index=1)
    next_render(page)
    np.testing.assert_allclose(spectrum(page), scale_error[1, 0], rtol=1e-6)
    handle.press("End")
    next_render(page)
    np.testing.assert_allclose(spectrum(page), scale_error[n_eval - 1, 0], rtol=1e-6)
    page.screenshot(path=artifacts / "report-run.png", full_page=True)
    view.assert_clean(page)


def test_the_comparison_draws_offline_shows_names_as_text_and_its_slider_moves(reports, page,
                                                                               artifacts):
    runs, _, all_html = reports
    view = OfflinePage(page, all_html)
    assert page.evaluate(CANVASES) >= 2
    text = page.locator("table.ranking").inner_text()
    assert HOSTILE in text  # the name as its literal text
    name = f"compare-fraction:{HOSTILE}"
    newest = page.evaluate(MODEL_DATA, [name, "learned_fraction"])
    handle = page.locator(".noUi-handle").first
    handle.focus()
    handle.press("Home")  # step 0: each run's first evaluation
    next_render(page)
    first = page.evaluate(MODEL_DATA, [name, "learned_fraction"])
    error = on_disk(runs / HOSTILE, "eval_spectral_mse")
    target = on_disk(runs / HOSTILE, "eval_spectral_target")
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = 1 - error / target  # the learned fraction, by hand
    np.testing.assert_allclose(np.array(first, dtype=np.float64), expected[0], rtol=1e-6)
    np.testing.assert_allclose(np.array(newest, dtype=np.float64), expected[-1], rtol=1e-6)
    page.screenshot(path=artifacts / "report-comparison.png", full_page=True)
    view.assert_clean(page)


@pytest.fixture(scope="module")
def served_report_runs(reports):
    runs, _, _ = reports
    yield from serve(runs)


def test_the_dashboards_button_downloads_the_report(served_report_runs, page, tmp_path):
    _, url = served_report_runs
    watch = open_app(page, url)
    with page.expect_download(timeout=120_000) as download:
        page.locator(".report-download").locator("button, a").first.click()
    saved = tmp_path / "downloaded.html"
    download.value.save_as(saved)
    html = saved.read_text()
    assert download.value.suggested_filename == "fae-lab-report.html"
    assert html.startswith("<!DOCTYPE html>") and "<h2>Ranking</h2>" in html
    assert "<script src=" not in html  # the server imports Panel: none of its bundles linked
    for run in ("baseline", "h1_s0", "h1_s1", "ladder_auto_decoder"):
        assert f"compare-loss:{run}" in html
    assert watch.errors == [] and watch.external == []
