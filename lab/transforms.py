"""Pure transforms behind the views: xarray / NumPy / pandas in, the same out.

Notation (docs/metrics.md): E(s, k) is the error power in radial wavenumber bin k at evaluation
step s (``eval_spectral_mse``, averaged over the training scales, or
``eval_scale_spectral_mse`` of one scale); its bins sum to the MSE of that evaluation. Each
``eval_<name>`` of the test split has ``eval_train_<name>`` of the training split
(:func:`split_variable`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from fae_lab.bands import learned_fraction, resolved_bandwidth
from fae_lab.config import RUNGS
from fae_lab.store import EVAL_CURVES, TAG_NAMES
from fae_lab.store.layout import TRAIN_SPLIT_PREFIX

ALL_TRAINING_SCALES = -1  # the ``scale`` argument meaning "averaged over the training scales"
# The two evaluated splits (docs/run-store.md): eval_<name> (test) and eval_train_<name>.
TEST_SPLIT, TRAINING_SPLIT = "test", "train"
SPLIT_OPTIONS = {"test": TEST_SPLIT, "training split": TRAINING_SPLIT}  # label -> split
# What the sidebar filters and colours on: the seed's four tags, and the run's ladder rung
# (RunReader.rung: config.json's "rung", or a fifth tag; an FAE where neither is).
FILTER_TAGS = (*TAG_NAMES, "rung")
# Rungs of the bottleneck ladder that cannot reconstruct an unseen sample: NaN test split.
RUNGS_WITHOUT_ENCODER = tuple(rung for rung in RUNGS if rung != "fae")


def split_variable(name: str, split: str = TEST_SPLIT) -> str:
    """The store variable of ``name`` (an ``eval_<name>``) on ``split``: itself for the test
    split, ``eval_train_<name>`` for the training split (docs/run-store.md)."""
    if split == TEST_SPLIT:
        return name
    if split != TRAINING_SPLIT:
        raise ValueError(f"split must be {TEST_SPLIT!r} or {TRAINING_SPLIT!r}, got {split!r}")
    return TRAIN_SPLIT_PREFIX + name.removeprefix("eval_")


def run_split(rung: str, split: str) -> str:
    """The split a run is drawn on: ``split``, except that a rung without an encoder
    (:data:`RUNGS_WITHOUT_ENCODER`: its test split is NaN) always uses the training split."""
    return TRAINING_SPLIT if rung in RUNGS_WITHOUT_ENCODER else split


def _spectral(evaluations: xr.Dataset, name: str, scale: int, split: str) -> xr.DataArray:
    """``name`` (``eval_spectral_mse`` / ``_target``) on ``split`` over the training scales, or
    its ``eval_scale_*`` form of one scale; dims ``(eval_step, k)``, NaN where the store lacks
    the variable (a store written before the training split)."""
    if scale != ALL_TRAINING_SCALES:
        name = name.replace("eval_", "eval_scale_", 1)
    name = split_variable(name, split)
    if name not in evaluations:
        n = evaluations.sizes.get("eval_step", 0)
        return xr.DataArray(np.full((n, evaluations.sizes.get("k", 0)), np.nan),
                            dims=("eval_step", "k"),
                            coords={"eval_step": evaluations["eval_step"].values if n else [],
                                    "k": evaluations["k"].values})
    variable = evaluations[name]
    return variable if scale == ALL_TRAINING_SCALES else variable.sel(scale=scale, drop=True)


def spectral_error(evaluations: xr.Dataset, scale: int = ALL_TRAINING_SCALES,
                   split: str = TEST_SPLIT) -> xr.DataArray:
    """E(s, k), dims ``(eval_step, k)``: over the training scales (``scale=-1``) or of one
    scale, on the test or the training split (NaN where the store lacks that split)."""
    return _spectral(evaluations, "eval_spectral_mse", scale, split)


def spectral_target(evaluations: xr.Dataset, scale: int = ALL_TRAINING_SCALES,
                    split: str = TEST_SPLIT) -> xr.DataArray:
    """T(s, k), the target's power per bin, dims ``(eval_step, k)``, like :func:`spectral_error`."""
    return _spectral(evaluations, "eval_spectral_target", scale, split)


