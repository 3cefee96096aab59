"""Regenerate each notebooks/<name>.ipynb from its reviewed jupytext source notebooks/<name>.py.

    python scripts/sync_notebooks.py           # write every .ipynb (what `make notebooks` runs)
    python scripts/sync_notebooks.py --check   # exit 1, naming them, if any .ipynb is stale

The .ipynb is written without outputs and with cell ids numbered in order (``cell-00``, ...),
so regenerating an unchanged source gives the same bytes and a review diff shows only what
changed in the .py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def paired(source: Path) -> str:
    """The .ipynb text generated from ``source``."""
    notebook = jupytext.read(source)
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for source in sorted(NOTEBOOKS.glob("*.py")):
        target = source.with_suffix(".ipynb")
        text = paired(source)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target)
        if not check:
            target.write_text(text)
            print(f"wrote {target.relative_to(NOTEBOOKS.parent)}")
    if check and stale:
        print("stale (run `make notebooks`): " + ", ".join(str(t.relative_to(NOTEBOOKS.parent)) for t in stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
