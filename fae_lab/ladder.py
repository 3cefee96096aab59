"""The bottleneck ladder's table: how far up in |n| each rung learned its training fields.

Rungs are compared on the training split (``eval_train_*``): the rungs without an encoder
have no test numbers, and the FAE's training split makes the comparison like for like. The
statistics are :mod:`fae_lab.ranking`'s (mean and seed spread of the training-split relative
MSE and of the resolved bandwidth, :mod:`fae_lab.bands`). A rung resolving far more than the
next one up names the bottleneck. NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fae_lab.ranking import write_csv

# Bottom to top: a rung resolving far more than the next one names the bottleneck.
RUNG_ORDER = ("decoder_alone", "auto_decoder", "fae")
LADDER_COLUMNS = ("rung", "experiment", "n_seeds", "status", "step",
                  "train_rel_mse", "train_rel_mse_spread",
                  "train_resolved_bandwidth", "train_resolved_bandwidth_spread",
                  "test_rel_mse", "test_rel_mse_spread", "runs")
# The printed ladder: (column, title).
LADDER_PRINTED = (("rung", "rung"), ("experiment", "experiment"), ("n_seeds", "seeds"),
                  ("status", "status"), ("step", "step"), ("train_rel_mse", "train_rel_mse"),
                  ("train_resolved_bandwidth", "train_resolved_|n|"),
                  ("test_rel_mse", "test_rel_mse"))


def ladder_rows(rows: Sequence[dict]) -> list[dict]:
    """The table's rows of the ladder (every rung's experiments), bottom rung first."""
    ladder = [r for r in rows if r.get("rung") in RUNG_ORDER]
    return sorted(ladder, key=lambda r: (RUNG_ORDER.index(r["rung"]), r["experiment"]))


def write_ladder_csv(rows: Sequence[dict], path: Path) -> None:
    """``ladder.csv``: :data:`LADDER_COLUMNS`, bottom rung first."""
    write_csv(list(rows), path, LADDER_COLUMNS)