def learned_fraction_by_k(evaluations: xr.Dataset, scale: int = ALL_TRAINING_SCALES,
                          split: str = TEST_SPLIT) -> xr.DataArray:
    """L(s, k) = 1 − E(s, k) / T(s, k), dims ``(eval_step, k)``, on ``split``; NaN where T = 0
    or the store lacks the split (:func:`fae_lab.bands.learned_fraction`)."""
    error = spectral_error(evaluations, scale, split)
    fraction = learned_fraction(error.values, spectral_target(evaluations, scale, split).values)
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

    ``tags`` maps run -> {tag name -> value} (tag names of :data:`FILTER_TAGS`: the seed's
    four of :data:`fae_lab.config.TAG_NAMES` and ``rung``); ``allowed`` maps a tag name to the
    values let through (a tag name not in ``allowed`` is not filtered on).
    """
    return [run for run, values in tags.items()
            if all(values.get(tag) in allowed[tag] for tag in FILTER_TAGS if tag in allowed)]


def colour_keys(tags: Mapping[str, Mapping[str, str]], colour_by: str) -> dict[str, str]:
    """The legend entry of each run: its own name (``colour_by="run"``) or one of its tags."""
    if colour_by == "run":
        return {run: run for run in tags}
    if colour_by not in FILTER_TAGS:
        raise ValueError(f"colour_by must be 'run' or one of {', '.join(FILTER_TAGS)}")
    return {run: values[colour_by] for run, values in tags.items()}


def training_columns(values: Mapping[str, np.ndarray], steps: np.ndarray,
                     terms: Iterable[str]) -> dict[str, np.ndarray]:
    """:func:`training_frame`'s columns from plain arrays: ``values`` maps variables of the
    training log to ``(n,)`` rows, ``steps`` ``(n,)`` their steps."""
    n = len(steps)
    columns = {"step": np.asarray(steps).astype(np.int64)}
    for name in ["wall_time", "train_loss", *(f"train_loss_{t}" for t in terms)]:
        columns[name] = np.asarray(values[name]) if name in values else np.full(n, np.nan)
    return columns


def training_frame(training: xr.Dataset, terms: Iterable[str]) -> pd.DataFrame:
    """Training-log rows as a frame: ``step``, ``wall_time`` (seconds since the run started;
    NaN unless the rows hold it), ``train_loss`` and ``train_loss_<term>`` for each of
    ``terms`` (NaN where a run lacks that term)."""
    n = training.sizes.get("step", 0)
    steps = training["step"].values if n else np.zeros(0, np.int64)
    return pd.DataFrame(training_columns({name: training[name].values for name in training.data_vars},
                                         steps, terms))


def evaluation_columns(values: Mapping[str, np.ndarray], steps: np.ndarray,
                       k_upper: np.ndarray | None = None,
                       split: str = TEST_SPLIT) -> dict[str, np.ndarray]:
    """:func:`evaluation_frame`'s columns from plain arrays: ``values`` maps evaluation
    variables to their rows (``(n, ...)``), ``steps`` ``(n,)`` the evaluations' steps."""
    n = len(steps)
    columns = {"step": np.asarray(steps).astype(np.int64),
               "wall_time": (np.asarray(values["eval_wall_time"]) if "eval_wall_time" in values
                             else np.full(n, np.nan))}
    for name in EVAL_CURVES:
        stored = split_variable(name, split)
        columns[name] = np.asarray(values[stored]) if stored in values else np.full(n, np.nan)
    columns["resolved_bandwidth"] = np.full(n, np.nan)
    error, target = (split_variable(name, split)
                     for name in ("eval_spectral_mse", "eval_spectral_target"))
    if n and k_upper is not None and error in values and target in values:
        columns["resolved_bandwidth"] = resolved_bandwidth(
            learned_fraction(values[error], values[target]), k_upper)
    columns["generalisation_gap"] = np.full(n, np.nan)
    if n and "eval_rel_mse" in values and "eval_train_rel_mse" in values:
        columns["generalisation_gap"] = (np.asarray(values["eval_rel_mse"])
                                         - np.asarray(values["eval_train_rel_mse"]))
    return columns


def evaluation_frame(evaluations: xr.Dataset, k_upper: np.ndarray | None = None,
                     split: str = TEST_SPLIT) -> pd.DataFrame:
    """The scalar evaluation curves as a frame: ``step`` (of each evaluation), ``wall_time``
    (``eval_wall_time``, NaN unless the rows hold it), :data:`EVAL_CURVES` and two derived
    curves; the column is named like the training log's, so
    plots share the axis.

    ``split``: the curves (and the bandwidth) of the test split (``eval_<name>``) or of the
    training split (``eval_train_<name>``, :func:`split_variable`), under the test split's
    column names. ``resolved_bandwidth``: the largest |n| up to which 1 − E/T stays >= 0.5
    (:func:`bandwidth_over_training`; needs the split's spectral error and target and the
    bins' upper edges ``k_upper``). ``generalisation_gap``: ``eval_rel_mse −
    eval_train_rel_mse``, test minus training-split relative MSE, whatever ``split``. NaN
    where the inputs are missing.
    """
    n = evaluations.sizes.get("eval_step", 0)
    steps = evaluations["eval_step"].values if n else np.zeros(0, np.int64)
    return pd.DataFrame(evaluation_columns(
        {name: evaluations[name].values for name in evaluations.data_vars}, steps, k_upper,
        split))


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


