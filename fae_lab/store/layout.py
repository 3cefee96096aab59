"""Shape of a run store: schedules, coordinates and the table of variables.

Everything a run will write is known before its first step (docs/run-store.md), so the writer preallocates every array from a :class:`StoreLayout`
and later only fills rows. NumPy only.

Dimensions: ``step`` (n_train training-log rows), ``eval_step`` (n_eval evaluations),
``scale`` (T), ``k`` (n_bins radial wavenumber bins), ``sample`` (S reconstruction
samples), ``y`` and ``x`` (R each).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

METRICS_STORE = "metrics.zarr"
RECONSTRUCTIONS_STORE = "reconstructions.zarr"
CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.json"
FINAL_FILE = "final.json"
CHECKPOINTS_DIR = "checkpoints"
# Everything a run owns inside its directory; --overwrite removes exactly these.
RUN_FILES = (CONFIG_FILE, PROGRESS_FILE, METRICS_STORE, RECONSTRUCTIONS_STORE,
             FINAL_FILE, CHECKPOINTS_DIR)

STATUSES = ("running", "finished", "failed", "diverged")

# Rows per chunk along ``step`` and ``eval_step``: at most TRAIN_CHUNK_ROWS / EVAL_CHUNK_ROWS,
# at most CHUNK_BYTES of float64 per chunk, never more rows than the dimension has. A run's
# metrics are small (a few thousand training rows, a few hundred evaluations of a few floats),
# so most variables are one chunk: a dashboard reading a page of runs pays zarr-python's fixed
# cost per chunk, not per byte (benchmarks/RESULTS.md). A write of some rows of a chunk rewrites
# the whole chunk file, atomically (zarr's LocalStore writes a temporary file and renames it),
# so rows become visible whole at any chunk size; CHUNK_BYTES bounds what one write rewrites.
# Stores written with other chunks (64 evaluation rows and 256 training rows, before
# 2026-11-30) read the same: readers take the chunks from the metadata (docs/run-store.md).
TRAIN_CHUNK_ROWS = 4096
EVAL_CHUNK_ROWS = 1024
CHUNK_BYTES = 256 * 1024


def chunk_rows(n_rows: int, row_values: int, max_rows: int) -> int:
    """Rows per chunk of a float64 variable of ``n_rows`` rows of ``row_values`` values each:
    ``min(n_rows, max_rows, CHUNK_BYTES // (8 row_values))``, at least 1."""
    return max(1, min(n_rows, max_rows, CHUNK_BYTES // (8 * max(row_values, 1))))


class Variable(NamedTuple):
    """One entry of the variable table: dimension names, ``long_name`` attr, ``seed_key`` attr."""

    dims: tuple[str, ...]
    long_name: str
    seed_key: str | None


TRAIN_VARIABLES: dict[str, Variable] = {
    "train_loss": Variable(("step",), "total training loss", "train/loss"),
    "grad_norm": Variable(("step",), "global gradient norm before clipping", None),
    "learning_rate": Variable(("step",), "learning rate", None),
    "wall_time": Variable(("step",), "seconds since the run started", None),
    "lambda_grad": Variable(("step",), "weight lambda_grad of the gradient term in force", None),
}

EVAL_VARIABLES: dict[str, Variable] = {
    "eval_mse": Variable(("eval_step",), "test MSE over the training scales", "eval/mse"),
    "eval_rel_mse": Variable(
        ("eval_step",), "test relative MSE sum(e^2)/sum(u^2) over the training scales",
        "eval/rel_mse"),
    "eval_scale_mse": Variable(("eval_step", "scale"), "test MSE per scale",
                               "eval/scale_mse_t{i}"),
    "eval_scale_rel_mse": Variable(("eval_step", "scale"), "test relative MSE per scale", None),
    "eval_spectral_mse": Variable(
        ("eval_step", "k"), "error power per radial wavenumber bin, over the training scales",
        "eval/spectral/mse_by_k"),
    "eval_spectral_target": Variable(
        ("eval_step", "k"), "target power per radial wavenumber bin, over the training scales",
        None),
    "eval_scale_spectral_mse": Variable(
        ("eval_step", "scale", "k"), "error power per radial wavenumber bin, per scale", None),
    "eval_scale_spectral_target": Variable(
        ("eval_step", "scale", "k"), "target power per radial wavenumber bin, per scale", None),
    "eval_low_freq_mse": Variable(
        ("eval_step",), "error power below the spectral cutoff, over the training scales",
        "eval/spectral/low_freq_mse"),
    "eval_high_freq_mse": Variable(
        ("eval_step",), "error power at or above the spectral cutoff, over the training scales",
        "eval/spectral/high_freq_mse"),
    "eval_high_freq_error_ratio": Variable(
        ("eval_step",), "high / (low + high) error power", "eval/spectral/high_freq_error_ratio"),
    "eval_wall_time": Variable(("eval_step",), "seconds since the run started", None),
}

# The training split's evaluation (a fixed subset of the training samples, docs/run-store.md):
# eval_train_<name> mirrors eval_<name> of the test split, the same quantity on those samples.
TRAIN_SPLIT_PREFIX = "eval_train_"
EVAL_VARIABLES.update({
    TRAIN_SPLIT_PREFIX + name.removeprefix("eval_"): Variable(
        variable.dims, "training-split " + variable.long_name.replace("test ", ""), None)
    for name, variable in list(EVAL_VARIABLES.items()) if name != "eval_wall_time"
})

RECONSTRUCTION_VARIABLES: dict[str, Variable] = {
    "truth": Variable(("sample", "scale", "y", "x"), "test field u", None),
    "recon": Variable(("eval_step", "sample", "scale", "y", "x"),
                      "reconstruction g(f(u)) at each evaluation", None),
}


def loss_term_variable(term: str) -> Variable:
    """Table entry of ``train_loss_<term>``."""
    return Variable(("step",), f"training loss term {term}", f"train/loss_{term}")


def train_schedule(max_steps: int, log_every: int) -> np.ndarray:
    """Steps of the training-log rows: log_every, 2 log_every, ... and max_steps. ``(n_train,)`` int64."""
    if max_steps < 1 or log_every < 1:
        raise ValueError(f"need max_steps >= 1 and log_every >= 1, got {max_steps}, {log_every}")
    steps = np.arange(log_every, max_steps + 1, log_every, dtype=np.int64)
    if steps.size == 0 or steps[-1] != max_steps:
        steps = np.append(steps, np.int64(max_steps))
    return steps


def eval_schedule(max_steps: int, eval_every: int) -> np.ndarray:
    """Steps of the evaluations: 0, eval_every, 2 eval_every, ... and max_steps. ``(n_eval,)`` int64."""
    if max_steps < 0 or eval_every < 1:
        raise ValueError(f"need max_steps >= 0 and eval_every >= 1, got {max_steps}, {eval_every}")
    steps = np.arange(0, max_steps + 1, eval_every, dtype=np.int64)
    if steps[-1] != max_steps:
        steps = np.append(steps, np.int64(max_steps))
    return steps


def _frozen(values, dtype) -> np.ndarray:
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class StoreLayout:
    """Everything the writer needs to preallocate a run's stores.

    Arrays are copied and made read-only. Shapes: ``train_steps (n_train,)``,
    ``eval_steps (n_eval,)`` (both int64, strictly increasing), ``scales, times, sigmas,
    held_out (T,)`` (``sigmas`` NaN where unknown), ``k_centres, k_lower, k_upper
    (n_bins,)``, ``recon_samples (S,)`` (indices of the fixed test samples in the data file).
    """

    train_steps: np.ndarray
    eval_steps: np.ndarray
    loss_terms: tuple[str, ...]
    scales: np.ndarray
    times: np.ndarray
    sigmas: np.ndarray
    held_out: np.ndarray
    k_centres: np.ndarray
    k_lower: np.ndarray
    k_upper: np.ndarray
    spectral_cutoff: float
    resolution: int
    recon_samples: np.ndarray
    run_name: str
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, dtype in (("train_steps", np.int64), ("eval_steps", np.int64),
                            ("scales", np.int64), ("times", np.float64),
                            ("sigmas", np.float64), ("held_out", np.bool_),
                            ("k_centres", np.float64), ("k_lower", np.float64),
                            ("k_upper", np.float64), ("recon_samples", np.int64)):
            set_(self, name, _frozen(getattr(self, name), dtype))
        set_(self, "loss_terms", tuple(str(t) for t in self.loss_terms))
        set_(self, "tags", tuple(str(t) for t in self.tags))
        set_(self, "spectral_cutoff", float(self.spectral_cutoff))
        set_(self, "resolution", int(self.resolution))
        set_(self, "run_name", str(self.run_name))
        for name in ("train_steps", "eval_steps"):
            steps = getattr(self, name)
            if steps.ndim != 1 or steps.size == 0 or np.any(np.diff(steps) <= 0):
                raise ValueError(f"{name} must be a non-empty strictly increasing 1-D array")
        for group in (("scales", "times", "sigmas", "held_out"),
                      ("k_centres", "k_lower", "k_upper")):
            shapes = {getattr(self, name).shape for name in group}
            if len(shapes) != 1 or len(next(iter(shapes))) != 1:
                raise ValueError(f"{', '.join(group)} must be 1-D of one length, got {shapes}")
        if self.recon_samples.ndim != 1 or self.resolution < 1:
            raise ValueError("recon_samples must be 1-D and resolution >= 1")
        for term in self.loss_terms:
            if not term.isidentifier():
                raise ValueError(f"loss term {term!r} is not a valid name")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreLayout):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_train(self) -> int:
        return int(self.train_steps.size)

    @property
    def n_eval(self) -> int:
        return int(self.eval_steps.size)

    @property
    def n_scales(self) -> int:
        return int(self.scales.size)

    @property
    def n_bins(self) -> int:
        return int(self.k_centres.size)

    @property
    def n_samples(self) -> int:
        return int(self.recon_samples.size)

    @property
    def max_steps(self) -> int:
        return int(max(self.train_steps[-1], self.eval_steps[-1]))

    def dim_sizes(self) -> dict[str, int]:
        """Length of every dimension."""
        return {"step": self.n_train, "eval_step": self.n_eval, "scale": self.n_scales,
                "k": self.n_bins, "sample": self.n_samples, "y": self.resolution,
                "x": self.resolution}

    def metric_variables(self) -> dict[str, Variable]:
        """Every variable of ``metrics.zarr``: the training ones (with one ``train_loss_<term>``
        per loss term) followed by the evaluation ones."""
        table = dict(TRAIN_VARIABLES)
        for term in self.loss_terms:
            table[f"train_loss_{term}"] = loss_term_variable(term)
        table.update(EVAL_VARIABLES)
        return table

    def shape_of(self, variable: Variable) -> tuple[int, ...]:
        sizes = self.dim_sizes()
        return tuple(sizes[d] for d in variable.dims)


def final_metrics(row: Mapping[str, Any], scales: np.ndarray, held_out: np.ndarray,
                  k_centres: np.ndarray, *, step: int, status: str) -> dict[str, Any]:
    """``final.json`` (docs/run-store.md) from one evaluation row.

    ``row`` holds that row's ``eval_mse``, ``eval_rel_mse``, ``eval_scale_mse (T,)``,
    ``eval_spectral_mse (n_bins,)`` and the three ``eval_*_freq_*`` values. The scale
    averages are plain means of ``eval_scale_mse`` over the training / held-out scales
    (NaN when there are none; written as null).
    """
    scale_mse = np.asarray(row["eval_scale_mse"], dtype=np.float64)
    held_out = np.asarray(held_out, dtype=bool)
    scales = np.asarray(scales)
    final: dict[str, Any] = {
        "final/test_rel_mse": float(row["eval_rel_mse"]),
        "final/test_mse": float(row["eval_mse"]),
        "final/train_times_avg_mse": _mean_or_nan(scale_mse[~held_out]),
        "final/held_out_avg_mse": _mean_or_nan(scale_mse[held_out]),
    }
    for scale, value, out in zip(scales, scale_mse, held_out, strict=True):
        kind = "held_out_mse" if out else "train_time_mse"
        final[f"final/{kind}_t{int(scale)}"] = float(value)
    final.update({
        "final/spectral/low_freq_mse": float(row["eval_low_freq_mse"]),
        "final/spectral/high_freq_mse": float(row["eval_high_freq_mse"]),
        "final/spectral/high_freq_error_ratio": float(row["eval_high_freq_error_ratio"]),
        "final/spectral/mse_by_k": [float(v) for v in np.asarray(row["eval_spectral_mse"])],
        "final/spectral/k": [float(v) for v in np.asarray(k_centres)],
        "final/step": int(step),
        "final/status": str(status),
    })
    if "eval_train_rel_mse" in row:  # the training split (stores written before it lack it)
        final.update({
            "final/train_rel_mse": float(row["eval_train_rel_mse"]),
            "final/train_mse": float(row["eval_train_mse"]),
            "final/train/spectral/high_freq_error_ratio": float(row["eval_train_high_freq_error_ratio"]),
            "final/train/spectral/mse_by_k": [float(v) for v in np.asarray(row["eval_train_spectral_mse"])],
            "final/train/spectral/target_by_k": [float(v) for v in np.asarray(row["eval_train_spectral_target"])],
        })
    return final


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan
