"""``metrics.zarr`` read with zarr directly: the reader's fast path to rows of a run store.

Opening the store with xarray costs tens of milliseconds per run (decoding every variable's
metadata into a Dataset), and each ``isel(...).load()`` more; over a few hundred runs on the
first page load that dominates. The store's consolidated metadata (written when the run is
created, docs/run-store.md) names every array with its ``dimension_names``, shape and
attributes, so one read of it is enough to know the layout, and a row range of one variable
is then one read of the chunks it spans. zarr-python reads each chunk through its event-loop
thread and a worker thread, a fixed cost per chunk that over a few hundred runs outweighed the
reading itself, so the arrays the writer creates (plain ones, :mod:`fae_lab.store.chunkfiles`)
are read from their chunk files here, and only any other array through zarr-python, many row
ranges of many runs in one trip to its event loop (:func:`read_many`).

What xarray would decode is nothing here: every variable is float64 with NaN as fill value,
coordinates int64, float64 or bool; none carries a scale factor or a time unit. Which arrays
are coordinates follows xarray's rule for zarr: an array named after its one dimension, or one
named in some array's ``coordinates`` attribute.

NumPy, numcodecs and zarr only.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from fae_lab.store.chunkfiles import ChunkFiles


class _DirectReaders(Mapping):
    """name -> :class:`ChunkFiles` of a plain array (None for another kind), made on first
    use from the array's metadata."""

    def __init__(self, path: Path, metadata: dict[str, dict[str, Any]]):
        self._path, self._metadata = path, metadata
        self._readers: dict[str, ChunkFiles | None] = {}

    def __getitem__(self, name: str) -> ChunkFiles | None:
        if name not in self._readers:
            self._readers[name] = ChunkFiles.plain(self._path, name, self._metadata[name])
        return self._readers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metadata)

    def __len__(self) -> int:
        return len(self._metadata)


