"""The data source of the dashboards: run stores under a directory, read incrementally.

A run directory holds ``config.json``, ``progress.json``, ``metrics.zarr``,
``reconstructions.zarr`` and, once it ends, ``final.json`` (docs/run-store.md). Every array is
preallocated, so its shape never changes; ``progress.json`` says how many leading rows of the
``step`` (``n_train``) and ``eval_step`` (``n_eval``) dimensions are valid. Rows past those
counts are NaN or mid-write and are never read.

:class:`RunReader` keeps a copy of every valid row in memory (a few hundred kilobytes per run)
and, at each :meth:`RunReader.poll`, reads ``progress.json`` first and then only the rows
``[had, n)`` that became valid since. If a count shrinks (a run resumed from an earlier
checkpoint, or replaced), the copy is cut back and the delta says ``reset``.
:class:`RunsDirectory` discovers runs (any folder holding a ``config.json``) and polls them all.

NumPy, xarray and zarr only: no JAX, no Panel.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fae_lab.store.jsonio import read_json
from fae_lab.store.layout import (
    CONFIG_FILE,
    FINAL_FILE,
    METRICS_STORE,
    PROGRESS_FILE,
    RECONSTRUCTIONS_STORE,
)
from fae_lab.store.reader import list_runs

TAG_NAMES = ("training_mode", "loss_type", "decoder_type", "pooling_type")
# Scalar evaluation curves drawn against step (the seed's eval/* and eval/spectral/*).
EVAL_CURVES = ("eval_rel_mse", "eval_low_freq_mse", "eval_high_freq_mse",
               "eval_high_freq_error_ratio")
# Read from the start: what the curves and the runs table draw. Every zarr read costs a fixed
# zarr-python overhead whatever its size (benchmarks/RESULTS.md), so other variables are read only once a view
# asks for them (RunReader.require), and grad_norm, wall_time etc. never.
CURVE_VARIABLES = ("train_loss", *EVAL_CURVES)  # and every train_loss_<term>
SPECTRAL_VARIABLES = ("eval_spectral_mse", "eval_spectral_target", "eval_scale_spectral_mse",
                      "eval_scale_spectral_target")
SCALE_VARIABLES = ("eval_scale_mse", "eval_scale_rel_mse")
_RECON_CACHE_SIZE = 8


@dataclass(frozen=True)
class RunDelta:
    """What one poll found new in one run.

    ``train`` and ``eval`` are the row ranges along ``step`` and ``eval_step`` that became valid
    (empty slices when none); ``reset`` means earlier rows were dropped, so views must redraw
    the run from :meth:`RunReader.training` / :meth:`RunReader.evaluations`;
    ``status_changed`` covers status, step, message and ``final.json``.
    """

    name: str
    train: slice
    eval: slice
    reset: bool = False
    status_changed: bool = False

    @property
    def has_rows(self) -> bool:
        return self.train.stop > self.train.start or self.eval.stop > self.eval.start

    @property
    def new_evaluations(self) -> bool:
        """Whether the run's evaluations changed: new rows, or cut back and re-read."""
        return self.reset or self.eval.stop > self.eval.start


def _open_store(path: Path) -> xr.Dataset:
    """A lazily read zarr store. ``cache=False``: the arrays are preallocated with NaN rows that
    fill in later, so nothing read from them may be kept by xarray behind our back. Both
    stores are consolidated when a run is created, before its ``config.json`` exists."""
    return xr.open_dataset(path, engine="zarr", chunks=None, cache=False, consolidated=True)


@dataclass
class _Rows:
    """Valid leading rows of the tracked variables of one dimension, copied from the store.

    ``values[name]`` is preallocated to the full length of the dimension; ``count`` rows are
    valid; ``available`` names every variable of the store along that dimension.
    """

    dim: str
    values: dict[str, np.ndarray] = field(default_factory=dict)
    available: list[str] = field(default_factory=list)
    count: int = 0


