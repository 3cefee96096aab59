"""The launch form: loss, decoder and the main numeric settings of a new training run.

The values are checked by the trainer's own parser (:mod:`lab.launcher`) before anything
starts; a bad value gets the parser's one-line message under the button. The run is started as
a background process writing into ``RUNS/NAME``, and appears in every view once its store is
created.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import panel as pn
import param

from fae_lab import config as C
from fae_lab.errors import UsageError
from fae_lab.store import TAG_NAMES, PollResult
from lab.launcher import FLAGS, GENERATE_FLAGS, Launch, form_defaults, launch
from lab.state import LabState

_DEFAULTS = form_defaults()


class LaunchForm(pn.viewable.Viewer):
    """A form that starts ``python -m fae_lab.train`` on a data file or on generated data."""

    run_name = param.String(default="", doc="Folder of the new run under the runs directory.")
    data_source = param.Selector(default="generated", objects=["generated", "data file"])
    data_path = param.String(default="", doc="A .npz file (SPEC.md §2).")
    generate_n_samples = param.Integer(default=_DEFAULTS["generate_n_samples"])
    generate_resolution = param.Integer(default=_DEFAULTS["generate_resolution"])
    generate_n_scales = param.Integer(default=_DEFAULTS["generate_n_scales"])
    training_mode = param.Selector(default=_DEFAULTS["training_mode"], objects=C.TRAINING_MODES)
    loss_type = param.Selector(default=_DEFAULTS["loss_type"], objects=C.LOSS_TYPES)
    decoder_type = param.Selector(default=_DEFAULTS["decoder_type"], objects=C.DECODER_TYPES)
    pooling_type = param.Selector(default=_DEFAULTS["pooling_type"], objects=C.POOLING_TYPES)
    latent_dim = param.Integer(default=_DEFAULTS["latent_dim"])
    beta = param.Number(default=_DEFAULTS["beta"])
    lambda_grad = param.Number(default=_DEFAULTS["lambda_grad"])
    freq_weight_power = param.Number(default=_DEFAULTS["freq_weight_power"])
    rff_dim = param.Integer(default=_DEFAULTS["rff_dim"])
    max_steps = param.Integer(default=_DEFAULTS["max_steps"])
    learning_rate = param.Number(default=_DEFAULTS["learning_rate"])
    batch_size = param.Integer(default=_DEFAULTS["batch_size"])
    eval_every = param.Integer(default=_DEFAULTS["eval_every"])
    seed = param.Integer(default=_DEFAULTS["seed"])

    def __init__(self, state: LabState, **params):
        super().__init__(**params)
        self.state = state
        self.launches: list[Launch] = []
        self.button = pn.widgets.Button(name="Launch training run", button_type="primary",
                                        css_classes=["launch-button"])
        self.button.on_click(lambda _: self.submit())
        self.feedback = pn.pane.Alert("", alert_type="light", visible=False,
                                      css_classes=["launch-feedback"])
        self.table = pn.widgets.Tabulator(self._launch_frame(), show_index=False,
                                          disabled=True, sizing_mode="stretch_width",
                                          css_classes=["launch-table"])
        state.subscribe(self.ingest)

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
            started = launch(self.state.source.root, name, self.values())
        except (UsageError, OSError) as err:  # OSError: the runs folder is not writable
            self._say(f"Not launched: {err}", "danger")
            return None
        self.launches.append(started)
        self.run_name = ""
        self._say(f"Launched **{name}** (process {started.process.pid}) into "
                  f"`{started.run_dir}`; it appears in the views once its store exists.",
                  "success")
        self.table.value = self._launch_frame()
        return started

    def _say(self, text: str, kind: str) -> None:
        self.feedback.object, self.feedback.alert_type, self.feedback.visible = text, kind, True

    def _launch_frame(self) -> pd.DataFrame:
        rows = [{"run": item.name, "process": item.process.pid, "status": item.status,
                 "output": item.log_tail(1)} for item in self.launches]
        return pd.DataFrame(rows, columns=["run", "process", "status", "output"])

    def ingest(self, result: PollResult) -> None:
        if self.launches:
            frame = self._launch_frame()
            if not frame.equals(self.table.value):
                self.table.value = frame

    def __panel__(self):
        p = self.param
        number = {"sizing_mode": "stretch_width"}
        data = pn.Column(
            pn.widgets.RadioButtonGroup.from_param(p.data_source),
            pn.widgets.TextInput.from_param(p.data_path, name="Data file (.npz)",
                                            placeholder="/path/to/data.npz",
                                            visible=p.data_source.rx() == "data file"),
            pn.Row(pn.widgets.IntInput.from_param(p.generate_n_samples, name="Samples", **number),
                   pn.widgets.IntInput.from_param(p.generate_resolution, name="Resolution R",
                                                  **number),
                   pn.widgets.IntInput.from_param(p.generate_n_scales, name="Scales T",
                                                  **number),
                   visible=p.data_source.rx() == "generated"),
        )
        choices = pn.Row(*(pn.widgets.Select.from_param(getattr(p, name), **number) for name in
                           TAG_NAMES))
        fields = [("latent_dim", "Latent dim"), ("beta", "β (latent penalty)"),
                  ("lambda_grad", "λ_grad (H¹ term)"),
                  ("freq_weight_power", "Frequency weight power"), ("rff_dim", "RFF dim"),
                  ("max_steps", "Max steps"), ("learning_rate", "Learning rate"),
                  ("batch_size", "Batch size"), ("eval_every", "Evaluate every"),
                  ("seed", "Seed")]
        numbers = pn.GridBox(
            *((pn.widgets.IntInput if isinstance(getattr(p, name), param.Integer) else pn.widgets.FloatInput)
              .from_param(getattr(p, name), name=label, **number) for name, label in fields),
            ncols=5, sizing_mode="stretch_width")
        return pn.Column(
            pn.widgets.TextInput.from_param(p.run_name, name="Run name",
                                            placeholder="(default: loss_decoder_time)",
                                            css_classes=["launch-run-name"]),
            pn.pane.Markdown("**Data**"), data,
            pn.pane.Markdown("**Model and loss**"), choices,
            pn.pane.Markdown("**Settings**"), numbers,
            self.button, self.feedback,
            pn.pane.Markdown("**Launched from this page**"), self.table,
            sizing_mode="stretch_width")
