"""The run store (docs/run-store.md): NumPy, xarray and zarr only, never JAX.

The training engine writes a run with :class:`RunStore` (or :class:`AsyncStoreWriter`, off
the hot path); dashboards, notebooks and tests read it with :func:`open_run` or plain
``xarray.open_zarr``. Fabricated runs for tests are :mod:`fae_lab.testing.fake_runs`'s.
docs/run-store.md describes the files.
"""

from fae_lab.store.jsonio import read_json, write_json_atomic
from fae_lab.store.layout import (
    StoreLayout,
    Variable,
    eval_schedule,
    final_metrics,
    train_schedule,
)
from fae_lab.store.reader import RunView, list_runs, open_run
from fae_lab.store.writer import AsyncStoreWriter, RunStore

__all__ = [
    "AsyncStoreWriter",
    "RunStore",
    "RunView",
    "StoreLayout",
    "Variable",
    "eval_schedule",
    "final_metrics",
    "list_runs",
    "open_run",
    "read_json",
    "train_schedule",
    "write_json_atomic",
]

