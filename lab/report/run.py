"""The report of one run: its settings, curves, frequency bands with a step selector, learned
fraction, reconstructions at a few steps and per-scale tables.

Notation (docs/metrics.md): E(s, k) is the error power in radial bin k at evaluation s, T(s, k)
the target's, L = 1 − E/T the learned fraction (:mod:`fae_lab.bands`). The numbers come from
the dashboards' transforms (:mod:`lab.transforms`) over the run's reader.

The step selector: one Bokeh ``Slider`` over the evaluations (index 0 .. n_eval − 1) and a
``Select`` of the scale choice (the training-scale mean, then each scale). Every
(evaluation, choice) row of E, T and L is held in one ``ColumnDataSource`` (``band-all``,
n_eval × n_choices rows of n_bins numbers); a ``CustomJS`` callback copies row
``evaluation · n_choices + choice`` into the drawn source ``band-spectrum`` (columns ``k``,
``error``, ``target``, ``fraction``, ``fraction_train``), retitles the figure with the step and
moves the marker on the resolved-bandwidth plot. Nothing needs a server.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJS,
    LinearColorMapper,
    Select,
    Slider,
    Span,
)
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from fae_lab.bands import LEARNED_THRESHOLD
from fae_lab.store import EVAL_CURVES, SCALE_VARIABLES, SPECTRAL_VARIABLES, RunReader
from lab.report.page import Section, table
from lab.report.plots import (
    add_line,
    field_rows,
    finish_legend,
    finite_or_nan,
    new_figure,
)
from lab.transforms import (
    ALL_TRAINING_SCALES,
    TEST_SPLIT,
    TRAINING_SPLIT,
    band_error_relative_to_first,
    evaluation_frame,
    evaluations_to_draw,
    learned_fraction_by_k,
    per_scale_table,
    reconstruction_error,
    run_split,
    spectral_error,
    spectral_target,
    split_variable,
    step_bin_cells,
    training_frame,
)

N_RECONSTRUCTION_STEPS = 4  # evaluations whose reconstructions are drawn: first .. newest
CURVE_COLOURS = {"test": "#0072B2", "train": "#D55E00"}
TERM_DASHES = {"l2": "dashed", "grad": "dotted", "fourier": "dotdash", "latent": "dashdot"}

STEP_CALLBACK = """
const i = slider.value;
const c = Number(choice.value);
const r = i * n_choices + c;
const d = all.data;
spectrum.data = {k: d.k[r], error: d.error[r], target: d.target[r], fraction: d.fraction[r],
                 fraction_train: d.fraction_train[r]};
const step = steps[i];
slider.title = "Evaluation " + (i + 1) + " of " + steps.length + ": step " + step;
band.title.text = "Error power per |n| bin at step " + step;
learned.title.text = "Learned fraction 1 − E/T at step " + step;
marker.location = step;
"""


def prepare(reader: RunReader) -> None:
    """Track every variable the report draws (the reader tracks the curves only)."""
    names = [*SPECTRAL_VARIABLES, *SCALE_VARIABLES]
    reader.require(*names, *(split_variable(n, TRAINING_SPLIT) for n in [*names, *EVAL_CURVES]))


def flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"model": {"rung": "fae"}}`` -> ``[("model.rung", "fae")]``; lists and None as JSON."""
    out: list[tuple[str, Any]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, name + ".")
        elif isinstance(value, (list, tuple)) or value is None:
            out.append((name, json.dumps(value)))
        else:
            out.append((name, value))
    return out


def header(reader: RunReader) -> list[tuple[str, Any]]:
    """The page's header rows: what the run is and where it stands."""
    doc = reader.config_json
    rows: list[tuple[str, Any]] = [
        ("run", reader.run_name), ("folder", str(reader.path)), ("status", reader.status),
        ("step", f"{reader.step} of {reader.max_steps}"), ("evaluations", reader.n_eval),
        ("rung", reader.rung), *reader.tags.items()]
    if reader.progress.get("message"):
        rows.append(("message", str(reader.progress["message"])))
    for key in ("created", "group"):
        if doc.get(key) is not None:
            rows.append((key, str(doc[key])))
    if isinstance(doc.get("command_line"), list):
        rows.append(("command line", " ".join(map(str, doc["command_line"]))))
    return rows


