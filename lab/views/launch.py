"""The launch form: loss, decoder, their settings and the main numeric settings of a new run.

The fields come from :mod:`lab.launcher` (the settings of each loss and decoder from the
variant tables of :mod:`fae_lab.variants`; a variant's settings are shown while it is chosen),
their starting values are ``fae-lab train``'s defaults.

A run sized for a GPU (``fae-lab train``'s defaults are) gets the trainer's own hint above the
button while no GPU is visible on the server (:mod:`fae_lab.train.cpu_sizing`).

The values are checked by the trainer's own parser (:mod:`lab.launcher`) before anything
starts; a bad value gets the parser's one-line message under the button. The run is started as
a background process writing into ``RUNS/NAME``, and appears in every view once its store is
created.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pandas as pd
import panel as pn
import param

from fae_lab.errors import UsageError
from fae_lab.store import PollResult
from fae_lab.train.cpu_sizing import cpu_hint, gpu_visible
from lab.launcher import (
    CHOICE_FIELDS,
    FLAGS,
    GENERATE_FIELDS,
    GENERATE_FLAGS,
    NUMBER_FIELDS,
    VARIANT_FIELDS,
    FormField,
    Launch,
    form_defaults,
    launch,
    train_argv,
    validate_train_argv,
)
from lab.state import LabState
from lab.text import markdown_text

_DEFAULTS = form_defaults()


def _parameter(field: FormField) -> param.Parameter:
    default = _DEFAULTS[field.name]
    if field.choices is not None:
        return param.Selector(default=default, objects=list(field.choices()), doc=field.label)
    if field.text:
        return param.String(default=default, doc=field.label)
    if isinstance(default, int):
        return param.Integer(default=default, doc=field.label)
    return param.Number(default=default, doc=field.label)


# The settings' parameters, from lab.launcher's one declaration of the form's fields.
_Settings = type("_Settings", (param.Parameterized,), {
    field.name: _parameter(field)
    for field in (*CHOICE_FIELDS, *NUMBER_FIELDS, *VARIANT_FIELDS, *GENERATE_FIELDS)})


class LaunchForm(pn.viewable.Viewer, _Settings):
    """A form that starts ``python -m fae_lab.train`` on a data file or on generated data."""

    run_name = param.String(default="", doc="Folder of the new run under the runs directory.")
    data_source = param.Selector(default="generated", objects=["generated", "data file"])
    data_path = param.String(default="", doc="""
        A .npz data file (docs/data-file.md) under the data directory: absolute, or relative
        to it.""")

    def __init__(self, state: LabState, data_dir: str | os.PathLike | None = None, **params):
        super().__init__(**params)
        for field in (*CHOICE_FIELDS, *VARIANT_FIELDS):  # the tables as they are now (a
            if field.choices is not None:                # variant may be added late)
                self.param[field.name].objects = list(field.choices())
        self.state = state
        # Data files are taken from here only (lab.launcher.allowed_data_file).
        self.data_dir = Path(state.source.root if data_dir is None else data_dir)
        self.launches: list[Launch] = []
        self.button = pn.widgets.Button(name="Launch training run", button_type="primary",
                                        css_classes=["launch-button"])
        self.button.on_click(lambda _: self.submit())
        # Markdown, fed only through lab.text.markdown_text; no formulas from "$" in messages.
        self.feedback = pn.pane.Alert("", alert_type="light", visible=False, disable_math=True,
                                      css_classes=["launch-feedback"])
        # Text cells wrap (the command and the log's last line are long).
        self.table = pn.widgets.Tabulator(self._launch_frame(), show_index=False,
                                          disabled=True, sizing_mode="stretch_width",
                                          layout="fit_columns", css_classes=["launch-table"],
                                          formatters={"command": {"type": "textarea"},
                                                      "output": {"type": "textarea"}},
                                          widths={"run": 140, "process": 80, "status": 220})
        # The trainer's word on a GPU-sized run, while no GPU is visible here.
        self.gpu = gpu_visible()
        self.cpu_note = pn.pane.Alert("", alert_type="warning", visible=False, disable_math=True,
                                      css_classes=["launch-cpu-hint"])
        self.param.watch(lambda *_events: self._update_cpu_note(),
                         ["generate_resolution", "pooling_type", "max_steps", "data_source", "data_path"])
        self._update_cpu_note()
        state.subscribe(self.ingest)

    def cpu_hint(self) -> str | None:
        """``fae-lab train``'s line for these settings on a CPU (None: CPU-sized, a GPU is
        visible, or the values do not parse yet: the launch says what is wrong)."""
        if self.gpu:
            return None
        try:
            config = validate_train_argv(train_argv(self.values(), self.data_dir / "_"))
        except UsageError:
            return None
        return cpu_hint(config, prog="No GPU is visible on this machine")

    def _update_cpu_note(self) -> None:
        hint = self.cpu_hint()
        self.cpu_note.object = markdown_text(hint) if hint else ""
        self.cpu_note.visible = hint is not None

    def values(self) -> dict:
        """The form's values, keyed like :func:`lab.launcher.train_argv` expects."""
        values = {name: getattr(self, name) for name in (*FLAGS, *GENERATE_FLAGS)}
        values["data_path"] = self.data_path if self.data_source == "data file" else ""
        return values

    def default_name(self) -> str:
        return f"{self.loss_type}_{self.decoder_type}_{datetime.now():%Y%m%d-%H%M%S}"

    def submit(self) -> Launch | None:
        """Validate and start the run; the outcome is shown under the button."""
        name = self.run_name.strip() or self.default_name()
        try:
            if any(item.name == name for item in self.launches):
                raise UsageError(f"run name {name!r}: already launched from this page")
            started = launch(self.state.source.root, name, self.values(), self.data_dir)
        except (UsageError, OSError) as err:  # OSError: the runs folder is not writable
            self._say(f"Not launched: {markdown_text(err)}", "danger")
            return None
        self.launches.append(started)
        self.run_name = ""
        self._say(f"Launched **{markdown_text(name)}** (process {started.process.pid}) into "
                  f"{markdown_text(started.run_dir)}; it appears in the views once its store "
                  "exists.", "success")
        self.table.value = self._launch_frame()
        return started

    def _say(self, text: str, kind: str) -> None:
        """Show ``text`` (Markdown: whatever came from outside is already escaped) under the button."""
        self.feedback.object, self.feedback.alert_type, self.feedback.visible = text, kind, True

    def _launch_frame(self) -> pd.DataFrame:
        rows = [{"run": item.name, "process": item.process.pid, "status": item.status,
                 "command": item.command, "output": item.log_tail(1)} for item in self.launches]
        return pd.DataFrame(rows, columns=["run", "process", "status", "command", "output"])

    def ingest(self, result: PollResult) -> None:
        if self.launches:
            frame = self._launch_frame()
            if not frame.equals(self.table.value):
                self.table.value = frame

    def _widget(self, field: FormField, width: int | None = None) -> pn.widgets.Widget:
        """The input of ``field``; a variant's setting is shown only while its loss or decoder
        is chosen (``field.used_by``)."""
        p = self.param[field.name]
        size = {"width": width} if width else {"sizing_mode": "stretch_width"}
        if field.choices is not None:
            widget = pn.widgets.Select.from_param(p, name=field.label, **size)
        elif field.text:
            widget = pn.widgets.TextInput.from_param(p, name=field.label, **size,
                                                     placeholder="(default)")
        else:
            kind = pn.widgets.IntInput if isinstance(p, param.Integer) else pn.widgets.FloatInput
            widget = kind.from_param(p, name=field.label, **size)
        if field.used_by:
            used = set(field.used_by)
            widget.visible = pn.bind(lambda loss, decoder: loss in used or decoder in used,
                                     self.param.loss_type, self.param.decoder_type)
        return widget

    def __panel__(self):
        p = self.param
        number = {"sizing_mode": "stretch_width"}
        data = pn.Column(
            pn.widgets.RadioButtonGroup.from_param(p.data_source),
            pn.widgets.TextInput.from_param(p.data_path, name="Data file (.npz)",
                                            placeholder=f"a file under {self.data_dir}",
                                            visible=p.data_source.rx() == "data file"),
            pn.Row(*(pn.widgets.IntInput.from_param(p[f.name], name=f.label, **number)
                     for f in GENERATE_FIELDS),
                   visible=p.data_source.rx() == "generated"),
        )
        choices = pn.Row(*(pn.widgets.Select.from_param(p[f.name], name=f.label, **number)
                           for f in CHOICE_FIELDS))
        numbers = pn.GridBox(*(self._widget(f) for f in NUMBER_FIELDS), ncols=5,
                             sizing_mode="stretch_width")
        variant = pn.FlexBox(*(self._widget(f, width=230) for f in VARIANT_FIELDS),
                             sizing_mode="stretch_width")
        return pn.Column(
            pn.widgets.TextInput.from_param(p.run_name, name="Run name",
                                            placeholder="(default: loss_decoder_time)",
                                            css_classes=["launch-run-name"]),
            pn.pane.Markdown("**Data**"), data,
            pn.pane.Markdown("**Model and loss**"), choices,
            pn.pane.Markdown("**Settings of the chosen loss and decoder**"), variant,
            pn.pane.Markdown("**Settings**"), numbers,
            self.cpu_note, self.button, self.feedback,
            pn.pane.Markdown("**Launched from this page**"), self.table,
            sizing_mode="stretch_width")
