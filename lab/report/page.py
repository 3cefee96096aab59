"""The report's one HTML file: escaped text and tables around Bokeh plots, BokehJS inlined.

A page is a title, a few header lines and a list of :class:`Section`. Every string that comes
from a run (names, config values, messages, paths) goes through :func:`lab.text.html_text`
here, so a hostile run name is shown as text and runs no script. Bokeh roots are embedded with
:func:`bokeh.embed.components` (one document: ``Bokeh.documents[0]`` in the page) and BokehJS
itself is inlined (:data:`RESOURCES`), so the file opens offline: no CDN, no server, no web
fonts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bokeh.core.templates import JS_RESOURCES
from bokeh.embed import components
from bokeh.model import Model
from bokeh.resources import INLINE

from lab.text import html_text

# BokehJS core and widgets (the step selector); no tables, GL or MathJax, which the page never uses.
RESOURCES = INLINE.clone(components=["bokeh", "bokeh-widgets"])


def inline_bokehjs() -> str:
    """BokehJS's own code in ``<script>`` elements, and nothing else. Not
    ``RESOURCES.render_js()``: that also links every file a registered extension asks for
    (once Panel is imported, its bundles, by URLs relative to a server), which a file opened
    offline cannot load."""
    return JS_RESOURCES.render(js_raw=RESOURCES.js_raw, js_files=[], hashes={})


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table.report { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.report th, table.report td { border: 1px solid #ddd; padding: 2px 6px; text-align: left;
                                   vertical-align: top; }
table.report th { background: #f3f3f3; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
p.note { color: #555; font-size: 0.9em; max-width: 60em; }
.header td:first-child { font-weight: 600; }
"""


@dataclass
class Section:
    """One ``<h2>`` section: ``title`` and ``note`` are text (escaped); ``html`` is markup
    built from escaped pieces (:func:`table`); ``plot`` a Bokeh root drawn after it."""

    title: str
    note: str = ""
    html: str = ""
    plot: Model | None = None


def number_text(value: float, spread: float | None = None, digits: int = 4) -> str:
    """``value`` (and ``± spread``) in ``digits`` significant figures; ``-`` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.{digits}g}"
    if spread is not None and math.isfinite(spread):
        text += f" ± {spread:.2g}"
    return text


def cell(value: Any, spread: float | None = None) -> str:
    """One ``<td>``: a number right-aligned with its full value in ``data-value`` (what a
    reader or a test can take back exactly), anything else as escaped text."""
    if isinstance(value, bool) or value is None:
        return f"<td>{html_text('-' if value is None else value)}</td>"
    if isinstance(value, int):
        return f'<td class="number" data-value="{value}">{value}</td>'
    if isinstance(value, float):
        attrs = f' data-value="{value!r}"'
        if spread is not None:
            attrs += f' data-spread="{spread!r}"'
        return f'<td class="number"{attrs}>{html_text(number_text(value, spread))}</td>'
    return f"<td>{html_text(value)}</td>"


def table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]], css_class: str = "",
          spreads: Sequence[Sequence[float | None]] | None = None) -> str:
    """An HTML table of ``rows`` under ``header`` (both escaped; :func:`cell` per value; no
    header row when ``header`` is None); ``spreads[i][j]`` adds ``± spread`` to row i's cell j."""
    head = "" if header is None else (
        "<thead><tr>" + "".join(f"<th>{html_text(h)}</th>" for h in header) + "</tr></thead>")
    body = []
    for i, row in enumerate(rows):
        row_spreads = spreads[i] if spreads is not None else [None] * len(row)
        body.append("<tr>" + "".join(cell(v, s) for v, s in zip(row, row_spreads, strict=True))
                    + "</tr>")
    classes = html_text(f"report {css_class}".strip())
    return f'<table class="{classes}">{head}<tbody>{"".join(body)}</tbody></table>'


def render(title: str, header: Sequence[tuple[str, Any]], sections: Sequence[Section]) -> str:
    """The whole page: ``title`` (text), a header table of (label, value) pairs, the sections."""
    roots = {f"plot{i}": s.plot for i, s in enumerate(sections) if s.plot is not None}
    script, divs = components(roots) if roots else ("", {})
    body = [f"<h1>{html_text(title)}</h1>",
            table(None, [(k, v) for k, v in header], "header")]
    contents = "".join(f'<li><a href="#s{i}">{html_text(s.title)}</a></li>'
                       for i, s in enumerate(sections))
    body.append(f"<ul class='contents'>{contents}</ul>")
    for i, section in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html_text(section.title)}</h2>')
        if section.note:
            body.append(f'<p class="note">{html_text(section.note)}</p>')
        body.append(section.html)
        if section.plot is not None:
            body.append(divs[f"plot{i}"])
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>{html_text(title)}</title>\n<style>{STYLE}</style>\n"
            f"{inline_bokehjs()}\n</head>\n<body>\n"
            + "\n".join(body) + f"\n{script}\n</body>\n</html>\n")
