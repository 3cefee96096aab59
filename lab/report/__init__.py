"""Standalone HTML reports of runs: ``fae-lab report RUN_OR_DIR --out FILE.html``.

- :mod:`lab.report.page`: the page (escaped text, tables, BokehJS inlined);
- :mod:`lab.report.run`: one run's sections (settings, curves, bands with a step selector,
  learned fraction, reconstructions, per scale);
- :mod:`lab.report.compare`: several runs' (ranking, ladder, overlaid curves);
- :mod:`lab.report.build`: which report a path asks for, and writing it safely;
- :mod:`lab.report.cli`: the command.

Bokeh only (no Panel, no server, no JAX).
"""

from lab.report.build import comparison_html, report_html, run_report_html, write_report
from lab.report.cli import main

__all__ = ["comparison_html", "main", "report_html", "run_report_html", "write_report"]