def settings_section(reader: RunReader) -> Section:
    """config.json's resolved settings (one row per dotted key), its other entries, and the
    scalars of final.json."""
    config = reader.config
    rows = flatten(config) if isinstance(config, dict) else [("config", json.dumps(config))]
    extra = {k: v for k, v in reader.config_json.items()
             if k not in ("config", "command_line", "tags") and not isinstance(v, dict)}
    rows += [(k, json.dumps(v) if isinstance(v, (list, type(None))) else v) for k, v in extra.items()]
    versions = reader.config_json.get("versions")
    if isinstance(versions, dict):
        rows += [(f"versions.{k}", str(v)) for k, v in versions.items()]
    final = reader.final or {}
    html = table(("setting", "value"), rows, "settings")
    if final:
        scalars = [(k, v) for k, v in final.items() if not isinstance(v, (list, dict))]
        html += "<h3>final.json</h3>" + table(("key", "value"), scalars, "final")
    return Section("Configuration", "config.json's resolved settings of the run, and final.json "
                   "once it has ended.", html)


def curves_section(reader: RunReader) -> Section:
    """Training loss (and its terms), relative MSE, low/high-band MSE and their ratio, on the
    test split and (where stored) the training split, against step."""
    train = training_frame(reader.training(), reader.loss_terms)
    evaluations = reader.evaluations()
    frames = {split: evaluation_frame(evaluations, reader.k_upper, split)
              for split in (TEST_SPLIT, TRAINING_SPLIT)}
    loss = new_figure("Training loss", "step", "loss", log_y=True)
    add_line(loss, train["step"], train["train_loss"], colour="#000000", label="train_loss",
             name="curve:train_loss", log=True)
    for term in reader.loss_terms:
        add_line(loss, train["step"], train[f"train_loss_{term}"], colour="#777777",
                 dash=TERM_DASHES.get(term, "dotted"), label=term, log=True)
    figures = [loss]
    panels = (("eval_rel_mse", "Relative MSE", True), ("eval_low_freq_mse", "Low-band MSE", True),
              ("eval_high_freq_mse", "High-band MSE (|n| ≥ cutoff)", True),
              ("eval_high_freq_error_ratio", "High-band error ratio high / (low + high)", False))
    for name, title, log in panels:
        fig = new_figure(title, "step", name.removeprefix("eval_"), log_y=log, x_range=loss.x_range)
        for split, frame in frames.items():
            label = "test" if split == TEST_SPLIT else "training split"
            add_line(fig, frame["step"], frame[name], colour=CURVE_COLOURS[split], label=label,
                     name=f"curve:{split_variable(name, split)}", log=log)
        finish_legend(fig)
        figures.append(fig)
    finish_legend(loss)
    drawn = [fig for fig in figures if fig.renderers]  # a curve with no finite value is left out
    return Section("Curves", "Training loss (terms dashed) and the evaluation curves of the test "
                   "split and, where the store has it, the training split (eval_train_*).",
                   plot=gridplot(drawn, ncols=3) if drawn else None)


def _choices(reader: RunReader) -> list[tuple[int, str]]:
    """(scale argument, label): the training-scale mean, then every scale."""
    choices = [(ALL_TRAINING_SCALES, "training scales (mean)")]
    for scale, time, held in zip(reader.scales, reader.times, reader.held_out, strict=True):
        choices.append((int(scale), f"scale {int(scale)}, t = {time:.3g}"
                        + (" (held-out)" if held else "")))
    return choices


def band_rows(reader: RunReader) -> dict[str, list]:
    """Every (evaluation, scale choice) row of E, T and L, evaluation-major: row
    ``i · n_choices + c`` (the CustomJS callback's index)."""
    evaluations = reader.evaluations()
    split = run_split(reader.rung, TEST_SPLIT)
    per_choice = []
    for scale, _ in _choices(reader):
        per_choice.append((spectral_error(evaluations, scale, split).values,
                           spectral_target(evaluations, scale, split).values,
                           learned_fraction_by_k(evaluations, scale, split).values,
                           learned_fraction_by_k(evaluations, scale, TRAINING_SPLIT).values))
    k = reader.k.astype(np.float64)
    rows: dict[str, list] = {"k": [], "error": [], "target": [], "fraction": [], "fraction_train": []}
    for i in range(reader.n_eval):
        for error, target, fraction, fraction_train in per_choice:
            rows["k"].append(k)
            rows["error"].append(finite_or_nan(error[i], log=True))
            rows["target"].append(finite_or_nan(target[i], log=True))
            rows["fraction"].append(finite_or_nan(fraction[i]))
            rows["fraction_train"].append(finite_or_nan(fraction_train[i]))
    return rows


