"""Conclusions of a phase recomputed from its run stores: which differences exceed the seed spread.

:func:`rank_stores` rebuilds a phase's table from what is on disk, not from what the training
returned: the runs under a directory are grouped by experiment (``<experiment>`` or
``<experiment>_s<i>``, :func:`fae_lab.phase.seed_run_name`), each run is summarised from its
``final.json`` and ``metrics.zarr`` (:func:`fae_lab.ranking.run_summary`) and the experiments
are ranked with their seed spreads (:func:`fae_lab.ranking.rank`).

:func:`compare` sets one experiment against a reference (the baseline, or the next rung of
the ladder) on one statistic, with :func:`fae_lab.ranking.significance`'s rule: a difference
is significant ("sig") when

    |mean_a − mean_b| > spread_a + spread_b

(the spreads are the seeds' sample standard deviations), "n.s." when not, and "-" when a
side has fewer than two seeds with a value. NumPy, xarray and zarr only: no JAX, no Panel.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fae_lab.errors import UsageError
from fae_lab.ranking import SIGNIFICANT, experiment_row, rank, run_summary, significance
from fae_lab.store.runs import list_runs

# What each compared statistic means, and which direction is better.
LOWER_IS_BETTER = {"test_rel_mse": True, "high_freq_mse": True, "resolved_bandwidth": False,
                   "train_rel_mse": True, "train_resolved_bandwidth": False,
                   "sharpest_scale_mse": True, "gap": True}
LABELS = {"test_rel_mse": "test relative MSE", "high_freq_mse": "high-band MSE",
          "resolved_bandwidth": "resolved bandwidth |n|", "train_rel_mse": "training-split relative MSE",
          "train_resolved_bandwidth": "training-split resolved bandwidth |n|",
          "sharpest_scale_mse": "MSE of the sharpest scale", "gap": "generalisation gap"}


class NoStores(UsageError):
    """No finished run store of the experiments asked for: nothing to conclude from."""


def runs_of(experiment: str, run_names: Sequence[str]) -> list[str]:
    """The runs of ``experiment`` among ``run_names``: ``experiment`` itself (one seed) or
    ``experiment_s0``, ``experiment_s1`` ... (several), in seed order."""
    seeded = re.compile(re.escape(experiment) + r"_s(\d+)")
    found = sorted((int(m.group(1)), name) for name in run_names if (m := seeded.fullmatch(name)))
    return [name for _, name in found] or [name for name in run_names if name == experiment]


def _decoder(config: dict) -> str:
    model = config.get("model") or {}
    decoder = str(model.get("decoder_type", "?"))
    return decoder + (f"/{model.get('rff_location')}" if decoder == "rff_output" else "")


def rank_stores(runs_dir: str | Path, experiments: Sequence[str]) -> list[dict]:
    """The ranked rows (:func:`fae_lab.ranking.rank`, baseline = ``experiments[0]``) of the
    experiments that have runs under ``runs_dir``, read from their stores; each row also has
    ``rung`` (the ladder's, from ``config.json``).

    Raises :class:`NoStores` when not one run of these experiments has finished.
    """
    from fae_lab.store import open_run  # xarray / zarr

    root = Path(runs_dir)
    paths = {path.relative_to(root).as_posix(): path for path in list_runs(root)} if root.is_dir() else {}
    rows, finished = [], 0
    for experiment in experiments:
        names = runs_of(experiment, list(paths))
        if not names:
            continue
        readers = [open_run(paths[name]) for name in names]
        finished += sum(r.final is not None for r in readers)
        summaries = [run_summary(paths[name]) for name in names]
        config = readers[0].config
        row = experiment_row(experiment, names, summaries, (config.get("loss") or {}).get("loss_type", "?"),
                             _decoder(config))
        row["rung"] = readers[0].rung
        rows.append(row)
    if not finished:
        raise NoStores(f"no finished run store of {', '.join(experiments)} under {root}: nothing to conclude")
    return rank(rows, baseline=experiments[0])


@dataclass(frozen=True)
class Comparison:
    """``experiment`` against ``reference`` on ``statistic`` (means over seeds, spreads)."""

    experiment: str
    reference: str
    statistic: str
    mean: float | None
    spread: float | None
    reference_mean: float | None
    reference_spread: float | None
    mark: str  # "sig", "n.s." or "-"

    @property
    def significant(self) -> bool:
        return self.mark == SIGNIFICANT

    @property
    def better(self) -> bool | None:
        """Whether the experiment's mean is on the better side of the reference's (None when a
        mean is missing or they are equal)."""
        if self.mean is None or self.reference_mean is None or self.mean == self.reference_mean:
            return None
        return (self.mean < self.reference_mean) == LOWER_IS_BETTER.get(self.statistic, True)

    @property
    def relative(self) -> float | None:
        """(mean − reference mean) / |reference mean|; None without both or with a zero reference."""
        if self.mean is None or self.reference_mean is None or self.reference_mean == 0:
            return None
        return (self.mean - self.reference_mean) / abs(self.reference_mean)

    def sentence(self) -> str:
        def value(mean, spread):
            if mean is None:
                return "-"
            text = f"{mean:.4g}"
            return text + (f" ± {spread:.2g}" if spread is not None and math.isfinite(spread) else "")

        change = "" if self.relative is None else f" ({self.relative:+.1%})"
        verdict = {"sig": "beyond the seed spread", "n.s.": "within the seed spread",
                   "-": "undecided (fewer than two seeds)"}[self.mark]
        side = {True: "better", False: "worse", None: "equal"}[self.better]
        return (f"{self.experiment} vs {self.reference}, {LABELS.get(self.statistic, self.statistic)}: "
                f"{value(self.mean, self.spread)} against {value(self.reference_mean, self.reference_spread)}"
                f"{change}, {side}, {verdict} [{self.mark}]")


def compare(rows: Sequence[dict], experiment: str, reference: str, statistic: str) -> Comparison:
    """``experiment``'s row against ``reference``'s on ``statistic`` (module docstring)."""
    by_name = {row["experiment"]: row for row in rows}
    if experiment not in by_name or reference not in by_name:
        missing = experiment if experiment not in by_name else reference
        raise KeyError(f"no row for experiment {missing!r}")
    a, b = by_name[experiment], by_name[reference]
    return Comparison(experiment, reference, statistic, a.get(statistic), a.get(f"{statistic}_spread"),
                      b.get(statistic), b.get(f"{statistic}_spread"), significance(a, b, statistic))


def against_baseline(rows: Sequence[dict], baseline: str,
                     statistics: Sequence[str] = ("test_rel_mse", "high_freq_mse", "resolved_bandwidth"),
                     ) -> list[Comparison]:
    """Every other experiment with a test split against ``baseline``, on each of ``statistics``."""
    return [compare(rows, row["experiment"], baseline, statistic)
            for row in rows if row["experiment"] != baseline and row.get("test_rel_mse") is not None
            for statistic in statistics]
