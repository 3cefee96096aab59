"""Pure transforms behind the views: xarray / NumPy / pandas in, the same out.

Notation (docs/metrics.md): E(s, k) is the error power in radial wavenumber bin k at evaluation
step s (``eval_spectral_mse``, averaged over the training scales, or
``eval_scale_spectral_mse`` of one scale); its bins sum to the MSE of that evaluation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from fae_lab.bands import learned_fraction, resolved_bandwidth
from fae_lab.store import EVAL_CURVES, TAG_NAMES

ALL_TRAINING_SCALES = -1  # the ``scale`` argument meaning "averaged over the training scales"


def spectral_error(evaluations: xr.Dataset, scale: int = ALL_TRAINING_SCALES) -> xr.DataArray:
    """E(s, k), dims ``(eval_step, k)``: over the training scales (``scale=-1``) or of one scale."""
    if scale == ALL_TRAINING_SCALES:
        return evaluations["eval_spectral_mse"]
    return evaluations["eval_scale_spectral_mse"].sel(scale=scale, drop=True)


def spectral_target(evaluations: xr.Dataset, scale: int = ALL_TRAINING_SCALES) -> xr.DataArray:
    """T(s, k), the target's power per bin, dims ``(eval_step, k)``, like :func:`spectral_error`."""
    if scale == ALL_TRAINING_SCALES:
        return evaluations["eval_spectral_target"]
    return evaluations["eval_scale_spectral_target"].sel(scale=scale, drop=True)


def learned_fraction_by_k(evaluations: xr.Dataset,
                          scale: int = ALL_TRAINING_SCALES) -> xr.DataArray:
    """L(s, k) = 1 − E(s, k) / T(s, k), dims ``(eval_step, k)``; NaN where T = 0
    (:func:`fae_lab.bands.learned_fraction`)."""
    error = spectral_error(evaluations, scale)
    fraction = learned_fraction(error.values, spectral_target(evaluations, scale).values)
    return xr.DataArray(fraction, coords=error.coords, dims=error.dims, name="learned_fraction",
                        attrs={"long_name": "learned fraction 1 - E/T"})


def bandwidth_over_training(fraction: xr.DataArray, k_upper: np.ndarray) -> np.ndarray:
    """Resolved bandwidth of every evaluation, ``(eval_step,)``: the largest |n| up to which
    L stays >= 0.5 (:func:`fae_lab.bands.resolved_bandwidth`; ``k_upper`` the bins' upper
    edges)."""
    if fraction.sizes.get("eval_step", 0) == 0:
        return np.zeros(0)
    return resolved_bandwidth(fraction.values, k_upper)


def evaluation_at_step(steps: np.ndarray, step: int) -> int:
    """Index of the newest evaluation at or before ``step`` among ``steps`` (increasing);
    -1 when every evaluation is later (or there is none)."""
    return int(np.searchsorted(np.asarray(steps), step, side="right")) - 1


