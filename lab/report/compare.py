"""The comparison report of several runs: the ranked table, the ladder, overlaid curves.

Runs are grouped into experiments by their names: ``<experiment>_s<i>`` (the seeds of
``fae-lab phase/sweep --seeds N``) belong to ``<experiment>``; any other run is an experiment
of one seed. Each experiment's row is :mod:`fae_lab.ranking`'s (:func:`~fae_lab.ranking.run_summary`
per run, :func:`~fae_lab.ranking.experiment_row`, :func:`~fae_lab.ranking.rank`): mean ± sample
spread over the seeds, ranked by mean test relative MSE, "n.s." when |mean_a − mean_b| ≤
spread_a + spread_b, "sig" when larger, "-" without two seeds. The baseline of ``vs_baseline``
is the experiment named ``baseline_multi_scale`` (a phase's) or ``baseline`` (the demo's), if
there is one. With a run of a ladder rung below the FAE, the ladder's table
(:mod:`fae_lab.ladder`) follows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import ColumnDataSource, CustomJS, Slider, Span

from fae_lab.bands import LEARNED_THRESHOLD
from fae_lab.ladder import LADDER_PRINTED, ladder_rows
from fae_lab.ranking import PRINTED, STATISTICS, experiment_row, rank, run_summary
from fae_lab.store import RunReader
from lab.report.page import Section, table
from lab.report.plots import add_line, finish_legend, finite_or_nan, new_figure
from lab.report.run import prepare
from lab.state import PALETTE
from lab.transforms import (
    TEST_SPLIT,
    TRAINING_SPLIT,
    evaluation_frame,
    learned_fraction_by_k,
    run_split,
    training_frame,
)

SEED_SUFFIX = re.compile(r"^(?P<experiment>.+)_s(?P<seed>\d+)$")
BASELINES = ("baseline_multi_scale", "baseline")

FRACTION_CALLBACK = """
const s = slider.value;
for (let r = 0; r < sources.length; r++) {
    const steps = alls[r].data.step;
    let i = -1;
    for (let j = 0; j < steps.length; j++) { if (steps[j] <= s) { i = j; } }
    sources[r].data = i < 0 ? {k: [], learned_fraction: []}
                            : {k: alls[r].data.k[i], learned_fraction: alls[r].data.fraction[i]};
}
slider.title = "Step " + s + " (each run's newest evaluation at or before it)";
"""


def experiment_of(run: str) -> str:
    """The experiment a run is a seed of: ``name_s3`` -> ``name``; any other name is its own."""
    match = SEED_SUFFIX.match(run)
    return match["experiment"] if match else run


def _decoder(reader: RunReader) -> str:
    """The decoder as ``fae-lab phase`` names it (``rff_output/<location>``)."""
    model = reader.config.get("model") or {}
    decoder = str(model.get("decoder_type", reader.tags["decoder_type"]))
    if decoder == "rff_output" and model.get("rff_location"):
        decoder += f"/{model['rff_location']}"
    return decoder


def ranked_rows(readers: dict[str, RunReader]) -> list[dict[str, Any]]:
    """The ranked table of the runs (module docstring), each row with ``rung`` and ``ladder``."""
    groups: dict[str, list[str]] = {}
    for run in readers:
        groups.setdefault(experiment_of(run), []).append(run)
    rows = []
    for experiment, runs in groups.items():
        first = readers[runs[0]]
        loss = str((first.config.get("loss") or {}).get("loss_type", first.tags["loss_type"]))
        summaries = [run_summary(readers[r].path) for r in runs]
        row_ = experiment_row(experiment, runs, summaries, loss, _decoder(first))
        row_["rung"] = first.rung
        rows.append(row_)
    baseline = next((b for b in BASELINES if b in groups), None)
    ordered = rank(rows, baseline=baseline)
    has_ladder = any(r["rung"] != "fae" for r in ordered)
    for r in ordered:
        r["ladder"] = has_ladder and (r["rung"] != "fae" or r["experiment"] == baseline
                                      or baseline is None)
    return ordered


def _table(rows: Sequence[dict[str, Any]], printed, css_class: str) -> str:
    header = [title for _, title in printed]
    cells, spreads = [], []
    for r in rows:
        cells.append([r.get(column) for column, _ in printed])
        spreads.append([r.get(f"{column}_spread") if column in STATISTICS else None
                        for column, _ in printed])
    return table(header, cells, css_class, spreads)


def ranking_section(rows: list[dict[str, Any]]) -> Section:
    html = _table(rows, PRINTED, "ranking")
    html += "<h3>Runs of each experiment</h3>" + table(
        ("experiment", "runs"), [(r["experiment"], r["runs"].replace(";", ", ")) for r in rows],
        "experiment-runs")
    return Section("Ranking", "Experiments ranked by mean test relative MSE over their seeds "
                   "(± the sample standard deviation over seeds). vs_base / vs_above: 'n.s.' when "
                   "the two means are closer than the two spreads together, 'sig' when farther, "
                   "'-' without two seeds on both sides. gap = test − training-split relative MSE; "
                   "rose>10%: seeds whose final test error is over 10 % above their best.", html)


def ladder_section(rows: list[dict[str, Any]]) -> Section | None:
    ladder = ladder_rows([r for r in rows if r.get("ladder")])
    if not ladder:
        return None
    return Section("Bottleneck ladder", "Training-split error and resolved bandwidth, bottom rung "
                   "first: a rung resolving far more than the next one up names the bottleneck.",
                   _table(ladder, LADDER_PRINTED, "ladder"))


def curves_section(readers: dict[str, RunReader]) -> Section:
    """Every run's curves overlaid, one colour per run (legend: the run's name)."""
    loss = new_figure("Training loss", "step", "loss", log_y=True, width=560, height=340)
    test = new_figure("Test relative MSE", "step", "relative MSE", log_y=True, width=560,
                      height=340, x_range=loss.x_range)
    train = new_figure("Training-split relative MSE (eval_train_rel_mse)", "step", "relative MSE",
                       log_y=True, width=560, height=340, x_range=loss.x_range)
    high = new_figure("High-band MSE (|n| ≥ cutoff), test", "step", "MSE", log_y=True, width=560,
                      height=340, x_range=loss.x_range)
    width = new_figure("Resolved bandwidth", "step", "|n| (cycles per unit length)", width=560,
                       height=340, x_range=loss.x_range)
    for i, (run, reader) in enumerate(readers.items()):
        colour = PALETTE[i % len(PALETTE)]
        frame = training_frame(reader.training(), [])
        add_line(loss, frame["step"], frame["train_loss"], colour=colour, label=run,
                 name=f"compare-loss:{run}", log=True)
        evaluations = reader.evaluations()
        tests = evaluation_frame(evaluations, reader.k_upper, TEST_SPLIT)
        trains = evaluation_frame(evaluations, reader.k_upper, TRAINING_SPLIT)
        add_line(test, tests["step"], tests["eval_rel_mse"], colour=colour, label=run,
                 name=f"compare-test:{run}", log=True)
        add_line(train, trains["step"], trains["eval_rel_mse"], colour=colour, label=run, log=True)
        add_line(high, tests["step"], tests["eval_high_freq_mse"], colour=colour, label=run, log=True)
        drawn = trains if run_split(reader.rung, TEST_SPLIT) == TRAINING_SPLIT else tests
        add_line(width, drawn["step"], drawn["resolved_bandwidth"], colour=colour, label=run)
    figures = [f for f in (loss, test, train, high, width) if f.renderers]
    for fig in figures:
        finish_legend(fig)
    return Section("Curves", "One colour per run (click a legend entry to hide its line). Rungs "
                   "without an encoder have no test numbers: their bandwidth is the training "
                   "split's.", plot=gridplot(figures, ncols=2) if figures else None)


def fraction_section(readers: dict[str, RunReader]) -> Section | None:
    """Each run's learned fraction per |n| at the step the slider picks."""
    steps = sorted({int(s) for r in readers.values() for s in r.eval_steps[:r.n_eval]})
    if not steps:
        return None
    fig = new_figure("Learned fraction 1 − E/T per |n| bin", "|n| (cycles per unit length)",
                     "learned fraction", width=760, height=400)
    fig.y_range.start, fig.y_range.end = -1.0, 1.05
    fig.add_layout(Span(location=LEARNED_THRESHOLD, dimension="width", line_dash="dashed",
                        line_color="grey"))
    sources, alls = [], []
    for i, (run, reader) in enumerate(readers.items()):
        fraction = learned_fraction_by_k(reader.evaluations(), split=run_split(reader.rung, TEST_SPLIT))
        k = reader.k.astype(np.float64)
        n = reader.n_eval
        every = ColumnDataSource({"step": reader.eval_steps[:n].astype(np.int64),
                                  "k": [k] * n,
                                  "fraction": [finite_or_nan(fraction.values[j]) for j in range(n)]},
                                 name=f"compare-fraction-all:{run}")
        shown = ColumnDataSource({"k": k if n else np.zeros(0),
                                  "learned_fraction": finite_or_nan(fraction.values[-1]) if n
                                  else np.zeros(0)}, name=f"compare-fraction:{run}")
        fig.line("k", "learned_fraction", source=shown, line_width=2,
                 color=PALETTE[i % len(PALETTE)], legend_label=run)
        sources.append(shown)
        alls.append(every)
    finish_legend(fig, "bottom_left")
    slider = Slider(start=steps[0], end=max(steps[-1], steps[0] + 1), value=steps[-1], step=1,
                    width=760, title=f"Step {steps[-1]} (each run's newest evaluation at or before it)",
                    name="compare-step", disabled=len(steps) == 1, show_value=False)
    slider.js_on_change("value", CustomJS(args=dict(slider=slider, sources=sources, alls=alls),
                                          code=FRACTION_CALLBACK))
    return Section("Learned fraction at a step",
                   "Move the slider: each run's learned fraction at its newest evaluation at or "
                   "before that step (test split; training split for rungs without an encoder).",
                   plot=column(slider, row(fig)))


def comparison_sections(readers: dict[str, RunReader]) -> list[Section]:
    """Every section of the comparison of ``readers`` (run name -> polled reader)."""
    for reader in readers.values():
        prepare(reader)
    rows = ranked_rows(readers)
    sections = [ranking_section(rows), ladder_section(rows), curves_section(readers),
                fraction_section(readers)]
    return [s for s in sections if s is not None]
