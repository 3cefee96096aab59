"""Hostile run names, tag values, messages and form input in a real browser: shown as text, never
run as HTML.

Runs are written by the real store writer into folders named like markup (an ``<img onerror>``,
a ``<script>`` spread over two folders, quotes, ``<b>`` and an entity, a right-to-left override,
an escape and a tab). A run's progress message and another's tag value are markup too. The test
serves them with ``python -m fae_lab serve``, visits every tab in Debian's chromium, types markup
into the launch form, and checks that no script ran (every payload sets ``window.__xss``), that
no element came from the names, and that each name is on the page as its literal text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fae_lab.testing.fake_runs import SyntheticRunWriter, write_synthetic_run
from tests.lab.test_browser import (
    DEEP_TEXT,
    DRAWN_RUNS,
    click_tab,
    next_render,
    open_app,
    serve,
    show_tab,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.browser

# Run names (folder paths under --runs; "/" separates folders). Every script payload sets
# window.__xss, which the test reads back.
IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"  # two folders: "<script>window.__xss=2<" / "script>"
QUOTES = "\"quote'"
BOLD = "<b>bold</b>&amp;"
RTL = "abc\u202edef"
CONTROL = "ctl\x1bchar\ttab"
NAMES = (IMG, SCRIPT, QUOTES, BOLD, RTL, CONTROL)
MESSAGE = '<img src=x onerror="window.__xss=3"> failed <b>bold</b>'  # the failed run's message
TAG = '<img src=x onerror="window.__xss=4">'  # a pooling tag value the CLI does not know
TYPED = '<img src=x onerror="window.__xss=5">'  # typed into the launch form
TAB_NAMES = ("Runs", "Frequency bands", "Reconstructions", "Per scale", "Compare two runs",
             "Launch", "Curves", "Learned fraction", "Ladder", "NTK", "Settings", "Spectra of runs")

INJECTED = """() => {
    // Elements the payloads would create, through every shadow root.
    const found = [];
    const visit = (root) => {
        for (const el of root.querySelectorAll("*")) {
            const html = el.tagName === "IMG" && (el.getAttribute("src") === "x"
                                                   || el.hasAttribute("onerror"));
            const bold = el.tagName === "B" && el.textContent.includes("bold");
            const script = el.tagName === "SCRIPT" && el.textContent.includes("__xss");
            if (html || bold || script) found.push(el.outerHTML);
            if (el.shadowRoot) visit(el.shadowRoot);
        }
    };
    visit(document);
    return found;
}"""
OPTION_TEXTS = """() => {
    const texts = [];
    const visit = (root) => {
        for (const el of root.querySelectorAll("*")) {
            if (el.tagName === "OPTION") texts.push(el.textContent);
            if (el.shadowRoot) visit(el.shadowRoot);
        }
    };
    visit(document);
    return texts;
}"""


def write_hostile_runs(root: Path) -> Path:
    """One small finished run per hostile name; the first failed with a markup message, the
    second with a markup tag value written into its config.json."""
    options = dict(n_evals=4, eval_every=20, log_every=5, resolution=16, n_scales=3,
                   n_samples=2, n_bins=8)
    for i, name in enumerate(NAMES):
        if i == 0:
            writer = SyntheticRunWriter(root / name, seed=i, **options)
            writer.advance(2)
            writer.finish("failed", MESSAGE)
            continue
        write_synthetic_run(root / name, loss_type=("l2", "h1")[i % 2], seed=i, **options)
    config_path = root / NAMES[1] / "config.json"
    config = json.loads(config_path.read_text())
    config["tags"][3] = TAG
    config_path.write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """``python -m fae_lab serve`` over the hostile runs, on 127.0.0.1."""
    runs = write_hostile_runs(tmp_path_factory.mktemp("hostile") / "runs")
    found = sorted(p.parent.relative_to(runs).as_posix() for p in runs.rglob("config.json"))
    assert found == sorted(NAMES)  # the file system kept every name
    yield from serve(runs)


def assert_nothing_ran(page) -> None:
    assert page.evaluate("() => window.__xss") is None
    assert page.evaluate(INJECTED) == []


def test_hostile_names_are_text_in_every_tab(hostile, page, artifacts):
    _, url = hostile
    watch = open_app(page, url)
    wait_for(lambda: page.evaluate(DRAWN_RUNS) == sorted(NAMES), 30, what="every hostile run")
    assert_nothing_ran(page)
    summary = text_of(page, "drawn-runs")
    assert f"Drawing {len(NAMES)} of {len(NAMES)} runs" in summary
    for name in NAMES:
        assert name in summary, (name, summary)
    assert TAG in page.locator("body").evaluate(DEEP_TEXT)  # its toggle button's label
    options = {}
    for tab in TAB_NAMES:
        show_tab(page, tab)
        assert_nothing_ran(page)
        options[tab] = page.evaluate(OPTION_TEXTS)  # Tabs are dynamic: this tab's and the sidebar's
        if tab == "Runs":
            table = wait_for(lambda: (lambda shown: shown if MESSAGE in shown else None)(
                text_of(page, "runs-table")), 10, what="the runs table's rows")
            for text in (*NAMES, MESSAGE, TAG):
                assert text in table, (text, table)
        if tab == "Ladder":  # its table names every run, as text
            wait_for(lambda: all(name in text_of(page, "ladder-table") for name in NAMES), 20,
                     what="the ladder table's rows")
        if tab == "NTK":  # no run has an ntk.zarr: the list of those without one names each, as text
            wait_for(lambda: all(name in text_of(page, "ntk-table") for name in NAMES), 20,
                     what="the NTK tab's list of runs")
    # The run pickers list the names as their text: the sidebar's in every tab, one more in
    # Frequency bands and Reconstructions, two (A and B) in Compare.
    for tab, pickers in (("Runs", 1), ("Frequency bands", 2), ("Reconstructions", 2),
                         ("Compare two runs", 3)):
        for name in NAMES:
            assert options[tab].count(name) == pickers, (tab, name, options[tab])
    # Choosing a hostile run draws it in the single-run views.
    show_tab(page, "Reconstructions")
    page.get_by_label("Run", exact=True).select_option(IMG)
    show_tab(page, "Frequency bands")
    page.get_by_label("Run", exact=True).select_option(BOLD)
    next_render(page)
    page.screenshot(path=artifacts / "hostile-names.png", full_page=True)
    assert_nothing_ran(page)
    assert watch.errors == [] and watch.external == []


def test_markup_typed_into_the_launch_form_is_text(hostile, page, artifacts):
    runs, url = hostile
    watch = open_app(page, url)
    click_tab(page, "Launch")
    field = page.get_by_label("Run name", exact=True)
    field.fill(TYPED)
    field.press("Enter")
    page.locator("button", has_text="Launch training run").click()
    wait_for(lambda: f"run name '{TYPED}'" in text_of(page, "launch-feedback"), 30,
             what="the run name's refusal")
    assert_nothing_ran(page)
    # Data paths outside the data directory (the runs folder) get the one refusal, as text;
    # a refused run name in between changes the message, so each click's answer is seen.
    page.locator(".bk-btn", has_text="data file").first.click()
    path = page.get_by_label("Data file (.npz)", exact=True)
    for typed in ("/etc/passwd", f"../{TYPED}", "missing.npz"):
        field.fill("ok-name")
        field.press("Enter")
        path.fill(typed)
        path.press("Enter")
        page.locator("button", has_text="Launch training run").click()
        wait_for(lambda: "not an allowed data file" in text_of(page, "launch-feedback"), 30,
                 what="the data file's refusal")
        feedback = text_of(page, "launch-feedback")
        assert f"(files under {runs} only)" in feedback and "passwd" not in feedback
        assert_nothing_ran(page)
        field.fill(TYPED)
        field.press("Enter")
        page.locator("button", has_text="Launch training run").click()
        wait_for(lambda: f"run name '{TYPED}'" in text_of(page, "launch-feedback"), 30,
                 what="the run name's refusal")
    assert not (runs / "ok-name").exists() and not (runs / ".launches").exists()
    page.screenshot(path=artifacts / "hostile-launch.png", full_page=True)
    assert_nothing_ran(page)
    assert watch.errors == [] and watch.external == []
