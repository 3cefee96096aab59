"""The sidebar's "Download report" button: the drawn runs as one self-contained HTML file.

One drawn run gives its report, several their comparison (:mod:`lab.report`), read from disk
when the button is pressed through fresh readers (the session's own readers track only what
its views draw). The file is what ``fae-lab report`` writes.
"""

from __future__ import annotations

import io

import panel as pn

from fae_lab.errors import UsageError
from fae_lab.store import open_run
from lab.report import comparison_html, run_report_html
from lab.state import LabState

FILENAME = "fae-lab-report.html"


def report_of(state: LabState, runs: list[str]) -> str:
    """The report of ``runs`` (names in ``state``): one run's, or their comparison; runs that
    cannot be read are listed as such."""
    readers, unreadable = {}, {}
    for run in runs:
        try:
            readers[run] = open_run(state.source[run].path)
        except UsageError as err:  # open_run's one line, whatever the run holds
            unreadable[run] = str(err)
    if len(readers) == 1 and not unreadable:
        return run_report_html(next(iter(readers.values())))
    if not readers:
        raise ValueError("no drawn run can be read")
    return comparison_html(f"fae-lab report: {state.source.root.resolve().name}", readers,
                           unreadable, str(state.source.root))


class ReportDownload(pn.viewable.Viewer):
    """A ``FileDownload`` that writes the report of the runs drawn now."""

    def __init__(self, state: LabState, **params):
        super().__init__(**params)
        self.state = state
        self.button = pn.widgets.FileDownload(
            callback=self._report, filename=FILENAME, label="Download report (HTML)",
            button_type="primary", button_style="outline", sizing_mode="stretch_width",
            css_classes=["report-download"])
        state.param.watch(self._enable, "visible")
        self._enable()

    def __panel__(self):
        return self.button

    def _enable(self, *_events) -> None:
        self.button.disabled = not self.state.visible

    def _report(self) -> io.BytesIO:
        return io.BytesIO(report_of(self.state, list(self.state.visible)).encode("utf-8"))
