"""The one reader of run stores: discovery aside (:mod:`fae_lab.store.runs`), everything that
reads a run directory, also while it is being written.

A run directory holds ``config.json``, ``progress.json``, ``metrics.zarr``,
``reconstructions.zarr`` and, once it ends, ``final.json`` (docs/run-store.md). Every array is
preallocated, so its shape never changes; ``progress.json`` says how many leading rows of the
``step`` (``n_train``) and ``eval_step`` (``n_eval``) dimensions are valid. The writer replaces
``progress.json`` only after the rows it counts are on disk, so a reader takes the counts first
and then reads only rows below them; rows past the counts are NaN or mid-write.

:class:`RunReader` keeps a copy of every valid row of the variables it tracks in memory (a few
hundred kilobytes per run) and, at each :meth:`RunReader.poll`, reads ``progress.json`` first and
then only the rows ``[had, n)`` that became valid since. If a count shrinks (a run resumed from
an earlier checkpoint, or replaced), the copy is cut back and the delta says ``reset``. Fixed
coordinates (steps of the schedule, scales, wavenumber bins) are read on first use.

A run whose files cannot be read, or whose ``progress.json`` counts rows the store does not
have, is *unreadable*: ``RunReader.error`` holds a one-line reason, the reader keeps its last
good state, and the next poll tries again. One bad run never raises out of
:meth:`RunReader.poll`, so it cannot stop the others.

:func:`open_run` is the one-shot form for notebooks, scripts and tests: a polled reader, or
:class:`~fae_lab.errors.UsageError` with the reason.

NumPy, xarray and zarr only: no JAX, no Panel.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fae_lab.config import TAG_NAMES
from fae_lab.errors import UsageError
from fae_lab.store.arrays import MetricsArrays, read_many
from fae_lab.store.jsonio import read_json
from fae_lab.store.layout import (
    CONFIG_FILE,
    FINAL_FILE,
    METRICS_STORE,
    PROGRESS_FILE,
    RECONSTRUCTIONS_STORE,
)

__all__ = ["CURVE_VARIABLES", "EVAL_CURVES", "SCALE_VARIABLES", "SPECTRAL_VARIABLES",
           "TAG_NAMES", "RunDelta", "RunReader", "RunUnreadable", "checked_progress", "open_run",
           "poll_readers", "reason", "require_all"]

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
_REASON_CHARS = 240


class RunUnreadable(ValueError):
    """What a run's files hold is not a run this reader can honour (its message says what)."""


