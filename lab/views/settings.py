"""The drawn runs' hyperparameters: a table of every setting that differs between them, and the
full difference of two runs' configurations.

Settings come from each run's ``config.json`` (its resolved configuration,
:func:`lab.transforms.flat_settings`). The table has one row per drawn run and one column per
setting whose value is not the same in all of them (:func:`lab.transforms.differing_settings`);
its columns sort on a click of their header and each has a filter box. The diff lists every
setting where run A and run B differ (:func:`lab.transforms.config_diff`). Values are shown as
text (a Tabulator cell does not render HTML unless told to).
"""

from __future__ import annotations

import panel as pn
import param

from fae_lab.store import PollResult
from lab.state import LabState
from lab.transforms import config_diff, differing_settings, flat_settings
from lab.views.base import LiveView


class SettingsView(LiveView):
    """Hyperparameters that differ between the drawn runs, and the config diff of two runs."""

    run_a = param.Selector(default=None, objects=[], label="Run A")
    run_b = param.Selector(default=None, objects=[], label="Run B")

    _structure = ("visible",)

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.table = pn.widgets.Tabulator(
            differing_settings({}), show_index=False, disabled=True, header_filters=True,
            pagination="local", page_size=50, sizing_mode="stretch_width",
            layout="fit_data_table", css_classes=["settings-table"])
        self.diff = pn.widgets.Tabulator(config_diff({}, {}), show_index=False, disabled=True,
                                         sizing_mode="stretch_width", layout="fit_data_table",
                                         css_classes=["config-diff"])
        self.note = pn.pane.Markdown("", css_classes=["settings-note"])
        self.start()

    def settings(self, run: str) -> dict:
        return flat_settings(self.state.source[run].config)

    def refresh(self) -> None:
        runs = [run for run in self.state.visible if run in self.state.source]
        configs = {run: self.settings(run) for run in runs}
        self.table.value = differing_settings(configs)
        n = self.table.value.shape[1] - 1
        self.note.object = (f"{n} setting{'s' if n != 1 else ''} differ between the "
                            f"{len(runs)} drawn runs." if runs else "No run is drawn.")
        with self._hold():
            self.param.run_a.objects = runs
            self.param.run_b.objects = runs
            if self.run_a not in runs:
                self.run_a = runs[0] if runs else None
            if self.run_b not in runs:
                self.run_b = runs[1] if len(runs) > 1 else self.run_a
        self._draw_diff()

    @param.depends("run_a", "run_b", watch=True)
    def _draw_diff(self) -> None:
        if self._holding:
            return
        if self.run_a is None or self.run_b is None:
            self.diff.value = config_diff({}, {})
            return
        diff = config_diff(self.settings(self.run_a), self.settings(self.run_b))
        self.diff.value = diff.rename(columns={"a": f"A: {self.run_a}", "b": f"B: {self.run_b}"})

    def ingest(self, result: PollResult) -> None:
        if result.new_runs:
            self.refresh()

    # Kept up to date while hidden too (like the Runs table; a refresh reads configurations
    # only, at new runs or a new choice of drawn runs): a tab shown later is built with its
    # current columns, rather than getting new column models while the browser builds it.
    def _on_poll(self, result: PollResult) -> None:
        if result.new_runs:
            self._refresh_now()

    def _on_structure(self, *_events) -> None:
        self._refresh_now()

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("**Settings that differ between the drawn runs** (click a header to "
                             "sort; type in the boxes under the headers to filter)"),
            self.note, self.table,
            pn.pane.Markdown("**Configuration diff of two runs**"),
            pn.Row(pn.widgets.Select.from_param(self.param.run_a),
                   pn.widgets.Select.from_param(self.param.run_b)),
            self.diff, sizing_mode="stretch_width")
