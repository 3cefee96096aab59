"""Write a run store (docs/run-store.md) while readers read it.

:meth:`RunStore.create` preallocates every array of ``metrics.zarr`` and
``reconstructions.zarr`` (NaN, with all coordinates) and writes the consolidated metadata
once; nothing about the stores' shape changes afterwards, so a reader's view of the
metadata is never stale. Rows are then written into place by region. zarr's LocalStore
writes every chunk (or shard) file to a temporary name and renames it over the old one, so
a reader decodes either the old file or the new one, never a torn one; a chunk (up to
4,096 training rows or 1,024 evaluations, :func:`~fae_lab.store.layout.chunk_rows`) is rewritten whole each time some of its rows are
written, and rows that were valid before stay valid in the new file. After the arrays, ``progress.json`` is replaced
atomically with ``n_train`` / ``n_eval``: the longest prefix of rows written so far. So
every row a reader is told is valid has been written before it read ``progress.json``.

:class:`AsyncStoreWriter` moves these writes to one background thread, off the training
loop's hot path.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

import fae_lab
from fae_lab.errors import UsageError
from fae_lab.store.jsonio import read_json, to_jsonable, write_json_atomic
from fae_lab.store.layout import (
    CONFIG_FILE,
    FINAL_FILE,
    METRICS_STORE,
    PROGRESS_FILE,
    RECONSTRUCTIONS_STORE,
    RUN_FILES,
    STATUSES,
    StoreLayout,
)
from fae_lab.store.preallocate import (
    create_metrics_store,
    create_reconstructions_store,
    read_layout,
)

_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                       "xarray", "zarr")


def utc_now() -> str:
    """The current time, ISO-8601 UTC with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def package_versions() -> dict[str, str | None]:
    """Versions of fae_lab, Python and the numerical packages (read without importing them)."""
    import platform

    versions: dict[str, str | None] = {"fae_lab": fae_lab.__version__,
                                       "python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package.replace("-", "_")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package.replace("-", "_")] = None
    return versions


def config_document(config: Mapping[str, Any], layout: StoreLayout,
                    command_line: Sequence[str], group: str | None = None) -> dict[str, Any]:
    """The ``config.json`` document (docs/run-store.md).

    ``config`` is either the resolved configuration (nested dict), or a document that
    already holds it under ``"config"`` (a ``RunConfig`` has no field of that name) with any
    extra keys; the standard keys it lacks are filled in: ``tags`` and ``run_name`` from the
    layout, ``command_line``, ``versions``, ``group`` (``group`` or the configuration's
    ``wandb_project``) and ``created``.
    """
    document = dict(config) if "config" in config else {"config": dict(config)}
    resolved = document["config"]
    document.setdefault("tags", list(layout.tags))
    document.setdefault("command_line", [str(a) for a in command_line])
    document.setdefault("versions", package_versions())
    document.setdefault("run_name", layout.run_name)
    document.setdefault("group", group if group is not None else resolved.get("wandb_project"))
    document.setdefault("created", utc_now())
    return document


def existing_run_files(run_dir: Path) -> list[str]:
    """The names of ``RUN_FILES`` present in ``run_dir``."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def _write_regions(regions: Sequence[tuple[zarr.Array, Any, np.ndarray]]) -> None:
    """``array[selection] = values`` for each triple, concurrently on zarr's event loop."""

    async def write_all() -> None:
        await asyncio.gather(*(array.async_array.setitem(selection, values)
                               for array, selection, values in regions))

    sync(write_all())


def _prefix_length(written: np.ndarray) -> int:
    """Length of the leading run of True in a 1-D bool array."""
    missing = np.flatnonzero(~written)
    return int(missing[0]) if missing.size else int(written.size)


class RunStore:
    """The writing side of one run directory.

    Not thread-safe: one writer per run (wrap it in :class:`AsyncStoreWriter` to write from
    a background thread).
    """

    def __init__(self, run_dir: Path, layout: StoreLayout, progress: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.layout = layout
        self._progress = dict(progress)
        metrics = zarr.open_group(str(self.run_dir / METRICS_STORE), mode="r+",
                                  use_consolidated=False)
        self._metric_arrays = {name: metrics[name] for name in layout.metric_variables()}
        recon = zarr.open_group(str(self.run_dir / RECONSTRUCTIONS_STORE), mode="r+",
                                use_consolidated=False)
        self._recon = recon["recon"]
        self._train_written = np.zeros(layout.n_train, dtype=bool)
        self._train_written[: int(progress["n_train"])] = True
        self._eval_written = np.zeros(layout.n_eval, dtype=bool)
        self._eval_written[: int(progress["n_eval"])] = True

    @classmethod
    def create(cls, run_dir: str | Path, layout: StoreLayout, *, config: Mapping[str, Any],
               command_line: Sequence[str], truth: np.ndarray, overwrite: bool = False,
               group: str | None = None) -> RunStore:
        """Start a run in ``run_dir``: preallocated stores, ``progress.json``, ``config.json``.

        ``config`` is the nested dict of ``fae_lab.config.to_json_dict``, or a whole
        ``config.json`` document holding it under ``"config"`` (see :func:`config_document`);
        ``truth`` is ``(S, T, R, R)``, the fixed test samples at every scale. A directory that already holds a run is refused
        (:class:`UsageError`) unless ``overwrite``, which removes only the run's own files.
        """
        run_dir = Path(run_dir)
        S, T, R = layout.n_samples, layout.n_scales, layout.resolution
        truth = np.asarray(truth, dtype=np.float32)
        if truth.shape != (S, T, R, R):
            raise ValueError(f"truth has shape {truth.shape}, expected (S, T, R, R) = "
                             f"{(S, T, R, R)}")
        if run_dir.exists() and not run_dir.is_dir():
            raise UsageError(f"output directory {run_dir} is a file")
        found = existing_run_files(run_dir)
        if found and not overwrite:
            raise UsageError(f"output directory {run_dir} already holds a run "
                             f"({', '.join(found)}); pass --overwrite to replace it")
        for name in found:
            target = run_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        create_metrics_store(run_dir / METRICS_STORE, layout)
        create_reconstructions_store(run_dir / RECONSTRUCTIONS_STORE, layout, truth)
        progress = {"status": "running", "step": 0, "max_steps": layout.max_steps,
                    "n_train": 0, "n_eval": 0, "updated": utc_now(), "message": ""}
        write_json_atomic(run_dir / PROGRESS_FILE, progress)
        # config.json last: list_runs finds a run by it, and by then everything else exists.
        write_json_atomic(run_dir / CONFIG_FILE,
                          config_document(config, layout, command_line, group))
        return cls(run_dir, layout, progress)

    @classmethod
    def open(cls, run_dir: str | Path) -> RunStore:
        """Reopen an existing run to continue writing it (``--resume``); the layout is read
        from the stores and the valid rows from ``progress.json``."""
        run_dir = Path(run_dir)
        missing = [name for name in (CONFIG_FILE, PROGRESS_FILE, METRICS_STORE,
                                     RECONSTRUCTIONS_STORE) if not (run_dir / name).exists()]
        if missing:
            raise UsageError(f"{run_dir} holds no run to resume (missing {', '.join(missing)})")
        return cls(run_dir, read_layout(run_dir), read_json(run_dir / PROGRESS_FILE))

    @property
    def progress(self) -> dict[str, Any]:
        """A copy of what ``progress.json`` holds."""
        return dict(self._progress)

    @property
    def n_train(self) -> int:
        return int(self._progress["n_train"])

    @property
    def n_eval(self) -> int:
        return int(self._progress["n_eval"])

    def write_train_rows(self, start_row: int, rows: Mapping[str, Any]) -> None:
        """Write training-log rows ``start_row .. start_row + n - 1``.

        ``rows`` maps variable names of the ``step`` dimension (``train_loss``,
        ``train_loss_<term>``, ``grad_norm``, ``learning_rate``, ``wall_time``,
        ``lambda_grad``) to ``(n,)`` arrays; names left out stay NaN in these rows.
        """
        arrays = {name: np.asarray(value, dtype=np.float64) for name, value in rows.items()}
        lengths = {a.shape for a in arrays.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 1:
            raise ValueError(f"training rows must be 1-D of one length, got {lengths}")
        n = next(iter(lengths))[0]
        stop = start_row + n
        if start_row < 0 or stop > self.layout.n_train:
            raise ValueError(f"rows {start_row}..{stop - 1} outside 0..{self.layout.n_train - 1}")
        _write_regions([(self._array(name, "step"), slice(start_row, stop), values)
                        for name, values in arrays.items()])
        self._train_written[start_row:stop] = True
        self._publish()

    def write_eval(self, row: int, metrics: Mapping[str, Any],
                   recon: np.ndarray | None = None) -> None:
        """Write evaluation row ``row``: each ``eval_*`` variable's slice (its shape without the
        ``eval_step`` dimension: ``()``, ``(T,)``, ``(n_bins,)`` or ``(T, n_bins)``) and, if
        given, ``recon`` ``(S, T, R, R)``. Names left out stay NaN in this row."""
        if not 0 <= row < self.layout.n_eval:
            raise ValueError(f"evaluation row {row} outside 0..{self.layout.n_eval - 1}")
        values = {}
        for name, value in metrics.items():
            array = self._array(name, "eval_step")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != array.shape[1:]:
                raise ValueError(f"{name} has shape {value.shape}, expected {array.shape[1:]}")
            values[name] = value
        regions = [(self._metric_arrays[name], row, value) for name, value in values.items()]
        if recon is not None:
            recon = np.asarray(recon, dtype=np.float32)
            if recon.shape != self._recon.shape[1:]:
                raise ValueError(f"recon has shape {recon.shape}, expected "
                                 f"{self._recon.shape[1:]}")
            regions.append((self._recon, row, recon))
        _write_regions(regions)
        self._eval_written[row] = True
        self._publish()

    def truncate(self, n_train: int, n_eval: int) -> None:
        """Make exactly the first ``n_train`` training rows and ``n_eval`` evaluations valid
        (``--resume`` from a checkpoint that counted them) and reset every later row to NaN.

        ``progress.json`` shrinks first, so no reader is told a row is valid while it is reset.
        """
        if not (0 <= n_train <= self.layout.n_train and 0 <= n_eval <= self.layout.n_eval):
            raise ValueError(f"truncate to {n_train} training rows / {n_eval} evaluations: "
                             f"outside {self.layout.n_train} / {self.layout.n_eval}")
        self._train_written[:] = np.arange(self.layout.n_train) < n_train
        self._eval_written[:] = np.arange(self.layout.n_eval) < n_eval
        self._progress["step"] = 0
        self._publish()  # the step of the last valid row
        regions = [(array, slice(n_train if array.metadata.dimension_names[0] == "step"
                                 else n_eval, None), np.nan)
                   for array in self._metric_arrays.values()]
        _write_regions([*regions, (self._recon, slice(n_eval, None), np.nan)])

    def read_eval_row(self, row: int) -> dict[str, np.ndarray]:
        """Every ``eval_*`` variable's slice at evaluation row ``row`` (as written)."""
        return {name: np.asarray(array[row]) for name, array in self._metric_arrays.items()
                if array.metadata.dimension_names[0] == "eval_step"}

    def update_progress(self, status: str | None = None, step: int | None = None,
                        message: str | None = None) -> None:
        """Replace ``progress.json``, changing what is given (``n_train`` and ``n_eval`` are the
        writer's own count of rows written). Without ``step``, the step is the latest of the
        current one and the steps of the last valid rows; a given ``step`` is kept as given."""
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
            self._progress["status"] = status
        if message is not None:
            self._progress["message"] = str(message)
        self._publish(step)

    def set_status(self, status: str, message: str = "") -> None:
        """Mark the run ``running``, ``finished``, ``failed`` or ``diverged``."""
        self.update_progress(status=status, message=message)

    def write_final(self, metrics: Mapping[str, Any]) -> None:
        """Write ``final.json`` (atomically; NaN and inf become null)."""
        write_json_atomic(self.run_dir / FINAL_FILE, dict(metrics))

    def _array(self, name: str, dim: str) -> zarr.Array:
        array = self._metric_arrays.get(name)
        if array is None or array.metadata.dimension_names[0] != dim:
            known = [n for n, a in self._metric_arrays.items()
                     if a.metadata.dimension_names[0] == dim]
            raise ValueError(f"no {dim} variable {name!r} in this run (known: {', '.join(known)})")
        return array

    def _publish(self, step: int | None = None) -> None:
        """Replace ``progress.json``. ``step`` is the given one, or else the latest of the
        current step and the steps of the last valid rows."""
        n_train = _prefix_length(self._train_written)
        n_eval = _prefix_length(self._eval_written)
        if step is None:
            step = max(int(self._progress["step"]),
                       int(self.layout.train_steps[n_train - 1]) if n_train else 0,
                       int(self.layout.eval_steps[n_eval - 1]) if n_eval else 0)
        self._progress.update(n_train=n_train, n_eval=n_eval, step=int(step), updated=utc_now())
        write_json_atomic(self.run_dir / PROGRESS_FILE, self._progress)


_STOP = object()


class AsyncStoreWriter:
    """A :class:`RunStore` written by one background thread, in the order of the calls.

    Each method copies its arrays to NumPy in the caller's thread and queues the write; a
    full queue (``max_pending`` writes) blocks the caller rather than growing memory. An
    exception raised by a write is raised again by every later call, ``flush`` and
    ``close``; writes queued after a failure are dropped. Use it as a context manager, or
    call ``close`` (queued writes are lost if the process exits before).
    """

    def __init__(self, store: RunStore, max_pending: int = 64):
        self.store = store
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="run-store-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    method, args = item
                    method(*args)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def _submit(self, method, *args) -> None:
        self._raise_pending()
        if self._closed:
            raise RuntimeError("AsyncStoreWriter is closed")
        self._queue.put((method, args))

    def write_train_rows(self, start_row: int, rows: Mapping[str, Any]) -> None:
        copied = {name: np.array(value, dtype=np.float64) for name, value in rows.items()}
        self._submit(self.store.write_train_rows, int(start_row), copied)

    def write_eval(self, row: int, metrics: Mapping[str, Any],
                   recon: np.ndarray | None = None) -> None:
        copied = {name: np.array(value, dtype=np.float64) for name, value in metrics.items()}
        recon = None if recon is None else np.array(recon, dtype=np.float32)
        self._submit(self.store.write_eval, int(row), copied, recon)

    def truncate(self, n_train: int, n_eval: int) -> None:
        self._submit(self.store.truncate, int(n_train), int(n_eval))

    def update_progress(self, status: str | None = None, step: int | None = None,
                        message: str | None = None) -> None:
        self._submit(self.store.update_progress, status, None if step is None else int(step),
                     message)

    def set_status(self, status: str, message: str = "") -> None:
        self._submit(self.store.set_status, status, message)

    def write_final(self, metrics: Mapping[str, Any]) -> None:
        self._submit(self.store.write_final, to_jsonable(metrics))  # a copy, as queued

    def flush(self) -> None:
        """Wait until every queued write is done; raise a write's exception."""
        self._raise_pending()
        self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        """Finish the queued writes and stop the thread; raise a write's exception."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_pending()

    def __enter__(self) -> AsyncStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass  # the body's own exception is the one to report
