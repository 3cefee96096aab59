"""Helpers of the report tests: fabricated runs, and the tables of a report page read back with
the standard library's HTML parser (independent of how lab.report writes them)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from fae_lab.testing.fake_runs import write_synthetic_run

HOSTILE = '<img src=x onerror="window.__xss=1">'
SMALL = dict(n_evals=5, eval_every=20, log_every=5, resolution=16, n_scales=3, n_samples=2,
             n_bins=8)


def write_report_runs(root: Path) -> Path:
    """A baseline, an experiment of two seeds (training split stored), a run with a hostile
    name and an auto-decoder rung of the ladder."""
    write_synthetic_run(root / "baseline", seed=0, train_split=True, **SMALL)
    for seed in (0, 1):
        write_synthetic_run(root / f"h1_s{seed}", loss_type="h1", seed=10 + seed, train_split=True,
                            **SMALL)
    write_synthetic_run(root / HOSTILE, loss_type="fourier_weighted", seed=3, **SMALL)
    write_synthetic_run(root / "ladder_auto_decoder", rung="auto_decoder", seed=4, train_split=True,
                        **SMALL)
    return root


class Tables(HTMLParser):
    """Every ``<table>`` of a page: its class, and each row as a list of cells; a cell is
    ``(text, data-value, data-spread)``."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._cell: list | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attrs.get("class", ""), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = ["", attrs.get("data-value"), attrs.get("data-spread")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def named(self, css_class: str) -> list[list[tuple]]:
        """The rows (header first) of the table whose class includes ``css_class``."""
        for table in self.tables:
            if css_class in table["class"].split():
                return table["rows"]
        raise AssertionError(f"no table {css_class!r} in the page")