class MetricsArrays:
    """The arrays of one ``metrics.zarr``, opened once from its consolidated metadata.

    ``dims[name]`` is each array's dimension names, ``shapes[name]`` its shape, ``sizes`` the
    length of each dimension, ``attrs`` the group's attributes and ``data_vars`` the names of
    the data variables (not coordinates), in the store's order.

    The group's ``zarr.json`` is read as JSON; an array whose metadata is plain
    (:class:`~fae_lab.store.chunkfiles.ChunkFiles`: what the writer creates) is read from its
    chunk files, any other through zarr-python, as is a store without consolidated metadata.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._group: zarr.Group | None = None
        self._zarr_arrays: dict[str, zarr.Array] = {}
        metadata = self._consolidated()
        if metadata is None:  # not the writer's kind of store: zarr-python reads it all
            group = self._zarr_group()
            metadata = {name: {"shape": array.shape, "attributes": array.attrs.asdict(),
                               "dimension_names": array.metadata.dimension_names}
                        for name, array in group.arrays()}
            self.attrs: dict[str, Any] = group.attrs.asdict()
            self._direct: Mapping[str, ChunkFiles | None] = dict.fromkeys(metadata)
        else:  # each array's reader made on its first read (most are never read)
            self._direct = _DirectReaders(self.path, metadata)
        self.dims = {name: tuple(meta.get("dimension_names") or ())
                     for name, meta in metadata.items()}
        self.shapes = {name: tuple(int(n) for n in meta["shape"])
                       for name, meta in metadata.items()}
        self.sizes: dict[str, int] = {}
        for name, dims in self.dims.items():
            self.sizes.update(zip(dims, self.shapes[name], strict=True))
        named = {c for meta in metadata.values()
                 for c in str((meta.get("attributes") or {}).get("coordinates", "")).split()}
        self.coords = {name for name, dims in self.dims.items()
                       if dims == (name,) or name in named}
        self.data_vars = [name for name in metadata if name not in self.coords]
        self._fixed: dict[str, np.ndarray] = {}

    def _consolidated(self) -> dict[str, dict[str, Any]] | None:
        """name -> zarr.json document of each array of the group (its top level), from the
        group's consolidated metadata; None if the store has none (or is not zarr v3)."""
        document = json.loads((self.path / "zarr.json").read_text())
        if not isinstance(document, dict):
            return None
        consolidated = document.get("consolidated_metadata")
        if (document.get("zarr_format") != 3 or not isinstance(consolidated, dict)
                or not isinstance(consolidated.get("metadata"), dict)):
            return None
        self.attrs = dict(document.get("attributes") or {})
        return {name: meta for name, meta in consolidated["metadata"].items()
                if "/" not in name and isinstance(meta, dict) and meta.get("node_type") == "array"}

    def _zarr_group(self) -> zarr.Group:
        if self._group is None:
            with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet
                warnings.simplefilter("ignore")
                self._group = zarr.open_group(str(self.path), mode="r")
        return self._group

    def _zarr_array(self, name: str) -> zarr.Array:
        if name not in self._zarr_arrays:
            self._zarr_arrays[name] = self._zarr_group()[name]
        return self._zarr_arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` along the first dimension of ``name``."""
        return self.read([name], start, stop)[name]

    def read(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` along the first dimension of each of ``names``: plain arrays
        from their chunk files, the others concurrently in one trip to zarr's event loop."""
        answer = read_many([(self, names, start, stop)])[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _read_direct(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: self._direct[name].rows(start, stop)  # type: ignore[union-attr]
                for name in names if self._direct.get(name) is not None}

    async def _read_async(self, names: list[str], start: int,
                          stop: int) -> dict[str, np.ndarray]:
        arrays = [self._zarr_arrays[name] for name in names]  # opened by read_many
        values = await asyncio.gather(*(array.async_array.getitem(slice(start, stop))
                                        for array in arrays))
        return dict(zip(names, (np.asarray(v) for v in values), strict=True))

    def fixed(self, name: str) -> np.ndarray:
        """The whole of ``name``, read once (for coordinates: written when the run is created,
        never changed)."""
        if name not in self._fixed:
            self._fixed[name] = self.rows(name, 0, self.shapes[name][0])
        return self._fixed[name]


RowsRequest = tuple[MetricsArrays, list[str], int, int]


def read_many(requests: list[RowsRequest]) -> list[dict[str, np.ndarray] | BaseException]:
    """:meth:`MetricsArrays.read` of each ``(arrays, names, start, stop)``: the plain arrays
    from their chunk files, all others in one trip to zarr's event loop (over many runs, one
    trip per run was most of a page load's wait). Each answer is the request's rows, or the
    exception its read raised (the others still read)."""
    answers: list[dict[str, np.ndarray] | BaseException] = []
    through_zarr = []
    for index, (arrays, names, start, stop) in enumerate(requests):
        rest = [name for name in names if arrays._direct.get(name) is None]
        try:
            answer = arrays._read_direct(names, start, stop)
            for name in rest:  # opened here: zarr's sync calls may not run on its loop
                arrays._zarr_array(name)
        except Exception as err:  # a damaged chunk or array: this request's answer
            answers.append(err)
            continue
        answers.append(answer)
        if rest:
            through_zarr.append((index, arrays, rest, start, stop))
    if not through_zarr:
        return answers

    async def gather():
        return await asyncio.gather(*(arrays._read_async(rest, start, stop)
                                      for _, arrays, rest, start, stop in through_zarr),
                                    return_exceptions=True)

    for (index, *_), answer in zip(through_zarr, sync(gather()), strict=True):
        done = answers[index]
        if isinstance(answer, BaseException):
            answers[index] = answer
        elif isinstance(done, dict):
            done.update(answer)
    for (_, names, _, _), done in zip(requests, answers, strict=True):
        if isinstance(done, dict):  # the request's order of names
            done_in_order = {name: done[name] for name in names}
            done.clear()
            done.update(done_in_order)
    return answers
