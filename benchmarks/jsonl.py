"""One result of a benchmark: printed as a JSON line, and appended to a JSON-lines file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, path: Path | None) -> None:
    """Print ``result`` as one JSON line; append the same line to ``path`` unless it is None."""
    line = json.dumps(result)
    print(line, flush=True)
    if path is not None:
        with Path(path).open("a") as out:
            out.write(line + "\n")