def band_error_relative_to_first(error: xr.DataArray) -> xr.DataArray:
    """E(s, k) / E(s_0, k), dims ``(eval_step, k)``, s_0 the first evaluation.

    1 where a band has not moved since the first evaluation (a flat-lining band), < 1 where it
    has been learned. Bins with no error power at s_0 give NaN.
    """
    if error.sizes["eval_step"] == 0:
        return error.copy()
    first = error.isel(eval_step=0, drop=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = error / first.where(first > 0)
    ratio.name = "relative_error"
    ratio.attrs = {"long_name": "error power relative to the first evaluation"}
    return ratio


def evaluations_to_draw(n_evaluations: int, n_curves: int) -> np.ndarray:
    """Indices of at most ``n_curves`` evaluations, evenly spread, always the first and newest.

    ``(m,)`` int, strictly increasing, m = min(n_evaluations, max(n_curves, 1)) (at least 2
    when n_curves >= 2 and two exist).
    """
    if n_evaluations <= 0:
        return np.zeros(0, dtype=int)
    n = min(n_evaluations, max(int(n_curves), 1))
    if n == 1:
        return np.array([n_evaluations - 1])
    return np.unique(np.round(np.linspace(0, n_evaluations - 1, n)).astype(int))


def spectral_difference(a: xr.DataArray, b: xr.DataArray) -> xr.Dataset:
    """Two runs' E(s, k) on the evaluation steps they share.

    Returns a Dataset over ``(eval_step, k)`` with ``a``, ``b``, ``difference`` = b − a and
    ``log10_ratio`` = log10(b / a) (negative where b has the smaller error). The runs must have
    the same wavenumber bins.
    """
    if a.sizes["k"] != b.sizes["k"] or not np.allclose(a["k"].values, b["k"].values):
        raise ValueError("the two runs have different wavenumber bins (resolution or "
                         "--spectral-n-bins differ); their spectra cannot be subtracted")
    k = a["k"].values
    a, b = xr.align(a.drop_vars("k"), b.drop_vars("k"), join="inner")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log10(b / a)
    out = xr.Dataset({"a": a, "b": b, "difference": b - a, "log10_ratio": log_ratio})
    return out.assign_coords(k=k)


def reconstruction_error(truth: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """e = g(f(u)) − u, elementwise; any matching shapes (e.g. ``(R, R)``)."""
    return np.asarray(recon, dtype=np.float64) - np.asarray(truth, dtype=np.float64)


def per_scale_table(evaluations: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """Error per scale at each run's newest evaluation, one row per (run, scale).

    Columns: ``run``, ``scale``, ``time``, ``held_out`` (bool), ``split`` ("training" or
    "held-out"), ``eval_step``, ``mse`` (``eval_scale_mse``) and ``rel_mse``
    (``eval_scale_rel_mse``, NaN if the run lacks it). Runs without an evaluation are left out.
    """
    rows: list[dict[str, Any]] = []
    for run, ds in evaluations.items():
        if ds.sizes.get("eval_step", 0) == 0:
            continue
        last = ds.isel(eval_step=-1)
        rel = last["eval_scale_rel_mse"].values if "eval_scale_rel_mse" in last else None
        for i, scale in enumerate(last["scale"].values):
            held_out = bool(last["held_out"].values[i])
            rows.append({
                "run": run, "scale": int(scale), "time": float(last["time"].values[i]),
                "held_out": held_out, "split": "held-out" if held_out else "training",
                "eval_step": int(last["eval_step"].values),
                "mse": float(last["eval_scale_mse"].values[i]),
                "rel_mse": float(rel[i]) if rel is not None else float("nan"),
            })
    columns = ["run", "scale", "time", "held_out", "split", "eval_step", "mse", "rel_mse"]
    return pd.DataFrame(rows, columns=columns)


def select_runs(tags: Mapping[str, Mapping[str, str]],
                allowed: Mapping[str, Collection[str]]) -> list[str]:
    """Runs whose every tag is allowed, in the order given.

    ``tags`` maps run -> {tag name -> value} (tag names of :data:`fae_lab.config.TAG_NAMES`);
    ``allowed`` maps a tag name to the values let through (a tag name not in ``allowed`` is not
    filtered on).
    """
    return [run for run, values in tags.items()
            if all(values.get(tag) in allowed[tag] for tag in TAG_NAMES if tag in allowed)]


def colour_keys(tags: Mapping[str, Mapping[str, str]], colour_by: str) -> dict[str, str]:
    """The legend entry of each run: its own name (``colour_by="run"``) or one of its tags."""
    if colour_by == "run":
        return {run: run for run in tags}
    if colour_by not in TAG_NAMES:
        raise ValueError(f"colour_by must be 'run' or one of {', '.join(TAG_NAMES)}")
    return {run: values[colour_by] for run, values in tags.items()}


def training_frame(training: xr.Dataset, terms: Iterable[str]) -> pd.DataFrame:
    """Training-log rows as a frame: ``step``, ``train_loss`` and ``train_loss_<term>`` for each
    of ``terms`` (NaN where a run lacks that term)."""
    n = training.sizes.get("step", 0)
    frame = {"step": training["step"].values.astype(np.int64) if n else np.zeros(0, np.int64)}
    for name in ["train_loss", *(f"train_loss_{t}" for t in terms)]:
        frame[name] = training[name].values if name in training else np.full(n, np.nan)
    return pd.DataFrame(frame)


def evaluation_frame(evaluations: xr.Dataset, k_upper: np.ndarray | None = None) -> pd.DataFrame:
    """The scalar evaluation curves as a frame: ``step`` (of each evaluation),
    :data:`EVAL_CURVES` and two derived curves; the column is named like the training log's, so
    plots share the axis.

    ``resolved_bandwidth``: the largest |n| up to which 1 − E/T stays >= 0.5
    (:func:`bandwidth_over_training`; needs ``eval_spectral_mse`` / ``eval_spectral_target``
    and the bins' upper edges ``k_upper``). ``generalisation_gap``: ``eval_rel_mse −
    eval_train_rel_mse``, test minus training-split relative MSE. NaN where the inputs are
    missing.
    """
    n = evaluations.sizes.get("eval_step", 0)
    steps = evaluations["eval_step"].values if n else np.zeros(0, np.int64)
    frame = {"step": steps.astype(np.int64)}
    for name in EVAL_CURVES:
        frame[name] = evaluations[name].values if name in evaluations else np.full(n, np.nan)
    frame["resolved_bandwidth"] = np.full(n, np.nan)
    if n and k_upper is not None and {"eval_spectral_mse", "eval_spectral_target"} <= set(evaluations):
        frame["resolved_bandwidth"] = bandwidth_over_training(
            learned_fraction_by_k(evaluations), k_upper)
    frame["generalisation_gap"] = np.full(n, np.nan)
    if n and {"eval_rel_mse", "eval_train_rel_mse"} <= set(evaluations):
        frame["generalisation_gap"] = (evaluations["eval_rel_mse"].values
                                       - evaluations["eval_train_rel_mse"].values)
    return pd.DataFrame(frame)


def step_bin_cells(steps: np.ndarray, start: int, stop: int, k: np.ndarray, k_lower: np.ndarray,
                   k_upper: np.ndarray) -> dict[str, np.ndarray]:
    """Quads of a step x |n| map for rows ``start:stop`` of ``steps``, one per (row, bin).

    Row i spans [(s_{i-1} + s_i)/2, s_i + (s_i - s_{i-1})/2] (the first row as wide as the
    second gap, or 1), bin b spans [k_lower_b, k_upper_b]; ``step`` and ``k`` name each cell.
    """
    steps = np.asarray(steps, np.float64)
    previous = np.concatenate([[steps[0] - (steps[1] - steps[0] if steps.size > 1 else 1)], steps[:-1]])
    index = np.arange(start, stop)
    half = (steps[index] - previous[index]) / 2
    n_bins = len(k)
    return {"left": np.repeat(steps[index] - half, n_bins), "right": np.repeat(steps[index] + half, n_bins),
            "bottom": np.tile(k_lower, index.size), "top": np.tile(k_upper, index.size),
            "step": np.repeat(steps[index], n_bins), "k": np.tile(k, index.size)}
