"""``metrics.zarr`` read with zarr directly: the reader's fast path to rows of a run store.

Opening the store with xarray costs tens of milliseconds per run (decoding every variable's
metadata into a Dataset), and each ``isel(...).load()`` more; over a few hundred runs on the
first page load that dominates. The store's consolidated metadata (written when the run is
created, docs/run-store.md) names every array with its ``dimension_names``, shape and
attributes, so one read of it is enough to know the layout, and a row range of one variable
is then one zarr read, ``array[start:stop]``. Each synchronous zarr read is a round trip to
zarr's event-loop thread, which on a busy machine costs more than the read itself, so
:meth:`MetricsArrays.read` reads many row ranges in one trip (``asyncio.gather``), and
:func:`read_many` those of many runs.

What xarray would decode is nothing here: every variable is float64 with NaN as fill value,
coordinates int64, float64 or bool; none carries a scale factor or a time unit. Which arrays
are coordinates follows xarray's rule for zarr: an array named after its one dimension, or one
named in some array's ``coordinates`` attribute.

NumPy and zarr only.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync


class MetricsArrays:
    """The arrays of one ``metrics.zarr``, opened once from its consolidated metadata.

    ``dims[name]`` is each array's dimension names, ``shapes[name]`` its shape, ``sizes`` the
    length of each dimension, ``attrs`` the group's attributes and ``data_vars`` the names of
    the data variables (not coordinates), in the store's order.
    """

    def __init__(self, path: str | os.PathLike):
        with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet
            warnings.simplefilter("ignore")
            group = zarr.open_group(str(path), mode="r", use_consolidated=True)
        self._arrays = dict(group.arrays())
        self.attrs: dict[str, Any] = group.attrs.asdict()
        self.dims = {name: tuple(array.metadata.dimension_names or ())
                     for name, array in self._arrays.items()}
        self.shapes = {name: tuple(array.shape) for name, array in self._arrays.items()}
        self.sizes: dict[str, int] = {}
        for name, dims in self.dims.items():
            self.sizes.update(zip(dims, self.shapes[name], strict=True))
        named = {c for array in self._arrays.values()
                 for c in str(array.attrs.get("coordinates", "")).split()}
        self.coords = {name for name, dims in self.dims.items()
                       if dims == (name,) or name in named}
        self.data_vars = [name for name in self._arrays if name not in self.coords]
        self._fixed: dict[str, np.ndarray] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` along the first dimension of ``name``."""
        return self.read([name], start, stop)[name]

    def read(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` along the first dimension of each of ``names``, read
        concurrently in one trip to zarr's event loop."""
        return sync(self._read_async(names, start, stop))

    async def _read_async(self, names: list[str], start: int,
                          stop: int) -> dict[str, np.ndarray]:
        values = await asyncio.gather(*(self._arrays[name].async_array.getitem(
            slice(start, stop)) for name in names))
        return dict(zip(names, (np.asarray(v) for v in values), strict=True))

    def fixed(self, name: str) -> np.ndarray:
        """The whole of ``name``, read once (for coordinates: written when the run is created,
        never changed)."""
        if name not in self._fixed:
            self._fixed[name] = self._arrays[name][...]
        return self._fixed[name]


RowsRequest = tuple[MetricsArrays, list[str], int, int]


def read_many(requests: list[RowsRequest]) -> list[dict[str, np.ndarray] | Exception]:
    """:meth:`MetricsArrays.read` of each ``(arrays, names, start, stop)``, all in one trip to
    zarr's event loop (over many runs, one trip per run was most of a page load's wait). Each
    answer is the request's rows, or the exception its read raised (the others still read)."""
    if not requests:
        return []

    async def gather():
        return await asyncio.gather(*(arrays._read_async(names, start, stop)
                                      for arrays, names, start, stop in requests),
                                    return_exceptions=True)

    return list(sync(gather()))