class RunReader:
    """One run directory, read incrementally.

    Tracked variables (those in memory and kept up to date) start as :data:`CURVE_VARIABLES`
    and every ``train_loss_<term>``; :meth:`require` adds more.

    ``name`` is the run's path relative to the runs directory (its label everywhere in the
    dashboards). ``tags`` maps :data:`TAG_NAMES` to the seed's tags
    ``[training_mode, loss_type, decoder_type, pooling_type]`` from ``config.json``.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        config = read_json(self.path / CONFIG_FILE)
        if not isinstance(config, dict):
            raise ValueError(f"{self.path / CONFIG_FILE} is not a JSON object")
        tags = list(config.get("tags") or [])
        tags += ["?"] * (len(TAG_NAMES) - len(tags))
        self.tags: dict[str, str] = dict(zip(TAG_NAMES, map(str, tags), strict=False))
        self.progress: dict[str, Any] = {"status": "running", "step": 0, "n_train": 0,
                                         "n_eval": 0, "message": ""}
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self._metrics: xr.Dataset | None = None
        self._coords_in_memory: set[str] = set()  # of _metrics, see _coord
        self._recon: xr.Dataset | None = None
        self._train = _Rows("step")
        self._eval = _Rows("eval_step")
        self._truth: np.ndarray | None = None
        self._recon_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # -- what the run is ---------------------------------------------------------------------

    @property
    def status(self) -> str:
        return str(self.progress.get("status", "running"))

    @property
    def step(self) -> int:
        return int(self.progress.get("step") or 0)

    @property
    def max_steps(self) -> int:
        value = self.progress.get("max_steps")
        if value is None and self._metrics is not None:
            value = int(max(self._metrics["step"].values[-1], self._metrics["eval_step"].values[-1]))
        return int(value or 0)

    @property
    def n_train(self) -> int:
        return self._train.count

    @property
    def n_eval(self) -> int:
        return self._eval.count

    @property
    def ready(self) -> bool:
        """Whether the stores are open (they exist once ``config.json`` does)."""
        return self._metrics is not None

    def _coord(self, name: str) -> np.ndarray:
        """A coordinate's values. One that is not an index (held_out, time, k_lower, ...) would
        be read from zarr at every access under cache=False; it is fixed when a run is
        created, so the first access puts it in memory, where later row reads find it too."""
        if self._metrics is None:
            return np.zeros(0)
        coord = self._metrics[name]
        if name not in self._metrics.indexes and name not in self._coords_in_memory:
            self._metrics = self._metrics.assign_coords({name: (coord.dims, coord.values, coord.attrs)})
            self._coords_in_memory.add(name)
        return self._metrics[name].values

    @property
    def train_steps(self) -> np.ndarray:
        """Step of every training-log row of the schedule, ``(n_train_total,)``."""
        return self._coord("step")

    @property
    def eval_steps(self) -> np.ndarray:
        """Step of every evaluation of the schedule, ``(n_eval_total,)``."""
        return self._coord("eval_step")

    @property
    def scales(self) -> np.ndarray:
        return self._coord("scale")

    @property
    def held_out(self) -> np.ndarray:
        """``(T,)`` bool: scales never trained on."""
        return self._coord("held_out").astype(bool)

    @property
    def times(self) -> np.ndarray:
        return self._coord("time")

    @property
    def k(self) -> np.ndarray:
        """Radial bin centres |n|, cycles per unit length, ``(n_bins,)``."""
        return self._coord("k")

    @property
    def k_lower(self) -> np.ndarray:
        """Lower bin edges, ``(n_bins,)``."""
        return self._coord("k_lower")

    @property
    def k_upper(self) -> np.ndarray:
        """Upper bin edges, ``(n_bins,)``."""
        return self._coord("k_upper")

    @property
    def spectral_cutoff(self) -> float:
        if self._metrics is None:
            return float("nan")
        return float(self._metrics.attrs.get("spectral_cutoff", float("nan")))

    @property
    def loss_terms(self) -> list[str]:
        """Names of the loss terms, from the ``train_loss_<term>`` variables."""
        return [name[len("train_loss_"):] for name in self._train.values
                if name.startswith("train_loss_")]

    # -- reading -----------------------------------------------------------------------------

    def _open(self) -> None:
        self._metrics = _open_store(self.path / METRICS_STORE)
        self._coords_in_memory: set[str] = set()
        recon_path = self.path / RECONSTRUCTIONS_STORE
        self._recon = _open_store(recon_path) if recon_path.exists() else None
        tracked = [*self._train.values, *self._eval.values]
        self._train, self._eval = _Rows("step"), _Rows("eval_step")
        for name, variable in self._metrics.data_vars.items():
            rows = self._train if variable.dims[0] == "step" else self._eval
            rows.available.append(name)
            if name in CURVE_VARIABLES or name.startswith("train_loss_") or name in tracked:
                rows.values[name] = np.full(variable.shape, np.nan)
        self._truth = None
        self._recon_cache.clear()

    def _read(self, rows: _Rows, names: list[str], start: int, stop: int) -> None:
        assert self._metrics is not None
        new = self._metrics[names].isel({rows.dim: slice(start, stop)}).load()
        for name in names:
            rows.values[name][start:stop] = new[name].values

    def _read_rows(self, rows: _Rows, stop: int) -> slice:
        start = rows.count
        if stop > start and rows.values:
            self._read(rows, list(rows.values), start, stop)
        rows.count = max(start, stop)
        return slice(start, rows.count)

    def require(self, *names: str) -> None:
        """Track ``names`` too (those the store has): read their valid rows now, and the new
        ones at every poll."""
        for rows in (self._train, self._eval):
            new = [n for n in names if n in rows.available and n not in rows.values]
            for name in new:
                assert self._metrics is not None
                rows.values[name] = np.full(self._metrics[name].shape, np.nan)
            if new and rows.count:
                self._read(rows, new, 0, rows.count)

    def poll(self) -> RunDelta:
        """Read ``progress.json``, then only the rows that became valid since the last poll.

        A run whose files cannot be read (yet) keeps its last state and sets ``error``.
        """
        empty = slice(self._train.count, self._train.count)
        before = (self.progress.get("status"), self.progress.get("step"),
                  self.progress.get("message"), self.final is not None)
        try:
            progress = read_json(self.path / PROGRESS_FILE)
            reset = False
            if self._metrics is None:
                self._open()
            n_train, n_eval = int(progress["n_train"]), int(progress["n_eval"])
            if n_train < self._train.count or n_eval < self._eval.count:
                # A resumed run truncated its rows, or the run was replaced: start again.
                self._open()
                reset = True
            train = self._read_rows(self._train, n_train)
            eval_rows = self._read_rows(self._eval, n_eval)
            status_changed = progress.get("status") != self.progress.get("status")
            self.progress = progress
            final_path = self.path / FINAL_FILE
            if (self.final is None or status_changed or reset) and final_path.exists():
                self.final = read_json(final_path)  # again after a resumed run ends
            self.error = None
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.error = f"{type(err).__name__}: {err}"
            return RunDelta(self.name, empty, slice(self._eval.count, self._eval.count))
        after = (self.progress.get("status"), self.progress.get("step"),
                 self.progress.get("message"), self.final is not None)
        return RunDelta(self.name, train, eval_rows, reset=reset, status_changed=before != after)

    def training(self, rows: slice | None = None) -> xr.Dataset:
        """Valid training-log rows (all, or ``rows`` of them) as a Dataset along ``step``."""
        rows = rows or slice(0, self._train.count)
        stop = min(rows.stop, self._train.count)
        data = {name: ("step", values[rows.start:stop])
                for name, values in self._train.values.items()}
        return xr.Dataset(data, coords={"step": self.train_steps[rows.start:stop]})

    def evaluations(self, rows: slice | None = None) -> xr.Dataset:
        """Valid evaluation rows (all, or ``rows`` of them) as a Dataset along ``eval_step``,
        with the ``scale`` (``held_out``, ``time``) and ``k`` coordinates."""
        rows = rows or slice(0, self._eval.count)
        stop = min(rows.stop, self._eval.count)
        if self._metrics is None:
            return xr.Dataset()
        data = {name: (self._metrics[name].dims, values[rows.start:stop])
                for name, values in self._eval.values.items()}
        coords = {"eval_step": self.eval_steps[rows.start:stop], "scale": self.scales,
                  "held_out": ("scale", self.held_out), "time": ("scale", self.times),
                  "k": self.k}
        return xr.Dataset(data, coords=coords,
                          attrs={"spectral_cutoff": self.spectral_cutoff})

    def latest(self, name: str) -> float:
        """The newest valid value of a scalar evaluation variable (NaN if none)."""
        values = self._eval.values.get(name)
        if values is None or self._eval.count == 0:
            return float("nan")
        return float(values[self._eval.count - 1])

    def summary(self) -> dict[str, Any]:
        """One row of the runs table: name, tags, status, progress and the headline metrics
        (newest evaluation, and ``final.json`` once the run has ended)."""
        final = self.final or {}

        def final_value(key: str) -> float:
            value = final.get(key)
            return float(value) if value is not None else float("nan")

        return {
            "run": self.name, **self.tags, "status": self.status, "step": self.step,
            "max_steps": self.max_steps, "evaluations": self.n_eval,
            "rel_mse": self.latest("eval_rel_mse"),
            "high_freq_ratio": self.latest("eval_high_freq_error_ratio"),
            "final_test_rel_mse": final_value("final/test_rel_mse"),
            "final_held_out_avg_mse": final_value("final/held_out_avg_mse"),
            "message": self.error or str(self.progress.get("message") or ""),
        }

    def truth(self) -> np.ndarray:
        """The fixed test fields, ``(S, T, R, R)`` float32 (written when the run was created)."""
        if self._truth is None:
            if self._recon is None:
                raise FileNotFoundError(f"{self.path / RECONSTRUCTIONS_STORE} is missing")
            self._truth = self._recon["truth"].values
        return self._truth

    def reconstruction(self, eval_index: int) -> np.ndarray:
        """``recon`` of valid evaluation ``eval_index``, ``(S, T, R, R)`` float32 (a few cached)."""
        if not 0 <= eval_index < self._eval.count:
            raise IndexError(f"evaluation {eval_index} of run {self.name} is not written yet "
                             f"({self._eval.count} are)")
        if eval_index in self._recon_cache:
            self._recon_cache.move_to_end(eval_index)
            return self._recon_cache[eval_index]
        if self._recon is None:
            raise FileNotFoundError(f"{self.path / RECONSTRUCTIONS_STORE} is missing")
        image = self._recon["recon"].isel(eval_step=eval_index).values
        self._recon_cache[eval_index] = image
        if len(self._recon_cache) > _RECON_CACHE_SIZE:
            self._recon_cache.popitem(last=False)
        return image


@dataclass(frozen=True)
class PollResult:
    """One poll of a runs directory: runs seen for the first time, and what changed in each."""

    new_runs: list[str]
    deltas: list[RunDelta]


class RunsDirectory:
    """Every run under ``root`` (``root`` itself included), discovered and polled.

    A run is a folder holding a ``config.json`` (written last when a run is created, so its
    stores exist by then). Runs are kept in the order they were found.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.readers: dict[str, RunReader] = {}
        self.unreadable: dict[str, str] = {}

    def _name(self, path: Path) -> str:
        relative = path.relative_to(self.root).as_posix()
        return self.root.resolve().name if relative == "." else relative

    def discover(self) -> list[str]:
        """Open readers for runs not seen before; returns their names."""
        new = []
        for path in list_runs(self.root) if self.root.is_dir() else []:
            name = self._name(path)
            if name in self.readers:
                continue
            try:
                self.readers[name] = RunReader(path, name)
            except (OSError, ValueError) as err:
                self.unreadable[name] = f"{type(err).__name__}: {err}"
                continue
            self.unreadable.pop(name, None)
            new.append(name)
        return new

    def poll(self) -> PollResult:
        """Discover new runs, then poll every run for new rows."""
        new = self.discover()
        deltas = []
        for reader in self.readers.values():
            delta = reader.poll()
            if delta.has_rows or delta.reset or delta.status_changed or reader.name in new:
                deltas.append(delta)
        return PollResult(new, deltas)

    def __getitem__(self, name: str) -> RunReader:
        return self.readers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.readers

    def names(self) -> list[str]:
        return list(self.readers)