def bands_section(reader: RunReader) -> Section:
    """E and T per |n| bin and L per bin at the evaluation the slider picks (newest first
    shown), the resolved bandwidth over training, and a step × |n| map of log10 E / E(s_0)."""
    n_eval = reader.n_eval
    if n_eval == 0:
        return Section("Frequency bands and learned fraction", "No evaluation written yet.")
    choices = _choices(reader)
    everything = band_rows(reader)
    all_source = ColumnDataSource(everything, name="band-all")
    first = (n_eval - 1) * len(choices)  # the newest evaluation, training-scale mean
    spectrum = ColumnDataSource({key: values[first] for key, values in everything.items()},
                                name="band-spectrum")
    steps = [int(s) for s in reader.eval_steps[:n_eval]]
    band = new_figure(f"Error power per |n| bin at step {steps[-1]}", "|n| (cycles per unit length)",
                      "power per bin", log_y=True, width=520, height=340)
    band.line("k", "error", source=spectrum, line_width=2, color="#0072B2", legend_label="error E",
              name="band-error")
    band.scatter("k", "error", source=spectrum, size=5, color="#0072B2")
    band.line("k", "target", source=spectrum, line_dash="dashed", color="#555555",
              legend_label="target T")
    if np.isfinite(reader.spectral_cutoff):
        band.add_layout(Span(location=reader.spectral_cutoff, dimension="height",
                             line_dash="dotted", line_color="grey"))
    finish_legend(band)
    learned = new_figure(f"Learned fraction 1 − E/T at step {steps[-1]}",
                         "|n| (cycles per unit length)", "learned fraction", width=520, height=340,
                         x_range=band.x_range)
    learned.y_range.start, learned.y_range.end = -1.0, 1.05
    learned.line("k", "fraction", source=spectrum, line_width=2, color="#0072B2",
                 legend_label=f"{run_split(reader.rung, TEST_SPLIT)} split")
    learned.line("k", "fraction_train", source=spectrum, line_dash="dashed", color="#D55E00",
                 legend_label="training split")
    learned.add_layout(Span(location=LEARNED_THRESHOLD, dimension="width", line_dash="dashed",
                            line_color="grey"))
    finish_legend(learned, "bottom_left")
    bandwidth = new_figure("Resolved bandwidth (largest |n| with L ≥ 0.5 from below)", "step",
                           "|n| (cycles per unit length)", width=520, height=340)
    evaluations = reader.evaluations()
    for split in (TEST_SPLIT, TRAINING_SPLIT):
        frame = evaluation_frame(evaluations, reader.k_upper, split)
        add_line(bandwidth, frame["step"], frame["resolved_bandwidth"], colour=CURVE_COLOURS[split],
                 label="test" if split == TEST_SPLIT else "training split",
                 name=f"bandwidth:{split}")
    marker = Span(location=steps[-1], dimension="height", line_color="#999999", line_dash="dotted")
    bandwidth.add_layout(marker)
    finish_legend(bandwidth, "bottom_right")
    slider = Slider(start=0, end=max(n_eval - 1, 1), value=n_eval - 1, step=1, width=520,
                    title=f"Evaluation {n_eval} of {n_eval}: step {steps[-1]}", name="band-step", show_value=False,
                    disabled=n_eval == 1)
    choice = Select(options=[(str(i), label) for i, (_, label) in enumerate(choices)], value="0",
                    title="Scale", name="band-scale", width=260)
    callback = CustomJS(args=dict(slider=slider, choice=choice, all=all_source, spectrum=spectrum,
                                  n_choices=len(choices), steps=steps, band=band, learned=learned,
                                  marker=marker), code=STEP_CALLBACK)
    slider.js_on_change("value", callback)
    choice.js_on_change("value", callback)
    layout = column(row(slider, choice), row(band, learned), row(bandwidth, relative_map(reader)))
    return Section("Frequency bands and learned fraction",
                   "Move the slider to pick the evaluation and the menu to pick the scale. Left: "
                   "the error power E per radial bin of |n| (and the target's T, dashed; the "
                   "dotted line is the low/high cutoff). Right: the learned fraction L = 1 − E/T "
                   "per bin (1: reproduced, 0: as much error as signal). Below: the resolved "
                   "bandwidth over training and log10 E(s, k)/E(s_0, k), the error relative to "
                   "the first evaluation (blue: learned, white: flat).", plot=layout)


