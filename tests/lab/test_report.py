"""``fae-lab report``: the HTML file of a run and of a folder of runs, read back as text.

The runs are fabricated (fae_lab.testing.fake_runs); expected values come from the files on
disk (config.json, final.json) and from fae_lab.ranking called directly, not from the report.
Building a report imports Bokeh and serialises a few hundred models: the tests that build one
are slow. The browser side (plots drawn offline, the step selector) is test_report_browser.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fae_lab.ranking import experiment_row, rank, run_summary
from lab.report import main as report_main
from lab.report import report_html, write_report
from lab.report.page import inline_bokehjs
from lab.report.plots import (
    LEGEND_CHAR_PX,
    LEGEND_INSIDE_UP_TO,
    LEGEND_ROW_PX,
    add_line,
    finish_legend,
    new_figure,
)
from lab.report.run import flatten
from tests.lab.report_pages import HOSTILE, Tables, write_report_runs
from tests.train_helpers import read_json


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory) -> Path:
    return write_report_runs(tmp_path_factory.mktemp("report") / "runs")


@pytest.fixture(scope="module")
def hostile_page(report_runs) -> str:
    return report_html(report_runs / HOSTILE)


@pytest.fixture(scope="module")
def comparison_page(report_runs) -> str:
    return report_html(report_runs)


def assert_no_markup_from_names(page: str) -> None:
    """The hostile name is in the page as escaped text only (the Bokeh document's JSON is
    HTML-escaped too), never as a tag."""
    assert "&lt;img src=x onerror=" in page
    ours = page.replace(inline_bokehjs(), "")  # BokehJS itself has an "<img" in its code
    assert len(ours) < len(page) and "<img" not in ours.lower()


@pytest.mark.slow
def test_a_run_report_shows_its_name_as_text_and_its_config_values(report_runs, hostile_page):
    assert_no_markup_from_names(hostile_page)
    tables = Tables(hostile_page)
    header = {row[0][0]: row[1][0] for row in tables.named("header")}
    assert header["run"] == HOSTILE  # the parser un-escapes: the text is the name itself
    config = json.loads((report_runs / HOSTILE / "config.json").read_text())["config"]
    settings = {row[0][0]: row[1] for row in tables.named("settings")[1:]}
    assert settings["loss.loss_type"][0] == "fourier_weighted" == config["loss"]["loss_type"]
    assert int(settings["model.latent_dim"][1]) == config["model"]["latent_dim"]
    assert float(settings["optim.learning_rate"][1]) == config["optim"]["learning_rate"]
    assert settings["model.encoder_hidden"][0] == json.dumps(config["model"]["encoder_hidden"])
    final = read_json(report_runs / HOSTILE / "final.json")
    shown = {row[0][0]: row[1] for row in tables.named("final")[1:]}
    assert float(shown["final/test_rel_mse"][1]) == final["final/test_rel_mse"]
    # Every section is there, with its plots' sources named.
    for section in ("Curves", "Frequency bands and learned fraction", "Reconstructions",
                    "Per scale", "Configuration"):
        assert f"<h2>{section}</h2>" in hostile_page
    for name in ("band-all", "band-spectrum", "band-step", "band-scale", "curve:train_loss",
                 "reconstructions"):
        assert f"&quot;name&quot;:&quot;{name}&quot;" in hostile_page or f'"name":"{name}"' in hostile_page


@pytest.mark.slow
def test_the_per_scale_table_holds_the_newest_evaluation(report_runs, hostile_page):
    import xarray as xr

    rows = Tables(hostile_page).named("per-scale")
    progress = read_json(report_runs / HOSTILE / "progress.json")
    with xr.open_zarr(report_runs / HOSTILE / "metrics.zarr") as ds:
        newest = ds.isel(eval_step=progress["n_eval"] - 1)
        mse, held_out = newest["eval_scale_mse"].values, ds["held_out"].values
    assert [r[0][0] for r in rows] == ["scale", "0", "1", "2"]
    for i, row in enumerate(rows[1:]):
        assert float(row[4][1]) == pytest.approx(float(mse[i]), rel=1e-6)
        assert row[2][0] == ("held-out" if held_out[i] else "training")


def ranking_by_hand(runs: Path) -> list[dict]:
    """fae_lab.ranking over the runs, grouped by hand: the seeds h1_s0, h1_s1 are one
    experiment, every other folder its own; the baseline is 'baseline'."""
    groups = {"baseline": ["baseline"], "h1": ["h1_s0", "h1_s1"], HOSTILE: [HOSTILE],
              "ladder_auto_decoder": ["ladder_auto_decoder"]}
    losses = {"baseline": "l2", "h1": "h1", HOSTILE: "fourier_weighted", "ladder_auto_decoder": "l2"}
    rows = [experiment_row(name, members, [run_summary(runs / m) for m in members], losses[name],
                           "standard") for name, members in groups.items()]
    return rank(rows, baseline="baseline")


@pytest.mark.slow
def test_the_comparison_ranks_like_fae_lab_ranking(report_runs, comparison_page):
    assert_no_markup_from_names(comparison_page)
    rows = Tables(comparison_page).named("ranking")
    header = [cell[0] for cell in rows[0]]
    expected = ranking_by_hand(report_runs)
    assert [r[header.index("experiment")][0] for r in rows[1:]] == [e["experiment"] for e in expected]
    for row, want in zip(rows[1:], expected, strict=True):
        cells = dict(zip(header, row, strict=True))
        assert int(cells["rank"][1]) == want["rank"]
        assert int(cells["seeds"][1]) == want["n_seeds"]
        assert cells["vs_base"][0] == want["vs_baseline"] and cells["vs_above"][0] == want["vs_above"]
        for column, key in (("test_rel_mse", "test_rel_mse"), ("high_freq_mse", "high_freq_mse"),
                            ("resolved_|n|", "resolved_bandwidth"), ("gap(test-train)", "gap")):
            value, spread = cells[column][1], cells[column][2]
            assert (None if value is None else float(value)) == want[key], column
            assert (None if spread is None else float(spread)) == want[f"{key}_spread"], column
    # And the two seeds' mean and spread from their final.json, by NumPy.
    finals = [read_json(report_runs / f"h1_s{i}" / "final.json")["final/test_rel_mse"] for i in (0, 1)]
    h1 = next(r for r in rows[1:] if r[header.index("experiment")][0] == "h1")
    cell = h1[header.index("test_rel_mse")]
    assert float(cell[1]) == pytest.approx(np.mean(finals), rel=1e-12)
    assert float(cell[2]) == pytest.approx(np.std(finals, ddof=1), rel=1e-12)
    assert "±" in cell[0]


@pytest.mark.slow
def test_the_comparison_has_the_ladder_and_every_runs_curves(report_runs, comparison_page):
    ladder = Tables(comparison_page).named("ladder")
    # Bottom rung first; the FAE side of the ladder is the baseline.
    assert [(row[0][0], row[1][0]) for row in ladder[1:]] == [
        ("auto_decoder", "ladder_auto_decoder"), ("fae", "baseline")]
    train = read_json(report_runs / "ladder_auto_decoder" / "final.json")["final/train_rel_mse"]
    assert float(ladder[1][ladder[0].index(("train_rel_mse", None, None))][1]) == train
    for run in ("baseline", "h1_s0", "h1_s1", "ladder_auto_decoder"):
        assert f"compare-loss:{run}" in comparison_page
        assert f"compare-fraction-all:{run}" in comparison_page
    assert "compare-test:ladder_auto_decoder" not in comparison_page  # no test numbers: no line
    assert "compare-step" in comparison_page


@pytest.mark.slow
def test_write_report_writes_one_file_and_keeps_an_existing_one(report_runs, tmp_path):
    out = write_report(report_runs / "baseline", tmp_path / "r.html")
    assert out == tmp_path / "r.html" and out.read_text().startswith("<!DOCTYPE html>")
    assert "cdn.bokeh.org" not in out.read_text() and "<script src=" not in out.read_text()
    out.write_text("mine")
    with pytest.raises(Exception, match="exists"):
        write_report(report_runs / "baseline", out)
    assert out.read_text() == "mine"
    write_report(report_runs / "baseline", out, overwrite=True)
    assert "fae-lab report: baseline" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary left


def refused(capsys, argv) -> str:
    try:
        status = report_main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fae-lab report: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # a run folder, never read: its --out is refused
    kept = tmp_path / "kept.html"
    kept.write_text("keep me")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no such file" in refused(capsys, [str(tmp_path / "missing"), "--out", str(tmp_path / "o.html")])
    assert "no runs found" in refused(capsys, [str(empty), "--out", str(tmp_path / "o.html")])
    assert "a file" in refused(capsys, [str(a_file), "--out", str(tmp_path / "o.html")])
    assert "is a directory" in refused(capsys, [str(run), "--out", str(empty)])
    assert "--overwrite" in refused(capsys, [str(run), "--out", str(kept)])
    assert "is a file" in refused(capsys, [str(run), "--out", str(a_file / "r.html")])
    assert "does not exist" in refused(capsys, [str(run), "--out", str(tmp_path / "no" / "r.html")])
    assert "required" in refused(capsys, [str(run)])
    assert kept.read_text() == "keep me" and a_file.read_text() == "x"
    assert not (tmp_path / "o.html").exists() and list(empty.iterdir()) == []


def test_an_unwritable_destination_is_one_line(capsys):
    # /proc refuses new files even to root (whose permission checks always pass).
    message = refused(capsys, [str(Path(__file__).parent), "--out", "/proc/report.html"])
    assert "/proc" in message


@pytest.mark.slow
def test_unreadable_runs_are_listed_as_text(tmp_path, report_runs):
    import shutil

    runs = Path(shutil.copytree(report_runs / "baseline", tmp_path / "runs" / "ok"))
    bad = tmp_path / "runs" / "<b>bad"
    bad.mkdir()
    (bad / "config.json").write_text("not json")
    page = report_html(runs.parent)
    rows = Tables(page).named("unreadable")
    assert rows[1][0][0] == "<b>bad" and "<b>bad" not in page


@pytest.mark.slow
def test_fae_lab_report_runs_without_jax_or_panel(report_runs, tmp_path):
    out = tmp_path / "r.html"
    code = ("import sys; from fae_lab.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'panel', 'holoviews'})); "
            "sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "report", str(report_runs / "h1_s0"),
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(out), "[]"]
    assert out.is_file()


def test_flatten_names_nested_settings_with_dots():
    assert flatten({"a": 1, "m": {"b": None, "c": [1, 2], "d": {"e": "x"}}}) == [
        ("a", 1), ("m.b", "null"), ("m.c", "[1, 2]"), ("m.d.e", "x")]


@pytest.mark.slow
def test_the_dashboards_download_button_gives_the_drawn_runs_report(report_runs):
    from lab.app import LabApp

    app = LabApp(report_runs)
    assert any(item is app.download.button for item in app.template.sidebar)
    page = app.download.button.callback().getvalue().decode()
    ranked = [r[1][0] for r in Tables(page).named("ranking")[1:]]
    assert sorted(ranked) == sorted(["baseline", "h1", HOSTILE, "ladder_auto_decoder"])
    assert_no_markup_from_names(page)
    # Panel is imported here: the page still links no file (its extensions' bundles) at all.
    assert "<script src=" not in page and "<link" not in page and "static/" not in page
    app.state.chosen = ["h1_s1"]  # one run drawn: its own report
    page = app.download.button.callback().getvalue().decode()
    assert "<h1>fae-lab report: h1_s1</h1>" in page and "band-spectrum" in page
    app.state.loss_type = []  # nothing drawn: nothing to download
    assert app.download.button.disabled


@pytest.mark.parametrize("n_runs", [3, 12, 21, 40])
def test_a_legend_of_many_runs_stands_beside_the_plot_and_keeps_the_plot_area(n_runs):
    """A few runs' legend sits inside the plot; a phase's many runs' legend goes beside it
    (where it cannot hide the lines' ends), in columns of at most as many entries as fit in
    the figure's height, the figure widened by exactly those columns."""
    fig = new_figure("Test relative MSE", "step", "relative MSE")
    width = fig.width
    names = [f"phase_c_rff{i}_penultimate_s{i % 3}" for i in range(n_runs)]
    for name in names:
        add_line(fig, [0, 1000], [1.0, 0.5], colour="#000000", label=name)
    finish_legend(fig, "bottom_left")
    legend = fig.legend[0]
    assert [item.label.value for item in legend.items] == names
    assert legend.click_policy == "hide"
    if n_runs <= LEGEND_INSIDE_UP_TO:
        assert legend in fig.center and legend not in fig.right
        assert legend.location == "bottom_left" and fig.width == width
    else:
        assert legend in fig.right and legend not in fig.center
        per_column = -(-n_runs // legend.ncols)
        # within the 300-px figure less its title, axis, and the legend's margins and padding
        assert per_column * LEGEND_ROW_PX <= fig.height - 40 - 2 * 10 - 2 * 4
        assert legend.ncols == (1 if n_runs <= 11 else 2 if n_runs <= 22 else 4)  # 11 entries a column
        assert fig.width == width + legend.ncols * (LEGEND_CHAR_PX * max(map(len, names)) + 40)


@pytest.mark.slow
def test_a_run_kept_without_its_reconstructions_reports_everything_else(report_runs, tmp_path):
    """``fae-lab report`` of a run whose store was kept without reconstructions.zarr (as the
    findings' archived runs are): exit 0, the curves drawn, one line where the fields would be."""
    run = Path(shutil.copytree(report_runs / "baseline", tmp_path / "baseline"))
    shutil.rmtree(run / "reconstructions.zarr")
    assert report_main([str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "kept without its reconstructions" in page
    assert "fae-lab report: baseline" in page and "Reconstructions" in page
