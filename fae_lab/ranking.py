"""The ranked table of a phase, sweep or demo: one row per experiment over its seeds.

Each run (one seed of one experiment) is summarised from its store (:func:`run_summary`):
its ``final.json`` headline numbers, the resolved bandwidth of its last evaluation
(:mod:`fae_lab.bands`), the generalisation gap and whether its test error rose from its best.
An experiment's row (:func:`experiment_row`) gives, for each statistic, the mean over its seeds
and the spread: the sample standard deviation (ddof = 1) over the seeds with a finite value,
None with fewer than two. The rows are ranked by mean test relative MSE.

Significance rule (:func:`significance`), on the ranking metric (test relative MSE): the
difference between experiments a and b is **not significant** ("n.s.") when

    |mean_a − mean_b| ≤ spread_a + spread_b,

i.e. when the two means are closer than the two seed spreads together, and "sig" otherwise;
"-" when either side has no spread (one seed, or fewer than two finished). ``vs_baseline``
compares each experiment with the baseline (the first experiment of the plan: the multi-scale
baseline of a phase, the first grid combination of a sweep); ``vs_above`` with the experiment
ranked just above it.

Statistics of one run:

- ``test_rel_mse``, ``high_freq_mse``, ``high_freq_error_ratio``, ``sharpest_scale_mse``
  (``final/*_t0``): from ``final.json``.
- ``resolved_bandwidth``: the largest |n| up to which the learned fraction 1 − E(k)/T(k) of the
  last evaluation stays ≥ 0.5 (:func:`fae_lab.bands.resolved_bandwidth`).
- ``gap``: the generalisation gap of the last evaluation, test minus training-split relative
  MSE, ``eval_rel_mse − eval_train_rel_mse``; None for stores without the training split.
- ``train_rel_mse``, ``train_resolved_bandwidth``: the same on the fixed training-split subset
  (``final/train_rel_mse``, ``eval_train_spectral_*``); the only numbers of a ladder rung without
  an encoder, and the FAE's side of the like-for-like ladder comparison.
- ``rose_from_best``: the final test relative MSE exceeds (1 + 10 %) × the smallest test
  relative MSE of any evaluation of the run. An experiment's row counts its seeds flagged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fae_lab.bands import learned_fraction, resolved_bandwidth
from fae_lab.store.layout import CONFIG_FILE

ROSE_FROM_BEST = 0.10  # a final error more than 10 % above the run's best is flagged
NOT_SIGNIFICANT, SIGNIFICANT, UNDECIDED = "n.s.", "sig", "-"

# Statistics averaged over seeds, each with a ``<name>_spread`` column.
STATISTICS = ("test_rel_mse", "high_freq_mse", "resolved_bandwidth", "gap",
              "high_freq_error_ratio", "sharpest_scale_mse", "train_rel_mse",
              "train_resolved_bandwidth")
COLUMNS = (
    "rank", "experiment", "n_seeds", "status", "loss_type", "decoder_type", "step",
    "test_rel_mse", "test_rel_mse_spread", "vs_baseline", "vs_above",
    "high_freq_mse", "high_freq_mse_spread",
    "resolved_bandwidth", "resolved_bandwidth_spread",
    "gap", "gap_spread",
    "high_freq_error_ratio", "high_freq_error_ratio_spread",
    "sharpest_scale_mse", "sharpest_scale_mse_spread",
    "train_rel_mse", "train_rel_mse_spread",
    "train_resolved_bandwidth", "train_resolved_bandwidth_spread",
    "rung", "rose_from_best", "runs",
)
# The printed table: mean ± spread in one cell, the run folders left to ranking.csv.
PRINTED = (("rank", "rank"), ("experiment", "experiment"), ("n_seeds", "seeds"),
           ("status", "status"), ("loss_type", "loss"), ("decoder_type", "decoder"),
           ("step", "step"), ("test_rel_mse", "test_rel_mse"), ("vs_baseline", "vs_base"),
           ("vs_above", "vs_above"), ("high_freq_mse", "high_freq_mse"),
           ("resolved_bandwidth", "resolved_|n|"), ("gap", "gap(test-train)"),
           ("high_freq_error_ratio", "hf_ratio"), ("sharpest_scale_mse", "sharpest_mse"),
           ("rose_from_best", "rose>10%"))


def read_final(run_dir: Path) -> dict | None:
    """``final.json`` of the run in ``run_dir`` through the store's reader; None if there is no
    run there or it has not ended. A run that cannot be read is a :class:`UsageError`."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return None
    from fae_lab.store import open_run  # xarray / zarr, only once there is a run to read

    return open_run(run_dir).final


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The statistics of one run (module docstring); None where the run has no value."""
    run_dir = Path(run_dir)
    final = read_final(run_dir) or {}
    summary: dict[str, Any] = {
        "status": final.get("final/status", "missing"),
        "step": final.get("final/step"),
        "test_rel_mse": _finite(final.get("final/test_rel_mse")),
        "high_freq_mse": _finite(final.get("final/spectral/high_freq_mse")),
        "high_freq_error_ratio": _finite(final.get("final/spectral/high_freq_error_ratio")),
        "sharpest_scale_mse": _finite(final.get("final/train_time_mse_t0",
                                                final.get("final/held_out_mse_t0"))),
        "train_rel_mse": _finite(final.get("final/train_rel_mse")),
        "resolved_bandwidth": None, "train_resolved_bandwidth": None, "gap": None,
        "rose_from_best": False,
    }
    if not final:
        return summary
    from fae_lab.store import open_run  # xarray / zarr, only once there is a run to read

    summary.update(evaluation_statistics(open_run(run_dir).metrics(), summary["step"],
                                         summary["test_rel_mse"]))
    return summary


def evaluation_statistics(metrics, step: int | None, final_error: float | None) -> dict[str, Any]:
    """``resolved_bandwidth``, ``gap`` and ``rose_from_best`` of a run from its valid
    evaluation rows (``metrics``: the run's ``metrics.zarr`` as an xarray Dataset), at the
    evaluation of ``step`` (the newest if none is at that step); ``final_error`` is the final
    test relative MSE."""
    out: dict[str, Any] = {"resolved_bandwidth": None, "train_resolved_bandwidth": None, "gap": None,
                           "rose_from_best": False}
    steps = metrics["eval_step"].values
    if steps.size == 0:
        return out
    at_step = np.flatnonzero(steps == step) if step is not None else []
    row = int(at_step[-1]) if len(at_step) else steps.size - 1
    last = metrics.isel(eval_step=row)
    fraction = learned_fraction(last["eval_spectral_mse"].values, last["eval_spectral_target"].values)
    out["resolved_bandwidth"] = _finite(resolved_bandwidth(fraction, metrics["k_upper"].values))
    if "eval_train_spectral_mse" in metrics:
        train_fraction = learned_fraction(last["eval_train_spectral_mse"].values,
                                          last["eval_train_spectral_target"].values)
        out["train_resolved_bandwidth"] = _finite(resolved_bandwidth(train_fraction,
                                                                     metrics["k_upper"].values))
    if "eval_train_rel_mse" in metrics:
        out["gap"] = _finite(last["eval_rel_mse"] - last["eval_train_rel_mse"])
    history = metrics["eval_rel_mse"].values[: row + 1]
    history = history[np.isfinite(history)]
    if history.size and final_error is not None:
        out["rose_from_best"] = bool(final_error > (1 + ROSE_FROM_BEST) * history.min())
    return out


def mean_and_spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof = 1) of the finite values; spread None with
    fewer than two, both None with none."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return None, None
    spread = float(finite.std(ddof=1)) if finite.size >= 2 else None
    return float(finite.mean()), spread


def experiment_row(experiment: str, runs: Sequence[str], summaries: Sequence[dict[str, Any]],
                   loss_type: str, decoder_type: str) -> dict[str, Any]:
    """One row of the table from the summaries of an experiment's runs (its seeds)."""
    statuses = sorted({s["status"] for s in summaries})
    steps = {s["step"] for s in summaries}
    row: dict[str, Any] = {
        "experiment": experiment, "n_seeds": len(summaries), "status": "/".join(statuses),
        "loss_type": loss_type, "decoder_type": decoder_type,
        "step": steps.pop() if len(steps) == 1 else "/".join(str(s) for s in sorted(steps, key=str)),
        "rose_from_best": sum(bool(s["rose_from_best"]) for s in summaries),
        "runs": ";".join(runs),
    }
    for name in STATISTICS:
        row[name], row[f"{name}_spread"] = mean_and_spread([s[name] for s in summaries])
    return row


def significance(a: dict[str, Any], b: dict[str, Any], statistic: str = "test_rel_mse") -> str:
    """"n.s." when |mean_a − mean_b| ≤ spread_a + spread_b, "sig" when larger, "-" when a mean
    or a spread is missing (module docstring)."""
    values = (a.get(statistic), b.get(statistic), a.get(f"{statistic}_spread"),
              b.get(f"{statistic}_spread"))
    if any(v is None for v in values):
        return UNDECIDED
    mean_a, mean_b, spread_a, spread_b = values
    return NOT_SIGNIFICANT if abs(mean_a - mean_b) <= spread_a + spread_b else SIGNIFICANT


def rank(rows: list[dict[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """Rows sorted by mean test relative MSE (rows without one last), numbered from 1, with
    ``vs_baseline`` (against the row of experiment ``baseline``) and ``vs_above``."""

    def key(row):
        value = row.get("test_rel_mse")
        return (value is None, value if value is not None else 0.0)

    ordered = sorted(rows, key=key)
    base = next((r for r in ordered if r["experiment"] == baseline), None)
    for i, row in enumerate(ordered):
        row["rank"] = i + 1
        row["vs_baseline"] = (UNDECIDED if base is None or row is base
                              else significance(row, base))
        row["vs_above"] = UNDECIDED if i == 0 else significance(row, ordered[i - 1])
    return ordered


def _cell(value, column: str = "") -> str:
    if isinstance(value, float):
        # A bandwidth is a wavenumber |n| of a few to a few hundred: no exponent needed.
        return f"{value:.3g}" if "resolved_bandwidth" in column else f"{value:.3e}"
    return "-" if value is None else str(value)


def format_table(rows: list[dict[str, Any]], printed=PRINTED) -> str:
    """The printed table: one line per experiment, ``mean ± spread`` where there is a spread;
    ``printed`` gives the (column, title) pairs."""
    header = [title for _, title in printed]
    lines = [header]
    for row in rows:
        cells = []
        for column, _ in printed:
            text = _cell(row.get(column), column)
            spread = row.get(f"{column}_spread")
            if column in STATISTICS and spread is not None:
                text += f" ± {spread:.2g}" if "resolved_bandwidth" in column else f" ± {spread:.1e}"
            cells.append(text)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def write_csv(rows: list[dict[str, Any]], path: Path, columns: Sequence[str] = COLUMNS) -> None:
    """``ranking.csv``: :data:`COLUMNS`, empty cells where a value is missing."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