def relative_map(reader: RunReader) -> figure:
    """Step × |n| map of log10 E(s, k) / E(s_0, k), training-scale mean, ±2 decades."""
    error = spectral_error(reader.evaluations(), ALL_TRAINING_SCALES,
                           run_split(reader.rung, TEST_SPLIT))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(band_error_relative_to_first(error).values)
    cells = step_bin_cells(reader.eval_steps[:reader.n_eval], 0, reader.n_eval, reader.k,
                           reader.k_lower, reader.k_upper)
    cells["log_ratio"] = finite_or_nan(ratio.ravel())
    fig = new_figure("log10 E(s, k) / E(s₀, k)", "step", "|n| (cycles per unit length)",
                     width=520, height=340)
    mapper = LinearColorMapper(palette=list(RdBu11), low=-2.0, high=2.0, nan_color="#eeeeee")
    fig.quad(left="left", right="right", bottom="bottom", top="top",
             source=ColumnDataSource(cells, name="band-map"),
             fill_color={"field": "log_ratio", "transform": mapper}, line_color=None)
    fig.add_layout(ColorBar(color_mapper=mapper, width=8), "right")
    return fig


def reconstructions_section(reader: RunReader, sample: int = 0, scale: int | None = None) -> Section:
    """Truth, reconstruction and error of one stored sample at a few evaluations spread from
    the first to the newest (:func:`~lab.transforms.evaluations_to_draw`), in one figure: a
    row per evaluation, the fields on unit squares side by side."""
    if reader.n_eval == 0:
        return Section("Reconstructions", "No evaluation written yet.")
    if not reader.has_reconstructions:
        return Section("Reconstructions", "This run was kept without its reconstructions (no "
                       "reconstructions.zarr): no fields to show.")
    truths = reader.truth()
    if scale is None:  # the first training scale: the sharpest one the model was fitted to
        trained = np.flatnonzero(~reader.held_out)
        scale = int(trained[0]) if trained.size else 0
    truth = truths[sample, scale]
    rows = []
    for index in evaluations_to_draw(reader.n_eval, N_RECONSTRUCTION_STEPS):
        recon = reader.reconstruction(int(index))[sample, scale]
        rows.append((int(reader.eval_steps[index]), recon, reconstruction_error(truth, recon)))
    split = str(reader.config_json.get("recon_split", "test"))
    return Section("Reconstructions",
                   f"Stored {split} sample {sample} at scale {scale}, at evaluations from the first "
                   "to the newest (rows). Truth u and reconstruction g(f(u)) share the truth's "
                   "colour range; the error e = g(f(u)) − u is drawn as e / max|e| of its row, "
                   "whose max|e| and MSE the row's label gives.",
                   plot=field_rows(truth, rows))


def scales_section(reader: RunReader) -> Section:
    """Error per scale at the newest evaluation (:func:`~lab.transforms.per_scale_table`) and
    final.json's per-scale numbers."""
    frame = per_scale_table({reader.name: reader.evaluations()})
    if frame.empty:
        return Section("Per scale", "No evaluation written yet.")
    columns = ["scale", "time", "split", "eval_step", "mse", "rel_mse"]
    rows = [[_plain(v) for v in record] for record in frame[columns].itertuples(index=False)]
    html = table(("scale", "t", "split", "step", "MSE", "relative MSE"), rows, "per-scale")
    evaluations = reader.evaluations()
    name = split_variable("eval_scale_rel_mse", TRAINING_SPLIT)
    if name in evaluations and reader.n_eval:
        train = evaluations[name].isel(eval_step=-1).values
        html += "<h3>Training split</h3>" + table(
            ("scale", "relative MSE (training split)"),
            [[int(s), float(v)] for s, v in zip(reader.scales, train, strict=True)], "per-scale-train")
    return Section("Per scale", "Each scale's error at the newest evaluation (held-out scales "
                   "were never trained on).", html)


def _plain(value):
    """NumPy scalars as Python ones (the table formats ints and floats)."""
    return value.item() if isinstance(value, np.generic) else value


def run_sections(reader: RunReader) -> list[Section]:
    """Every section of one run's report (the reader polled, :func:`prepare` done)."""
    return [curves_section(reader), bands_section(reader), reconstructions_section(reader),
            scales_section(reader), settings_section(reader)]
