"""Issue 14's "must show" items not shown by the other browser tests, in Debian's chromium:
the default samples are not blank, one legend entry per run when colour is by run, and a visit
that opens every tab, launches a Phase C variant from the form and watches it finish, with no
page error and no console error. (Log-axis tick labels, the Runs table following a failed run
and a disconnect without a traceback: tests/lab/test_browser_daily.py.)"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from fae_lab.train.cpu_sizing import gpu_visible
from tests.lab.conftest import tags_on_disk
from tests.lab.test_browser import (
    DRAWN_RUNS,
    EVAL_ROWS,
    ON_PAGE,
    assert_clean,
    click_tab,
    expected_runs,
    launched_pid,
    next_render,
    open_app,
    serve,
    show_tab,
    text_of,
    wait_for,
)
from tests.lab.test_daily_use import high_power_by_hand

pytestmark = pytest.mark.browser

# The first image of a data source (a ReconstructionRow's panel), flattened.
IMAGE = """(name) => {""" + ON_PAGE + """
    for (const model of onPage) {
        if (model.type === "ColumnDataSource" && model.name === name) {
            const img = model.data.image[0];
            return Array.isArray(img) ? img.flat(Infinity) : Array.from(img);
        }
    }
    return null;
}"""
# The legend entries of every figure whose title starts with ``title``: {title: [labels]}.
LEGENDS = """(title) => {""" + ON_PAGE + """
    const out = {};
    for (const model of onPage) {
        if (model.type === "Figure" && model.title.text.startsWith(title)) {
            const labels = [];
            for (const panel of [...model.right, ...model.center, ...model.left, ...model.above,
                                 ...model.below]) {
                if (panel.type === "Legend") {
                    for (const item of panel.items) {
                        const label = item.label;
                        labels.push(typeof label === "string" ? label : label.value);
                    }
                }
            }
            out[model.title.text] = labels;
        }
    }
    return out;
}"""


@pytest.fixture(scope="module")
def served_blank(runs_dir, tmp_path_factory):
    """The fixture's runs with test sample 0 of every run an empty (all-zero) field."""
    runs = Path(shutil.copytree(runs_dir, tmp_path_factory.mktemp("must") / "runs"))
    for store in runs.rglob("reconstructions.zarr"):
        group = zarr.open_group(store, mode="r+")
        truth = group["truth"][...]
        truth[0] = 0.0
        group["truth"][...] = truth
    yield from serve(runs)


def truth_on_disk(run_dir: Path) -> tuple[np.ndarray, float]:
    with xr.open_zarr(run_dir / "reconstructions.zarr") as recon:
        truth = recon["truth"].values
    with xr.open_zarr(run_dir / "metrics.zarr") as metrics:
        cutoff = float(metrics.attrs["spectral_cutoff"])
    return truth, cutoff


def shown_sample(page, source: str, truth: np.ndarray) -> tuple[int, int]:
    """(sample, scale) of ``truth`` whose field the page's ``source`` shows (exactly one)."""
    image = np.asarray(wait_for(lambda: (v := page.evaluate(IMAGE, source)) and len(v) == truth[0, 0].size
                                and v, 20, what=f"{source}'s image"), np.float64)
    found = [(s, t) for s in range(truth.shape[0]) for t in range(truth.shape[1])
             if np.allclose(image, truth[s, t].ravel(), atol=1e-6)
             or np.allclose(image, truth[s, t][::-1].ravel(), atol=1e-6)]
    assert len(found) >= 1, "the shown field is no stored truth"
    return found[0]


