"""The runs: a table of every drawn run, and the tag filter that decides which are drawn.

The table has one row per run with its tags (the seed's scheme ``[training_mode, loss_type,
decoder_type, pooling_type]``), status (running, finished, failed, diverged), step and
headline metrics (newest evaluation; ``final.json`` once it has ended). The table follows every
poll, also while its tab is hidden; cells are patched in place while it is on screen, its value
replaced otherwise (see :meth:`RunsTable.refresh`). A run that
cannot be read has status ``unreadable`` and the reason as its message, and the filter's panel
lists every unreadable run (also those without a readable ``config.json``) as plain text.
"""

from __future__ import annotations

import time

import pandas as pd
import panel as pn
import param

from fae_lab.errors import UsageError
from fae_lab.store import PollResult
from lab.archive import ARCHIVE_FOLDER, archive_run, delete_run
from lab.state import TAG_LABELS, LabState
from lab.text import html_text, isolated_name, markdown_text
from lab.views.base import LiveView

COLUMN_TITLES = {
    "colour": "", "run": "Run", "training_mode": "Mode", "loss_type": "Loss",
    "decoder_type": "Decoder", "pooling_type": "Pooling", "status": "Status", "step": "Step",
    "max_steps": "of", "evaluations": "Evals", "rel_mse": "Rel. MSE",
    "high_freq_ratio": "HF ratio", "final_test_rel_mse": "final/test_rel_mse",
    "final_held_out_avg_mse": "final/held_out_avg_mse", "message": "Message",
}
_SCIENTIFIC = {"type": "money", "precision": 4, "symbol": ""}
SUMMARY_NAMES = 8  # runs named in the sidebar's summary
# After its tab is shown, the table's value is replaced rather than patched for this long: the
# browser builds the Tabulator meanwhile, and a patch cannot reach a table not yet built.
BUILD_GRACE_S = 3.0


def runs_frame(state: LabState, runs: list[str]) -> pd.DataFrame:
    """The table's rows: ``state.source[run].summary()`` plus the run's colour, index 0..n-1."""
    rows = [{"colour": state.colour(run), **state.source[run].summary()} for run in runs]
    return pd.DataFrame(rows, columns=list(COLUMN_TITLES))


class RunFilter(pn.viewable.Viewer):
    """Toggle buttons for each tag, the colour-by choice and an optional pick of runs by name."""

    def __init__(self, state: LabState, **params):
        super().__init__(**params)
        self.state = state
        self.toggles = {
            tag: pn.widgets.CheckButtonGroup.from_param(
                state.param[tag], name=TAG_LABELS[tag], button_type="primary",
                button_style="outline", sizing_mode="stretch_width", orientation="vertical"
                if tag == "loss_type" else "horizontal")
            for tag in ("loss_type", "decoder_type", "training_mode", "pooling_type", "rung")
        }
        self.colour_by = pn.widgets.Select.from_param(state.param.colour_by, name="Colour by",
                                                      sizing_mode="stretch_width")
        # A native multi-select: its options are text. (Bokeh's MultiChoice hands labels to
        # Choices.js with allowHTML on, so a run named like an <img> tag would run script.)
        self.chosen = pn.widgets.MultiSelect.from_param(
            state.param.chosen, name="Only these runs (none selected: all)", size=6,
            sizing_mode="stretch_width", css_classes=["chosen-runs"])
        # HTML built here from escaped names (lab.text): the names are never markup.
        self.summary = pn.pane.HTML(self._summary_text(), css_classes=["drawn-runs"],
                                    sizing_mode="stretch_width")
        state.param.watch(lambda *_: setattr(self.summary, "object", self._summary_text()),
                          ["visible", "runs"])
        # Plain text (a <pre>, escaped): run names and reasons come from files on disk.
        text = self._unreadable_text()
        self.unreadable = pn.pane.Str(
            text, css_classes=["unreadable-runs"], visible=bool(text), sizing_mode="stretch_width",
            stylesheets=["pre { white-space: pre-wrap; overflow-wrap: anywhere; }"])
        state.subscribe(self._show_unreadable)

    def _summary_text(self) -> str:
        """HTML: how many runs are drawn and the first few names, escaped and isolated."""
        visible, total = self.state.visible, len(self.state.runs)
        if not total:
            return f"No runs yet under <code>{html_text(self.state.source.root)}</code>."
        shown = visible[:SUMMARY_NAMES]
        names = ", ".join(map(isolated_name, shown)) if shown else "none"
        more = f" and {len(visible) - len(shown)} more" if len(visible) > len(shown) else ""
        return f"Drawing {len(visible)} of {total} runs: {names}{more}"

    def _unreadable_text(self) -> str:
        """One line per run that could not be read at the last poll: its name and why."""
        unreadable = self.state.source.unreadable
        if not unreadable:
            return ""
        lines = [f"{name}: {why}" for name, why in sorted(unreadable.items())]
        return "Unreadable runs (last rows read, if any, are kept):\n" + "\n".join(lines)

    def _show_unreadable(self, result: PollResult) -> None:
        text = self._unreadable_text()
        if text != self.unreadable.object:
            self.unreadable.object = text
            self.unreadable.visible = bool(text)

    def __panel__(self):
        widgets = []
        for tag, toggle in self.toggles.items():
            widgets += [pn.pane.Markdown(f"**{TAG_LABELS[tag]}**", margin=(8, 10, 0, 10)),
                        toggle]
        return pn.Column(*widgets, self.colour_by, self.chosen, self.summary, self.unreadable,
                         sizing_mode="stretch_width")


