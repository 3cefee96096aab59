"""The HTML report that ``fae-lab demo`` and ``fae-lab phase`` write when they end.

The report (``RUNS/report.html``: ranking, ladder, curves of every run; ``fae-lab report``)
is drawn with Bokeh, which is the ``lab`` extra's and which the backend never imports: it is
written by ``python -m lab.report`` in a child process. Without the extra, one line says how
to get it; a report that fails to be written is one line too, never a failed command (the
runs and ranking.csv are already on disk).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPORT_FILE = "report.html"
LAB_EXTRA_HINT = "pip install -e '.[lab]'"


def lab_installed() -> bool:
    """Whether the dashboards' packages (Bokeh, and lab itself) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("bokeh", "lab"))


def write_runs_report(runs: Path, prog: str) -> Path | None:
    """Write ``runs / report.html`` (replacing the one a previous run of the command wrote) and
    print its path; print one line and return None if it cannot be written."""
    out = Path(runs) / REPORT_FILE
    if not lab_installed():
        print(f"{prog}: no HTML report: it needs the lab extra ({LAB_EXTRA_HINT}); then "
              f"fae-lab report {runs} --out {out}")
        return None
    result = subprocess.run([sys.executable, "-m", "lab.report", str(runs), "--out", str(out),
                             "--overwrite"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        print(f"{prog}: no HTML report: {lines[-1] if lines else f'exit {result.returncode}'}")
        return None
    print(f"report: {out}  (one HTML file, opens offline)")
    return out
