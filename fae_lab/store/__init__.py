"""The run store (docs/run-store.md): NumPy, xarray and zarr only, never JAX.

The training engine writes a run with :class:`RunStore` (or :class:`AsyncStoreWriter`, off
the hot path). Everything else reads runs through one reader: :func:`open_run` (one run, for
notebooks, scripts and tests), :class:`RunReader` (one run, incrementally: only the rows that
became valid since the last poll) and :class:`RunsDirectory` (every run under a folder, the
unreadable ones set apart), or plain ``xarray.open_zarr``. :func:`write_synthetic_run`
fabricates plausible runs with the real writer.
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
    "SyntheticRunWriter",
    "Variable",
    "checked_progress",
    "eval_schedule",
    "final_metrics",
    "list_runs",
    "open_run",
    "read_json",
    "train_schedule",
    "write_json_atomic",
    "write_synthetic_run",
]


def __getattr__(name: str):
    # Imported on first use, so that ``python -m fae_lab.store.synthetic`` does not find the
    # module already imported by its own package.
    if name in ("SyntheticRunWriter", "write_synthetic_run"):
        from fae_lab.store import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'fae_lab.store' has no attribute {name!r}")
