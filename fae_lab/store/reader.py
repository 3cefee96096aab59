"""Read a run store, also while it is being written.

A reader takes ``n_train`` / ``n_eval`` from ``progress.json`` first and only then reads the
arrays (plain ``xarray.open_zarr``), keeping rows below those counts: the writer replaces
``progress.json`` only after the rows it counts are on disk (docs/run-store.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from fae_lab.errors import UsageError
from fae_lab.store.jsonio import read_json
from fae_lab.store.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    FINAL_FILE,
    METRICS_STORE,
    PROGRESS_FILE,
    RECONSTRUCTIONS_STORE,
)


@dataclass(frozen=True)
class RunView:
    """One run directory, read-only.

    ``config_json`` is the whole ``config.json``; ``config`` its resolved configuration
    (nested dict) and ``tags`` its ``[training_mode, loss_type, decoder_type,
    pooling_type]``. ``progress`` is read from disk on each access.
    """

    path: Path
    config_json: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.config_json["config"]

    @property
    def tags(self) -> list[str]:
        return list(self.config_json["tags"])

    @property
    def run_name(self) -> str:
        return self.config_json["run_name"]

    @property
    def progress(self) -> dict[str, Any]:
        return read_json(self.path / PROGRESS_FILE)

    def metrics(self) -> xr.Dataset:
        """``metrics.zarr`` loaded into memory, rows ``step < n_train`` and
        ``eval_step < n_eval`` only."""
        progress = self.progress
        dataset = xr.open_zarr(self.path / METRICS_STORE)
        valid = dataset.isel(step=slice(0, progress["n_train"]),
                             eval_step=slice(0, progress["n_eval"]))
        valid = valid.load()
        dataset.close()
        return valid

    def reconstructions(self) -> xr.Dataset:
        """``reconstructions.zarr``, lazily, evaluation rows ``< n_eval`` only (``truth`` whole).

        Load what you need (``.sel(...).values``); rows below ``n_eval`` never change.
        """
        n_eval = self.progress["n_eval"]
        dataset = xr.open_zarr(self.path / RECONSTRUCTIONS_STORE)
        return dataset.isel(eval_step=slice(0, n_eval))

    def final(self) -> dict[str, Any] | None:
        """``final.json``, or None while the run has not ended."""
        path = self.path / FINAL_FILE
        return read_json(path) if path.exists() else None


def open_run(run_dir: str | os.PathLike) -> RunView:
    """The run in ``run_dir``; :class:`UsageError` if it holds none."""
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise UsageError(f"{path} holds no run (no {CONFIG_FILE})")
    return RunView(path=path, config_json=read_json(path / CONFIG_FILE))


def list_runs(root: str | os.PathLike) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds a ``config.json``, sorted.

    The search does not descend into a run's own stores and checkpoints, or hidden folders.
    """
    root = Path(root)
    skip = {METRICS_STORE, RECONSTRUCTIONS_STORE, CHECKPOINTS_DIR}
    runs = []
    for directory, subdirs, files in os.walk(root):
        if CONFIG_FILE in files:
            runs.append(Path(directory))
        subdirs[:] = [d for d in subdirs if d not in skip and not d.startswith(".")]
    return sorted(runs)