def high_band_power(truth: np.ndarray, cutoff: float) -> np.ndarray:
    """High-band power of each sample, ``(S,)`` from ``truth`` ``(S, T, R, R)`` (or ``(S, R, R)``).

    P_s = Σ_t Σ_{|n| ≥ c} |û_{s,t,n}|², û = FFT(u) / R² (so Σ_n |û_n|² = mean u², Parseval),
    n the integer wavenumbers of the R x R grid and c the run's spectral cutoff
    (docs/metrics.md). A constant (or empty) field has P = 0.
    """
    fields = np.asarray(truth, dtype=np.float64)
    if fields.ndim == 3:
        fields = fields[:, None]
    resolution = fields.shape[-1]
    n = np.fft.fftfreq(resolution, d=1.0 / resolution)
    modulus = np.hypot(n[:, None], n[None, :])
    power = np.abs(np.fft.fft2(fields) / resolution**2) ** 2
    return power[..., modulus >= cutoff].sum(axis=(1, 2))


def usable_cutoff(cutoff: float, resolution: int) -> float:
    """``cutoff``, or the default R/4 (docs/metrics.md) where a store lacks a usable one."""
    return float(cutoff) if np.isfinite(cutoff) and cutoff > 0 else resolution / 4.0


def informative_samples(truth: np.ndarray, cutoff: float) -> np.ndarray:
    """Sample indices, most informative first: by :func:`high_band_power` descending, ties
    (e.g. several fields without high-band power) by variance descending, then by index.
    A constant field comes last, so it is never the first choice while another exists."""
    fields = np.asarray(truth, dtype=np.float64)
    power = high_band_power(fields, usable_cutoff(cutoff, fields.shape[-1]))
    variance = fields.reshape(fields.shape[0], -1).var(axis=1)
    return np.lexsort((np.arange(power.size), -variance, -power))


def colour_limits(field: np.ndarray) -> tuple[float, float]:
    """(low, high) of a colour map over ``field``: its min and max, widened to ±0.5 (or ±5%
    of |value|) around a constant field so it paints mid-map, not as the map's top colour."""
    values = np.asarray(field, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high > low:
        return low, high
    half = 0.05 * abs(low) or 0.5
    return low - half, high + half


# Settings that name where or as what a run was written, not how it was trained.
NOT_HYPERPARAMETERS = frozenset({"output_dir", "wandb_name", "wandb_project", "resume",
                                 "overwrite"})


def flat_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's resolved configuration (``config.json``'s ``config``: top-level settings and
    one dict per section) as one level, ``setting -> value``: each setting under its own name
    (``latent_dim``), or ``section.name`` where two sections share a name; lists as text
    (``64,64,64``), so every value compares and sorts as one cell."""
    leaves: list[tuple[str, str, Any]] = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            leaves += [(key, name, inner) for name, inner in value.items()]
        else:
            leaves.append(("", key, value))
    counts: dict[str, int] = {}
    for _, name, _ in leaves:
        counts[name] = counts.get(name, 0) + 1
    out = {}
    for section, name, value in leaves:
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        out[name if counts[name] == 1 or not section else f"{section}.{name}"] = value
    return out


def differing_settings(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The hyperparameter table: one row per run (``run`` first), one column per setting whose
    value is not the same in every run of ``configs`` (run -> :func:`flat_settings`), in the
    order first met; a setting a run lacks is None. :data:`NOT_HYPERPARAMETERS` are left out."""
    names: dict[str, None] = {}
    for settings in configs.values():
        names.update(dict.fromkeys(settings))
    differing = [name for name in names if name not in NOT_HYPERPARAMETERS
                 and len({repr(s.get(name)) for s in configs.values()}) > 1]
    rows = [{"run": run, **{name: settings.get(name) for name in differing}}
            for run, settings in configs.items()]
    return pd.DataFrame(rows, columns=["run", *differing])


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> pd.DataFrame:
    """The settings where two runs' :func:`flat_settings` differ: columns ``setting``, ``a``,
    ``b`` (None where a run lacks the setting), in the order first met."""
    names = dict.fromkeys([*a, *b])
    rows = [{"setting": name, "a": a.get(name), "b": b.get(name)} for name in names
            if repr(a.get(name)) != repr(b.get(name))]
    return pd.DataFrame(rows, columns=["setting", "a", "b"])
