"""Truth u, reconstruction g(f(u)) and error e = g(f(u)) − u of one test sample at one scale.

A slider picks the evaluation; with "follow newest" on it moves to each new evaluation as
training writes it. The row is :class:`lab.views.images.ReconstructionRow`, the Compare view's
too: truth and reconstruction share one colour range (the truth's), the error a symmetric
diverging one, ±max|e| of the frame shown; the axes are linked (zooming into an inclusion
boundary zooms all three) and a new evaluation updates the images in place, keeping the zoom.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param

from fae_lab.store import PollResult, RunReader
from lab.state import LabState
from lab.views.base import LiveView
from lab.views.choices import (
    evaluation_index,
    no_reconstructions,
    scale_options,
    set_sample_choices,
)
from lab.views.images import ReconstructionRow


class ReconstructionsView(LiveView):
    """Truth, reconstruction and error for a chosen run, sample, scale and evaluation."""

    run = param.Selector(default=None, objects=[])
    sample = param.Selector(default=0, objects={"sample 0": 0})
    scale = param.Selector(default=0, objects={"scale 0": 0})
    evaluation = param.Integer(default=0, bounds=(0, 1), doc="Index of the evaluation shown.")
    follow = param.Boolean(default=True, doc="Move to each new evaluation as it is written.")
    size = param.Integer(default=240, bounds=(120, 1200), doc="Side of each image, pixels.")

    _structure = ("visible",)

    def __init__(self, state: LabState, **params):
        super().__init__(state, **params)
        self.widgets = pn.Row(
            pn.widgets.Select.from_param(self.param.run, name="Run"),
            pn.widgets.Select.from_param(self.param.sample, name="Sample"),
            pn.widgets.Select.from_param(self.param.scale, name="Scale"),
            pn.widgets.Checkbox.from_param(self.param.follow, name="Follow newest evaluation",
                                           align="end"))
        # Over evaluation indices; its title shows the step.
        self.slider = pn.widgets.IntSlider.from_param(self.param.evaluation, name="Step",
                                                      show_value=False,
                                                      sizing_mode="stretch_width")
        self.message = pn.pane.Markdown("", css_classes=["recon-message"])
        self.images = ReconstructionRow(("g(f(u))",), size=self.size, name="recon-image")
        self.draw(None, 0, 0, 0)
        self.start()

    def __panel__(self):
        return pn.Column(self.widgets, self.slider, self.message, self.images,
                         sizing_mode="stretch_width")

    @property
    def reader(self) -> RunReader | None:
        return self.state.source.readers.get(self.run)

    def draw(self, run: str | None, sample: int, scale: int, index: int) -> None:
        """Show truth, reconstruction and error at evaluation ``index`` (blank before the first
        evaluation)."""
        reader = self.state.source.readers.get(run)
        if reader is None or not reader.ready or reader.n_eval == 0:
            self.message.object = "No evaluation written yet."
            self.images.blank()
            return
        if not reader.has_reconstructions:
            self.message.object = no_reconstructions(reader.name)
            self.images.blank()
            return
        index = min(max(index, 0), reader.n_eval - 1)
        truths = reader.truth()
        sample, scale = min(sample, truths.shape[0] - 1), min(scale, truths.shape[1] - 1)
        truth = truths[sample, scale]
        recon = reader.reconstruction(index)[sample, scale]
        (error,) = self.images.show(truth, (recon,))
        bound = float(np.abs(error).max()) or 1.0
        mse = float(np.mean(error**2))
        self.slider.name = f"Step {int(reader.eval_steps[index])}"
        self.message.object = (f"Step {int(reader.eval_steps[index])} (evaluation {index + 1} "
                               f"of {reader.n_eval}): MSE {mse:.3e}, max |e| {bound:.3e}")

    # -- updates ---------------------------------------------------------------------------

    @param.depends("size", watch=True)
    def _resize(self) -> None:
        self.images.size = self.size  # figures not built yet are built at this size
        for figure in self.images.built_figures():
            figure.frame_width = figure.frame_height = self.size

    @param.depends("sample", "scale", "evaluation", watch=True)
    def _redraw(self) -> None:
        if not self._holding:
            self.draw(self.run, self.sample, self.scale, self.evaluation)

    def refresh(self) -> None:
        """Follow the drawn runs (keeping the shown one if still drawn) and redraw."""
        visible = list(self.state.visible)
        run = self.run if self.run in visible else (visible[0] if visible else None)
        with self._hold():  # the Select widget echoes each change back: redraw once, below
            self.param.run.objects = visible
            self.run = run
        self._update_choices()

    @param.depends("run", watch=True)
    def _update_choices(self) -> None:
        if self._holding:
            return
        reader = self.reader
        with self._hold():
            set_sample_choices(self, reader)
            self.param.scale.objects = scale_options(reader, with_mean=False)
            if self.scale not in self.param.scale.objects.values():
                self.scale = 0
            self._update_evaluations(newest=True)
        self._redraw()

    def _update_evaluations(self, newest: bool = False) -> None:
        n_eval = self.reader.n_eval if self.reader else 0
        self.param.evaluation.bounds = (0, max(n_eval - 1, 1))
        self.evaluation = evaluation_index(n_eval, self.evaluation, self.follow or newest)

    @param.depends("follow", watch=True)
    def _follow(self) -> None:
        if self.follow:
            self._update_evaluations()

    def ingest(self, result: PollResult) -> None:
        reader = self.reader
        for delta in result.deltas:
            if reader is not None and delta.name == reader.name and delta.new_evaluations:
                self._update_evaluations()