def test_default_samples_are_not_blank_and_each_run_has_one_legend_entry(served_blank, page, artifacts):
    runs, url = served_blank
    watch = open_app(page, url)
    drawn = page.evaluate(DRAWN_RUNS)
    assert drawn == expected_runs(runs)
    # Colour by run (the default): one legend entry per drawn run, on every curve panel.
    legends = wait_for(lambda: (got := page.evaluate(LEGENDS, "")) and any(got.values()) and got, 20,
                       what="the curves' legends")
    # (The loss-terms panel's legend is of its dash patterns, one per loss term.)
    with_legend = {title: labels for title, labels in legends.items()
                   if labels and not title.startswith("Loss terms")}
    assert any(title.startswith("Test relative MSE") for title in with_legend), legends
    for title, labels in with_legend.items():
        assert sorted(labels) == drawn, (title, labels)
    # The views open on the test sample with the most high-band power, never the blank one.
    run = drawn[0]
    truth, cutoff = truth_on_disk(runs / run)
    power = high_power_by_hand(truth, cutoff)
    assert power[0] == 0.0 and power.max() > 0
    show_tab(page, "Reconstructions")
    page.get_by_label("Run", exact=True).first.select_option(run)
    sample, scale = shown_sample(page, "recon-image-0", truth)
    assert sample == int(np.argmax(power)) and sample != 0
    assert np.ptp(truth[sample, scale]) > 0  # not a blank field
    show_tab(page, "Compare two runs")
    compare_truth, _ = truth_on_disk(runs / drawn[0])  # Compare's run A: the first drawn run
    compared, _ = shown_sample(page, "compare-image-0", compare_truth)
    assert compared == int(np.argmax(high_power_by_hand(compare_truth, cutoff))) and compared != 0
    next_render(page)
    page.screenshot(path=artifacts / "must-show-samples.png", full_page=True)
    assert_clean(page, watch)


def every_tab(page) -> list[str]:
    names = [t.strip() for t in page.locator(".bk-tab").all_inner_texts()]
    assert len(names) >= 12, names  # every view of lab.app.LabApp
    return names


def test_a_visit_of_every_tab_with_a_phase_c_run_launched_and_watched_to_its_end(served_blank, page,
                                                                                  artifacts):
    runs, url = served_blank
    watch = open_app(page, url)
    tabs = every_tab(page)
    for tab in tabs:
        show_tab(page, tab)
    click_tab(page, "Launch")
    # The trainer's GPU-sized defaults get its CPU hint while no GPU is visible.
    if not gpu_visible():
        hint = wait_for(lambda: (t := text_of(page, "launch-cpu-hint")) and "sized for a GPU" in t and t,
                        30, what="the CPU hint")
        assert "--pooling-type attention" in hint
    page.get_by_label("Decoder type", exact=True).select_option("rff_output")
    page.get_by_label("Pooling type", exact=True).select_option("mean")
    page.get_by_label("RFF location", exact=True).select_option("both")
    form = {"Run name": "phase-c-both", "Samples": "8", "Resolution R": "16", "Scales T": "3",
            "Max steps": "20", "Evaluate every": "10", "Batch size": "4", "RFF σ": "2.5"}
    for label, value in form.items():
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
    if not gpu_visible():  # CPU-sized now: the hint goes
        wait_for(lambda: not page.locator(".launch-cpu-hint").first.is_visible(), 30,
                 what="the CPU hint to go")
    page.locator("button", has_text="Launch training run").click()
    wait_for(lambda: "Launched" in text_of(page, "launch-feedback"), 60, what="the launch")
    pid = launched_pid(page, "phase-c-both")
    try:
        wait_for(lambda: "finished (exit status 0)" in text_of(page, "launch-table").split("phase-c-both", 1)[1],
                 400, interval=1, what="the launched run to finish")
    finally:
        try:
            os.kill(pid, signal.SIGTERM)  # the trainer this test started, if still running
        except ProcessLookupError:
            pass
    config = (runs / "phase-c-both" / "config.json")
    assert tags_on_disk(config.parent)["decoder_type"] == "rff_output"
    model = __import__("json").loads(config.read_text())["config"]["model"]
    assert (model["rff_location"], model["rff_sigma"]) == ("both", 2.5)
    # The views follow it to its end: the Runs table says finished, the curves hold its rows.
    show_tab(page, "Runs")
    wait_for(lambda: "finished" in text_of(page, "runs-table").split("phase-c-both", 1)[-1][:400], 60,
             interval=0.5, what="the finished run in the Runs table")
    click_tab(page, "Curves")
    wait_for(lambda: "phase-c-both" in page.evaluate(DRAWN_RUNS), 60, interval=0.5, what="its curves")
    wait_for(lambda: page.evaluate(EVAL_ROWS, "phase-c-both") == 3, 60, interval=0.5,
             what="its three evaluations")
    for tab in tabs:
        show_tab(page, tab)
    next_render(page)
    page.screenshot(path=artifacts / "must-show-visit.png", full_page=True)
    assert_clean(page, watch)
