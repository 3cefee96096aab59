"""One zarr v3 array of ``metrics.zarr`` read straight from its chunk files, when its metadata
is of the plain kind the run-store writer creates (docs/run-store.md); else None and the caller
reads it through zarr-python.

zarr-python reads each chunk through its event-loop thread and decodes it in a worker thread:
a fixed cost per chunk that, over the few hundred runs of a dashboard page, outweighed the
reading itself (benchmarks/RESULTS.md). A metrics array is small and plain, so reading its
chunk files here is one ``open`` and one zstd decode per chunk.

Plain means: zarr format 3, a ``regular`` chunk grid whose chunks hold every dimension but the
first whole, the ``default`` chunk-key encoding (``c/<i>/0/...``), no storage transformers, and
codecs ``bytes`` (little-endian, or no endianness for one-byte types) optionally followed by
``zstd``; data type float64, float32, int64, int32 or bool. A chunk file that is missing holds
only the fill value (zarr writes none). The writer replaces a chunk file by renaming a complete
one over it, so a read gets the old file or the new one.

NumPy and numcodecs (zarr's own zstd) only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Zstd

DTYPES = {"float64": "<f8", "float32": "<f4", "int64": "<i8", "int32": "<i4", "bool": "|b1"}
_ZSTD = Zstd()


def _fill(value: Any, dtype: np.dtype) -> Any:
    if isinstance(value, str):  # "NaN", "Infinity", "-Infinity" (zarr v3's JSON for floats)
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}[value]
    return False if value is None and dtype.kind == "b" else value


class ChunkFiles:
    """Rows of one array, read from ``<array>/c/<i>/0/...`` files.

    ``shape`` is the array's shape, ``chunk_rows`` the rows per chunk along the first
    dimension (the others are whole in each chunk).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], chunk_rows: int, dtype: str,
                 separator: str, zstd: bool, fill_value: Any):
        self.path = path
        self.shape = shape
        self.chunk_rows = chunk_rows
        self.dtype = np.dtype(dtype)
        self.separator = separator
        self.zstd = zstd
        self.fill_value = _fill(fill_value, self.dtype)
        self._chunk_shape = (chunk_rows, *shape[1:])
        self._suffix = "".join(separator + "0" for _ in shape[1:])

    @classmethod
    def plain(cls, store: Path, name: str, meta: dict[str, Any]) -> ChunkFiles | None:
        """The reader of array ``name`` of ``store`` if ``meta`` (its zarr.json document) is
        plain (module docstring), else None."""
        try:
            shape = tuple(int(n) for n in meta["shape"])
            grid, keys = meta["chunk_grid"], meta["chunk_key_encoding"]
            chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
            codecs = [c["name"] for c in meta["codecs"]]
            if (meta.get("zarr_format") != 3 or meta.get("node_type") != "array"
                    or meta.get("data_type") not in DTYPES or meta.get("storage_transformers")
                    or grid["name"] != "regular" or keys["name"] != "default"
                    or not shape or len(chunks) != len(shape) or chunks[1:] != shape[1:]
                    or chunks[0] < 1 or codecs not in (["bytes"], ["bytes", "zstd"])):
                return None
            endian = (meta["codecs"][0].get("configuration") or {}).get("endian")
            if endian not in ("little", None) or (endian is None and DTYPES[meta["data_type"]][0] != "|"):
                return None
            separator = (keys.get("configuration") or {}).get("separator", "/")
            return cls(store / name, shape, chunks[0], DTYPES[meta["data_type"]], separator,
                       codecs == ["bytes", "zstd"], meta.get("fill_value"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return None

    def chunk(self, index: int) -> np.ndarray:
        """Chunk ``index`` along the first dimension, ``(chunk_rows, *shape[1:])``."""
        key = self.path / f"c{self.separator}{index}{self._suffix}"
        try:
            raw = key.read_bytes()
        except FileNotFoundError:
            return np.full(self._chunk_shape, self.fill_value, dtype=self.dtype)
        data = _ZSTD.decode(raw) if self.zstd else raw
        expected = math.prod(self._chunk_shape) * self.dtype.itemsize
        if len(data) != expected:
            raise ValueError(f"{key}: {len(data)} bytes decoded, a chunk holds {expected}")
        return np.frombuffer(data, dtype=self.dtype).reshape(self._chunk_shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (clipped to the array, as a slice is)."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        out = np.empty((max(stop - start, 0), *self.shape[1:]), dtype=self.dtype)
        if stop <= start:
            return out
        rows = self.chunk_rows
        for index in range(start // rows, (stop - 1) // rows + 1):
            first, last = max(start, index * rows), min(stop, (index + 1) * rows)
            out[first - start:last - start] = self.chunk(index)[first - index * rows:
                                                                 last - index * rows]
        return out