def reason(err: BaseException) -> str:
    """One line saying why a run cannot be read: the first line of the error's message, after
    its type unless the reader's own check raised it (:class:`RunUnreadable`), cut to a few
    hundred characters (a JSON value quoted in it may be long)."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    text = first if isinstance(err, RunUnreadable) else f"{type(err).__name__}: {first}".rstrip(": ")
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_progress(progress: Any, n_train_rows: int, n_eval_rows: int) -> dict[str, Any]:
    """``progress.json``'s document if it is one the store can honour, else
    :class:`RunUnreadable`.

    ``n_train`` and ``n_eval`` must be whole numbers in ``0 .. n_train_rows`` and
    ``0 .. n_eval_rows`` (the lengths of the store's ``step`` and ``eval_step``); ``step`` and
    ``max_steps``, when given, whole numbers >= 0; ``status`` and ``message`` text.
    """
    if not isinstance(progress, dict):
        raise RunUnreadable(f"{PROGRESS_FILE} is not a JSON object")
    for key, rows in (("n_train", n_train_rows), ("n_eval", n_eval_rows)):
        if key not in progress:
            raise RunUnreadable(f"{PROGRESS_FILE} has no {key}")
        value = progress[key]
        if not _whole(value):
            raise RunUnreadable(f"{PROGRESS_FILE}: {key} = {value!r} is not a whole number")
        if not 0 <= value <= rows:
            raise RunUnreadable(f"{PROGRESS_FILE}: {key} = {value} is outside 0..{rows}, "
                             f"the rows {METRICS_STORE} has")
    for key in ("step", "max_steps"):
        value = progress.get(key)
        if value is not None and not (_whole(value) and value >= 0):
            raise RunUnreadable(f"{PROGRESS_FILE}: {key} = {value!r} is not a whole number >= 0")
    for key in ("status", "message"):
        value = progress.get(key)
        if value is not None and not isinstance(value, str):
            raise RunUnreadable(f"{PROGRESS_FILE}: {key} = {value!r} is not text")
    return progress


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


@dataclass
class _Read:
    """Rows ``[start, stop)`` of ``names`` (of ``rows``'s dimension), to be read."""

    rows: _Rows
    names: list[str]
    start: int
    stop: int


class RunReader:
    """One run directory, read incrementally.

    Tracked variables (those in memory and kept up to date) start as :data:`CURVE_VARIABLES`
    and every ``train_loss_<term>``; :meth:`require` adds more.

    ``name`` is the run's label (for :class:`~fae_lab.store.runs.RunsDirectory`, its path
    relative to the runs directory). ``tags`` maps :data:`TAG_NAMES` to the seed's tags
    ``[training_mode, loss_type, decoder_type, pooling_type]`` from ``config.json`` (``"?"``
    where missing); ``config_json`` is the whole ``config.json``. ``progress`` and ``final``
    (``final.json``, None until the run ends) are as of the last :meth:`poll`; ``error`` is
    the one-line reason the last poll could not read the run, else None.

    Raises ``OSError`` or ``ValueError`` (:class:`RunUnreadable` for one this reader checks) if
    ``config.json`` cannot be read or is not a JSON object whose ``tags`` is a list.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        config = read_json(self.path / CONFIG_FILE)
        if not isinstance(config, dict):
            raise RunUnreadable(f"{CONFIG_FILE} is not a JSON object")
        tags = config.get("tags") or []
        if not isinstance(tags, list) or any(isinstance(t, (dict, list)) for t in tags):
            raise RunUnreadable(f"{CONFIG_FILE}: tags = {tags!r} is not a list of names")
        tags = [*tags, *["?"] * (len(TAG_NAMES) - len(tags))]
        self.config_json: dict[str, Any] = config
        self.tags: dict[str, str] = dict(zip(TAG_NAMES, map(str, tags), strict=False))
        self.progress: dict[str, Any] = {"status": "running", "step": 0, "n_train": 0,
                                         "n_eval": 0, "message": ""}
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self._metrics: MetricsArrays | None = None
        self._recon: xr.Dataset | None = None
        self._train = _Rows("step")
        self._eval = _Rows("eval_step")
        self._truth: np.ndarray | None = None
        self._recon_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # -- what the run is ---------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration (``config.json``'s ``config``; empty if it has none)."""
        return self.config_json.get("config") or {}

    @property
    def rung(self) -> str:
        """The run's rung of the bottleneck ladder (docs/run-store.md): ``config.json``'s
        ``"rung"``, else a fifth tag after the seed's four, else ``"fae"`` (a store without
        either is an FAE)."""
        rung = self.config_json.get("rung")
        if rung is None:
            tags = self.config_json.get("tags") or []
            rung = tags[len(TAG_NAMES)] if len(tags) > len(TAG_NAMES) else "fae"
        return str(rung)

    @property
    def run_name(self) -> str:
        return str(self.config_json.get("run_name") or self.name)

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
            value = int(max(self._metrics.fixed("step")[-1], self._metrics.fixed("eval_step")[-1]))
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

    @property
    def has_reconstructions(self) -> bool:
        """Whether the run keeps its reconstructions (``reconstructions.zarr``): a store may be
        kept or shipped without them (they are most of its size), its metrics intact."""
        return self.ready and (self.path / RECONSTRUCTIONS_STORE).exists()

    def _coord(self, name: str) -> np.ndarray:
        """A coordinate's values: fixed when a run is created, so read once."""
        if self._metrics is None:
            return np.zeros(0)
        return self._metrics.fixed(name)

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
        # zarr directly, not xarray: over many runs opening Datasets dominated a page load
        # (fae_lab.store.arrays).
        metrics = MetricsArrays(self.path / METRICS_STORE)
        # Opened before anything is replaced: a failed open leaves the last good state. The
        # reconstructions store is opened on first use (_reconstructions): most views, and the
        # first page of a session over many runs, never read it.
        self._metrics, self._recon = metrics, None
        tracked = [*self._train.values, *self._eval.values]
        self._train, self._eval = _Rows("step"), _Rows("eval_step")
        for name in metrics.data_vars:
            rows = self._train if metrics.dims[name][0] == "step" else self._eval
            rows.available.append(name)
            if name in CURVE_VARIABLES or name.startswith("train_loss_") or name in tracked:
                rows.values[name] = np.full(metrics.shapes[name], np.nan)
        self._truth = None
        self._recon_cache.clear()

    def _request(self, read: _Read):
        assert self._metrics is not None
        return (self._metrics, read.names, read.start, read.stop)

    @staticmethod
    def _store(read: _Read, values: dict[str, np.ndarray]) -> None:
        for name, rows in values.items():
            read.rows.values[name][read.start:read.stop] = rows

    def _require_reads(self, names: tuple[str, ...] | list[str]) -> list[_Read]:
        """Start tracking ``names`` (those the store has); the reads of their valid rows."""
        reads = []
        for rows in (self._train, self._eval):
            new = [n for n in dict.fromkeys(names) if n in rows.available and n not in rows.values]
            for name in new:
                assert self._metrics is not None
                rows.values[name] = np.full(self._metrics.shapes[name], np.nan)
            if new and rows.count:
                reads.append(_Read(rows, new, 0, rows.count))
        return reads

    def require(self, *names: str) -> None:
        """Track ``names`` too (those the store has): read their valid rows now, and the new
        ones at every poll. (:func:`require_all`: many runs in one trip.)"""
        require_all([(self, names)])

    def poll(self) -> RunDelta:
        """Read ``progress.json``, then only the rows that became valid since the last poll.

        Never raises for what is on disk: a run whose files cannot be read, or whose
        ``progress.json`` fails :func:`checked_progress`, keeps its last state and sets
        ``error`` to the reason (``status_changed`` when the reason changes).
        (:func:`poll_readers`: many runs, their rows read in one trip.)
        """
        return poll_readers([self])[0]

    def _polling(self):
        """:meth:`poll` as a generator: yields the row reads it needs (a list of
        :class:`_Read`), is sent their answers (rows or exceptions, in order) and returns the
        :class:`RunDelta`. So :func:`poll_readers` reads every run's rows at once."""
        before = (self.progress.get("status"), self.progress.get("step"),
                  self.progress.get("message"), self.final is not None, self.error)
        train_start, eval_start, reset = self._train.count, self._eval.count, False
        try:
            progress = read_json(self.path / PROGRESS_FILE)
            if self._metrics is None:
                self._open()
            assert self._metrics is not None
            sizes = self._metrics.sizes
            checked_progress(progress, sizes["step"], sizes["eval_step"])
            n_train, n_eval = progress["n_train"], progress["n_eval"]
            if n_train < self._train.count or n_eval < self._eval.count:
                # A resumed run truncated its rows, or the run was replaced: start again.
                self._open()
                reset, train_start, eval_start = True, 0, 0
            reads = [_Read(rows, list(rows.values), rows.count, stop)
                     for rows, stop in ((self._train, n_train), (self._eval, n_eval))
                     if stop > rows.count and rows.values]
            answers = yield reads
            for rows, stop in ((self._train, n_train), (self._eval, n_eval)):
                for read, answer in zip(reads, answers, strict=True):
                    if read.rows is rows:
                        if isinstance(answer, BaseException):
                            raise answer  # rows read before stay read, as counted
                        self._store(read, answer)
                rows.count = max(rows.count, stop)
            status_changed = progress.get("status") != self.progress.get("status")
            self.progress = progress
            final_path = self.path / FINAL_FILE
            if (self.final is None or status_changed or reset) and final_path.exists():
                final = read_json(final_path)  # again after a resumed run ends
                if not isinstance(final, dict):
                    raise RunUnreadable(f"{FINAL_FILE} is not a JSON object")
                self.final = final
            self.error = None
        except Exception as err:  # whatever one run holds, the others go on
            self.error = reason(err)
        # Rows read before a failure stay read, so the delta still names them.
        after = (self.progress.get("status"), self.progress.get("step"),
                 self.progress.get("message"), self.final is not None, self.error)
        return RunDelta(self.name, slice(train_start, self._train.count),
                        slice(eval_start, self._eval.count), reset=reset,
                        status_changed=before != after)

    def _polled(self) -> None:
        """Poll, and raise :class:`UsageError` with the reason if the run cannot be read."""
        self.poll()
        if self.error is not None:
            raise UsageError(f"{self.path}: {self.error}")

    def metrics(self) -> xr.Dataset:
        """After a poll, every variable of ``metrics.zarr`` (not only the tracked ones), rows
        ``step < n_train`` and ``eval_step < n_eval`` only, loaded into memory."""
        self._polled()
        with xr.open_zarr(self.path / METRICS_STORE) as dataset:
            return dataset.isel(step=slice(0, self.n_train),
                                eval_step=slice(0, self.n_eval)).load()

    def reconstructions(self) -> xr.Dataset:
        """After a poll, ``reconstructions.zarr`` lazily, evaluation rows ``< n_eval`` only
        (``truth`` whole). Load what you need (``.sel(...).values``); valid rows never change."""
        self._polled()
        dataset = xr.open_zarr(self.path / RECONSTRUCTIONS_STORE)
        return dataset.isel(eval_step=slice(0, self.n_eval))

    def training(self, rows: slice | None = None) -> xr.Dataset:
        """Valid training-log rows (all, or ``rows`` of them) as a Dataset along ``step``."""
        rows = rows or slice(0, self._train.count)
        stop = min(rows.stop, self._train.count)
        data = {name: ("step", values[rows.start:stop])
                for name, values in self._train.values.items()}
        return xr.Dataset(data, coords={"step": self.train_steps[rows.start:stop]})

    def training_arrays(self, rows: slice | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`training` as plain arrays (copies): tracked variable -> ``(n,)`` rows, and
        their steps ``(n,)``. Without xarray: a page of a few hundred runs builds no Dataset."""
        rows = rows or slice(0, self._train.count)
        stop = min(rows.stop, self._train.count)
        return ({name: values[rows.start:stop].copy() for name, values in self._train.values.items()},
                self.train_steps[rows.start:stop].copy())

    def evaluation_arrays(self, rows: slice | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`evaluations` as plain arrays (copies): tracked variable -> ``(n, ...)``
        rows, and the evaluations' steps ``(n,)``."""
        rows = rows or slice(0, self._eval.count)
        stop = min(rows.stop, self._eval.count)
        if self._metrics is None:
            return {}, np.zeros(0, np.int64)
        return ({name: values[rows.start:stop].copy() for name, values in self._eval.values.items()},
                self.eval_steps[rows.start:stop].copy())

    def evaluations(self, rows: slice | None = None) -> xr.Dataset:
        """Valid evaluation rows (all, or ``rows`` of them) as a Dataset along ``eval_step``,
        with the ``scale`` (``held_out``, ``time``) and ``k`` coordinates."""
        rows = rows or slice(0, self._eval.count)
        stop = min(rows.stop, self._eval.count)
        if self._metrics is None:
            return xr.Dataset()
        data = {name: (self._metrics.dims[name], values[rows.start:stop])
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
            "run": self.name, **self.tags, "status": "unreadable" if self.error else self.status,
            "step": self.step,
            "max_steps": self.max_steps, "evaluations": self.n_eval,
            "rel_mse": self.latest("eval_rel_mse"),
            "high_freq_ratio": self.latest("eval_high_freq_error_ratio"),
            "final_test_rel_mse": final_value("final/test_rel_mse"),
            "final_held_out_avg_mse": final_value("final/held_out_avg_mse"),
            "message": self.error or str(self.progress.get("message") or ""),
        }

    def _reconstructions(self) -> xr.Dataset:
        """``reconstructions.zarr``, opened once (again after a reset), or FileNotFoundError."""
        if self._recon is None:
            path = self.path / RECONSTRUCTIONS_STORE
            if self._metrics is None or not path.exists():
                raise FileNotFoundError(f"{path} is missing")
            self._recon = _open_store(path)
        return self._recon

    def truth(self) -> np.ndarray:
        """The fixed test fields, ``(S, T, R, R)`` float32 (written when the run was created)."""
        if self._truth is None:
            self._truth = self._reconstructions()["truth"].values
        return self._truth

    def reconstruction(self, eval_index: int) -> np.ndarray:
        """``recon`` of valid evaluation ``eval_index``, ``(S, T, R, R)`` float32 (a few cached)."""
        if not 0 <= eval_index < self._eval.count:
            raise IndexError(f"evaluation {eval_index} of run {self.name} is not written yet "
                             f"({self._eval.count} are)")
        if eval_index in self._recon_cache:
            self._recon_cache.move_to_end(eval_index)
            return self._recon_cache[eval_index]
        image = self._reconstructions()["recon"].isel(eval_step=eval_index).values
        self._recon_cache[eval_index] = image
        if len(self._recon_cache) > _RECON_CACHE_SIZE:
            self._recon_cache.popitem(last=False)
        return image



def poll_readers(readers: list[RunReader]) -> list[RunDelta]:
    """:meth:`RunReader.poll` of each reader, their new rows read in one trip to zarr's event
    loop (zarr-python costs a fixed time per trip and per chunk; over hundreds of runs the
    trips were most of a page load's wait)."""
    with cyclic_gc_paused():
        return _poll_readers(readers)


@contextlib.contextmanager
def cyclic_gc_paused():
    """Python's cyclic garbage collector off inside the block (on again after it, if it was
    on). Reading a few hundred runs makes many small objects (JSON documents, arrays) that
    form no cycles, yet their count triggers full collections over a dashboard's whole heap:
    about half of a 200-run poll's CPU time. Refcounting still frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _poll_readers(readers: list[RunReader]) -> list[RunDelta]:
    deltas: dict[int, RunDelta] = {}
    pending = []
    for index, reader in enumerate(readers):
        polling = reader._polling()
        try:
            reads = next(polling)
        except StopIteration as done:  # failed before reading: its delta
            deltas[index] = done.value
            continue
        pending.append((index, reader, polling, reads))
    answers = iter(read_many([reader._request(read) for _, reader, _, reads in pending
                              for read in reads]))
    for index, _reader, polling, reads in pending:
        try:
            polling.send([next(answers) for _ in reads])
        except StopIteration as done:
            deltas[index] = done.value
        else:  # pragma: no cover - _polling yields once
            raise RuntimeError("RunReader._polling yielded twice")
    return [deltas[index] for index in range(len(readers))]


def require_all(wanted: list[tuple[RunReader, tuple[str, ...] | list[str]]]) -> None:
    """:meth:`RunReader.require` of ``names`` for each ``(reader, names)``, the valid rows of all
    of them read in one trip to zarr's event loop. Raises the first read's exception after
    storing every other answer."""
    reads = [(reader, read) for reader, names in wanted if reader.ready
             for read in reader._require_reads(names)]
    error = None
    for (reader, read), answer in zip(reads, read_many([reader._request(read)
                                                        for reader, read in reads]), strict=True):
        if isinstance(answer, BaseException):
            error = error or answer
        else:
            reader._store(read, answer)
    if error is not None:
        raise error


def open_run(run_dir: str | os.PathLike) -> RunReader:
    """The run in ``run_dir``, polled once; :class:`UsageError` with a one-line reason if it
    holds no run or the run cannot be read."""
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise UsageError(f"{path} holds no run (no {CONFIG_FILE})")
    try:
        reader = RunReader(path)
    except Exception as err:  # one line, whatever config.json holds
        raise UsageError(f"{path}: {reason(err)}") from err
    reader._polled()
    return reader