class RunsTable(LiveView):
    """Every drawn run with its tags, status, step and metrics, updated in place."""

    page_size = param.Integer(default=50, bounds=(5, 500))

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        formatters = {name: _SCIENTIFIC for name in
                      ("rel_mse", "high_freq_ratio", "final_test_rel_mse",
                       "final_held_out_avg_mse")}
        formatters["colour"] = {"type": "color"}
        self._replace_until = 0.0  # see BUILD_GRACE_S
        self.table = pn.widgets.Tabulator(
            runs_frame(state, state.visible), show_index=False, disabled=True,
            titles=COLUMN_TITLES, formatters=formatters, widths={"colour": 12},
            pagination="local", page_size=self.page_size, sizing_mode="stretch_width",
            layout="fit_data_table", css_classes=["runs-table"])
        self.actions = RunActions(state)
        self.start()
        self._replace_until = 0.0  # shown from the start: built with the page

    def __panel__(self):
        return pn.Column(self.table, self.actions, sizing_mode="stretch_width")

    def refresh(self) -> None:
        """Rows for the drawn runs: cells patched if the rows are the same runs and the table
        has been on screen for :data:`BUILD_GRACE_S`, else the value replaced.

        A patch that reaches the browser while its Tabulator is still being built (its tab was
        just shown) fails there ("Table Not Initialized") and left the table stale; a new value
        is applied by Panel once the table is built."""
        frame = runs_frame(self.state, self.state.visible)
        current = self.table.value
        if _same_frame(current, frame):
            return
        if (not self.shown or time.monotonic() < self._replace_until
                or list(current["run"]) != list(frame["run"])
                or list(current.columns) != list(frame.columns)):
            self.table.value = frame
            return
        patch: dict[str, list[tuple[int, object]]] = {}
        for column in frame.columns:
            old, new = current[column].to_numpy(), frame[column].to_numpy()
            for row in range(len(frame)):
                if not _equal(old[row], new[row]):
                    patch.setdefault(column, []).append((row, new[row]))
        self.table.patch(patch, as_index=False)

    def ingest(self, result: PollResult) -> None:
        if any(delta.name in self.state.visible for delta in result.deltas) or result.new_runs:
            self.refresh()

    def _on_poll(self, result: PollResult) -> None:
        """Kept up to date while hidden too (a small frame per poll that changed a run), so
        a tab shown later is built with the current rows."""
        if result.deltas or result.new_runs:
            self.ingest(result)

    @param.depends("shown", watch=True)
    def _on_shown(self) -> None:
        if self.shown:
            self._replace_until = time.monotonic() + BUILD_GRACE_S
        if self.shown and self._stale:
            self._refresh_now()


