"""Small JSON files of a run, replaced atomically.

``progress.json``, ``config.json`` and ``final.json`` are read by dashboards while the
training engine rewrites them. Each write goes to a temporary file in the same directory
and is moved over the old one with ``os.replace`` (an atomic rename on POSIX), so a reader
sees the old file or the new one, never a partial one. JSON has no NaN or infinity: both
become ``null``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: NumPy scalars and arrays become numbers and lists,
    tuples become lists, paths become strings, NaN and +-inf become ``None``."""
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` to ``path`` as JSON (NaN/inf -> null) via a temporary file + ``os.replace``."""
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=1, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document at ``path``."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
