"""Per-step training metrics -> the rows of the run store's ``step`` dimension.

Row r covers the steps in ``(train_steps[r-1], train_steps[r]]``. A row holds the mean of
each loss term, the loss and the gradient norm over those steps (a smoother and more honest
curve than one step's value), and the learning rate and lambda_grad in force at its last step.
Partial rows are carried across host calls, and across a checkpoint (``snapshot`` /
``restore``), so a resumed run writes exactly the rows an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

# Values that are a setting in force, not an average over the row's steps.
_LAST_VALUE = ("learning_rate", "lambda_grad")


class TrainRowAggregator:
    def __init__(self, train_steps: np.ndarray):
        self.train_steps = np.asarray(train_steps, np.int64)
        self.n_rows = 0  # rows completed and handed out
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, steps: np.ndarray, metrics: dict[str, np.ndarray], wall_time: float
            ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Absorb per-step metrics of consecutive ``steps``; yield ``(first_row, rows)`` blocks."""
        steps = np.asarray(steps, np.int64)
        if not len(steps) or self.n_rows >= len(self.train_steps):
            return
        # Row of each step: the first row whose end step is >= the step.
        row_of = np.searchsorted(self.train_steps, steps, side="left")
        block: dict[str, list[float]] = {}
        first_row = self.n_rows
        for row in np.unique(row_of):
            sel = row_of == row
            for name, values in metrics.items():
                v = values[sel]
                if name in _LAST_VALUE:
                    self.sums[name] = float(v[-1])
                else:
                    self.sums[name] = self.sums.get(name, 0.0) + float(v.sum())
            self.count += int(sel.sum())
            if row < len(self.train_steps) and steps[sel][-1] == self.train_steps[row]:
                for name, total in self.sums.items():
                    value = total if name in _LAST_VALUE else total / self.count
                    block.setdefault(name, []).append(value)
                block.setdefault("wall_time", []).append(wall_time)
                self.n_rows += 1
                self.sums, self.count = {}, 0
        if block:
            yield first_row, {k: np.asarray(v, np.float64) for k, v in block.items()}

    def snapshot(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "sums": dict(self.sums), "count": self.count}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.n_rows = int(snapshot["n_rows"])
        self.sums = {k: float(v) for k, v in snapshot["sums"].items()}
        self.count = int(snapshot["count"])
