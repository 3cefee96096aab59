"""Every run under a directory: found, read incrementally, and the unreadable ones set apart.

A run is a folder holding a ``config.json`` (the writer writes it last when it creates a run,
so the stores exist by then). :class:`RunsDirectory` finds runs at every poll and keeps one
:class:`~fae_lab.store.reader.RunReader` per run; a run that cannot be read (its
``config.json``, its ``progress.json`` or its stores) is listed in
:attr:`RunsDirectory.unreadable` with a one-line reason and never stops the others.

NumPy, xarray and zarr only: no JAX, no Panel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fae_lab.store.layout import CHECKPOINTS_DIR, CONFIG_FILE, METRICS_STORE, RECONSTRUCTIONS_STORE
from fae_lab.store.reader import RunDelta, RunReader, poll_readers, reason

__all__ = ["PollResult", "RunsDirectory", "list_runs"]


def list_runs(root: str | os.PathLike) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds a ``config.json``, sorted.

    The search does not descend into a run's own stores and checkpoints, or hidden folders;
    folders it may not list are passed over.
    """
    root = Path(root)
    skip = {METRICS_STORE, RECONSTRUCTIONS_STORE, CHECKPOINTS_DIR}
    runs = []
    for directory, subdirs, files in os.walk(root):
        if CONFIG_FILE in files:
            runs.append(Path(directory))
        subdirs[:] = [d for d in subdirs if d not in skip and not d.startswith(".")]
    return sorted(runs)


@dataclass(frozen=True)
class PollResult:
    """One poll of a runs directory: runs seen for the first time, and what changed in each."""

    new_runs: list[str]
    deltas: list[RunDelta]


class RunsDirectory:
    """Every run under ``root`` (``root`` itself included), discovered and polled.

    Runs are kept in the order they were found. ``readers`` holds a reader for each run whose
    ``config.json`` could be read; a run whose ``config.json`` cannot be is retried at every
    poll.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.readers: dict[str, RunReader] = {}
        self._unopened: dict[str, str] = {}  # run -> why its config.json cannot be read

    @property
    def unreadable(self) -> dict[str, str]:
        """run -> one-line reason, for every run that could not be read at the last poll: those
        whose ``config.json`` cannot be read (no reader) and those whose reader has an
        ``error`` (it keeps its last good rows)."""
        failed = {name: reader.error for name, reader in self.readers.items() if reader.error}
        return {**self._unopened, **failed}

    def _name(self, path: Path) -> str:
        relative = path.relative_to(self.root).as_posix()
        return self.root.resolve().name if relative == "." else relative

    def discover(self) -> list[str]:
        """Open readers for runs not seen before; returns their names."""
        new = []
        found = [(self._name(path), path)
                 for path in (list_runs(self.root) if self.root.is_dir() else [])]
        # A folder no longer holding a config.json is no longer a run that failed to open.
        names = {name for name, _ in found}
        self._unopened = {n: why for n, why in self._unopened.items() if n in names}
        for name, path in found:
            if name in self.readers:
                continue
            try:
                self.readers[name] = RunReader(path, name)
            except Exception as err:  # whatever its config.json holds, the others go on
                self._unopened[name] = reason(err)
                continue
            self._unopened.pop(name, None)
            new.append(name)
        return new

    def poll(self) -> PollResult:
        """Discover new runs, then poll every run for new rows (read in one trip to zarr,
        :func:`~fae_lab.store.reader.poll_readers`)."""
        new = self.discover()
        deltas = []
        for reader, delta in zip(self.readers.values(), poll_readers(list(self.readers.values())),
                                 strict=True):
            if delta.has_rows or delta.reset or delta.status_changed or reader.name in new:
                deltas.append(delta)
        return PollResult(new, deltas)

    def __getitem__(self, name: str) -> RunReader:
        return self.readers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.readers

    def names(self) -> list[str]:
        return list(self.readers)