def _equal(a: object, b: object) -> bool:
    return bool(a == b) or (_isnan(a) and _isnan(b))


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two tables hold the same runs, columns and cells (NaN equal to NaN)."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    return all(_equal(x, y) for column in a.columns
               for x, y in zip(a[column].to_numpy(), b[column].to_numpy(), strict=True))


def _isnan(value: object) -> bool:
    return isinstance(value, float) and value != value


class RunActions(pn.viewable.Viewer):
    """Archive (move to ``RUNS/.archive/``) or delete one run, each only after a confirmation.

    The first button only asks: it names the run and the action, and shows Confirm and Cancel;
    nothing on disk changes until Confirm (:mod:`lab.archive` does the move or removal, never
    outside the runs directory). Choosing another run, or Cancel, withdraws the question.
    """

    run = param.Selector(default=None, objects=[], doc="The run to archive or delete.")
    pending = param.Selector(default=None, objects=[None, "archive", "delete"], doc="""
        The action asked for and not yet confirmed.""")

    def __init__(self, state: LabState, **params):
        super().__init__(**params)
        self.state = state
        self.archive_button = pn.widgets.Button(name="Archive…", button_type="warning",
                                                css_classes=["archive-run"])
        self.delete_button = pn.widgets.Button(name="Delete…", button_type="danger",
                                               css_classes=["delete-run"])
        self.confirm_button = pn.widgets.Button(name="Confirm", button_type="danger",
                                                css_classes=["confirm-run-action"], visible=False)
        self.cancel_button = pn.widgets.Button(name="Cancel", css_classes=["cancel-run-action"],
                                               visible=False)
        self.archive_button.on_click(lambda _: self.ask("archive"))
        self.delete_button.on_click(lambda _: self.ask("delete"))
        self.confirm_button.on_click(lambda _: self.confirm())
        self.cancel_button.on_click(lambda _: self.cancel())
        # Markdown built from escaped names only (lab.text.markdown_text).
        self.message = pn.pane.Alert("", alert_type="light", visible=False, disable_math=True,
                                     css_classes=["run-action-message"])
        state.param.watch(lambda *_: self._follow_runs(), ["runs"])
        self._follow_runs()

    def _follow_runs(self) -> None:
        runs = list(self.state.runs)
        self.param.run.objects = runs
        if self.run not in runs:
            self.run = runs[0] if runs else None

    def ask(self, action: str) -> None:
        """Ask to confirm ``action`` ("archive" or "delete") of the chosen run."""
        if self.run is None:
            return
        where = (f"move it to {markdown_text(ARCHIVE_FOLDER)}/ under the runs directory"
                 if action == "archive" else "remove its folder and everything in it")
        self.pending = action
        self._say(f"{action.capitalize()} run **{markdown_text(self.run)}**: {where}? "
                  "Nothing changes until you confirm.", "warning")

    def confirm(self) -> None:
        """Do the pending action (if any) on the chosen run."""
        action, run = self.pending, self.run
        self.pending = None
        if action is None or run is None:
            return
        try:
            if action == "archive":
                target = archive_run(self.state.source.root, run)
                done = f"Archived **{markdown_text(run)}** to {markdown_text(target)}."
            else:
                delete_run(self.state.source.root, run)
                done = f"Deleted **{markdown_text(run)}**."
        except (UsageError, OSError) as err:
            self._say(f"Not done: {markdown_text(err)}", "danger")
            return
        self.state.forget(run)
        self._say(done, "success")

    def cancel(self) -> None:
        self.pending = None
        self.message.visible = False

    @param.depends("run", watch=True)
    def _withdraw(self) -> None:  # a confirmation is for the run it named
        if self.pending is not None:
            self.cancel()

    @param.depends("pending", watch=True)
    def _show_confirmation(self) -> None:
        self.confirm_button.visible = self.cancel_button.visible = self.pending is not None
        if self.pending is not None:
            self.confirm_button.name = f"Confirm: {self.pending}"

    def _say(self, text: str, kind: str) -> None:
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("**Archive or delete a run**"),
            pn.Row(pn.widgets.Select.from_param(self.param.run, name="Run", width=280),
                   self.archive_button, self.delete_button, self.confirm_button,
                   self.cancel_button, align="end"),
            self.message, sizing_mode="stretch_width")
