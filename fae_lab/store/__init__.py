"""The run store (docs/run-store.md): NumPy, xarray and zarr only, never JAX.

The training engine writes a run with :class:`RunStore` (or :class:`AsyncStoreWriter`, off
the hot path). Everything else reads runs through one reader: :func:`open_run` (one run, for
notebooks, scripts and tests), :class:`RunReader` (one run, incrementally: only the rows that
became valid since the last poll) and :class:`RunsDirectory` (every run under a folder, the
unreadable ones set apart), or plain ``xarray.open_zarr``. Fabricated runs for tests
are :mod:`fae_lab.testing.fake_runs`'s.
"""

from fae_lab.store.jsonio import read_json, write_json_atomic
from fae_lab.store.layout import (
    StoreLayout,
    Variable,
    eval_schedule,
    final_metrics,
    train_schedule,
)
from fae_lab.store.reader import (
    CURVE_VARIABLES,
    EVAL_CURVES,
    SCALE_VARIABLES,
    SPECTRAL_VARIABLES,
    TAG_NAMES,
    RunDelta,
    RunReader,
    RunUnreadable,
    checked_progress,
    open_run,
    poll_readers,
    require_all,
)
from fae_lab.store.runs import PollResult, RunsDirectory, list_runs
from fae_lab.store.writer import AsyncStoreWriter, RunStore

__all__ = [
    "CURVE_VARIABLES",
    "EVAL_CURVES",
    "SCALE_VARIABLES",
    "SPECTRAL_VARIABLES",
    "TAG_NAMES",
    "AsyncStoreWriter",
    "PollResult",
    "RunDelta",
    "RunReader",
    "RunStore",
    "RunUnreadable",
    "RunsDirectory",
    "StoreLayout",
    "Variable",
    "checked_progress",
    "eval_schedule",
    "final_metrics",
    "list_runs",
    "open_run",
    "poll_readers",
    "read_json",
    "require_all",
    "train_schedule",
    "write_json_atomic",
]

