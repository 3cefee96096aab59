"""The dashboards' views inline in a Jupyter notebook, live while the runs train.

:class:`NotebookDashboard` is a column of some of the served app's views (:data:`VIEWS`) over
one :class:`lab.state.LabState`, under a progress bar (Panel's ``pn.indicators.Progress``)
and a status line. :meth:`NotebookDashboard.start` calls ``train(progress)`` in a background
thread; ``train`` is expected to train the runs (e.g. ``fae_lab.phase.run_phase``, which
imports JAX: this module does not) and to call ``progress(p)`` with objects that have
``step``, ``total``, ``group``, ``n_groups`` and ``runs`` (``fae_lab.phase.PhaseProgress``).

Why a thread and polling, and who touches what: the training thread only writes run stores
(and stores the latest progress object in an attribute); every Panel/Bokeh update happens in
the kernel's main thread, in :meth:`NotebookDashboard.poll`, which reads the stores'
new rows as the served app does. Polls come from two places:

- while the kernel is idle (training started with :meth:`start` and the cell finished), a
  periodic callback on the kernel's event loop (``pn.state.add_periodic_callback``), so the
  views move while the user works in other cells;
- while a cell waits for the end (:meth:`wait`, or :meth:`train` = start + wait), the waiting
  loop itself, because a cell that blocks also blocks the event loop. That is also what runs
  when the notebook is executed headless (nbclient): :meth:`wait` returns once training ended,
  after a last poll, and re-raises the training's exception, if any.

Interrupting the kernel while :meth:`wait` blocks stops the waiting, not the training: the
thread goes on writing its runs (``fae-lab phase`` resumes or reuses them on a rerun), and a
later :meth:`wait` picks it up again.

Each poll ends with ``pn.io.push_notebook``: the views change Bokeh models directly (they
stream rows into ``ColumnDataSource``), which in a notebook reach the page only when pushed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import panel as pn

from lab.state import LabState
from lab.views import (
    CurvesView,
    FrequencyBandsView,
    LadderView,
    LearnedFractionView,
    NTKView,
    PerScaleView,
    RunsTable,
)

# Page name (as in the served app) -> view class.
VIEWS = {"Curves": CurvesView, "Runs": RunsTable, "Frequency bands": FrequencyBandsView,
         "Learned fraction": LearnedFractionView, "Ladder": LadderView, "Per scale": PerScaleView,
         "NTK": NTKView}
POLL_SECONDS = 2.0


class NotebookDashboard(pn.viewable.Viewer):
    """Views over the runs under ``runs_dir``, stacked, with a progress bar; see the module."""

    def __init__(self, runs_dir: str | os.PathLike, views: Sequence[str] = ("Curves", "Learned fraction"),
                 poll_seconds: float = POLL_SECONDS, **params):
        super().__init__(**params)
        unknown = [name for name in views if name not in VIEWS]
        if unknown:
            raise ValueError(f"views: no view {unknown[0]!r} (choose from {', '.join(VIEWS)})")
        self.poll_seconds = poll_seconds
        self.state = LabState(runs_dir)
        self.views = {name: VIEWS[name](self.state) for name in views}
        self.bar = pn.indicators.Progress(name="training", value=0, max=1000, bar_color="primary",
                                          sizing_mode="stretch_width")
        self.status = pn.pane.Str("not started", sizing_mode="stretch_width")
        sections = [pn.Column(pn.pane.Markdown(f"#### {name}"), view, sizing_mode="stretch_width")
                    for name, view in self.views.items()]
        self.layout = pn.Column(self.status, self.bar, *sections, sizing_mode="stretch_width")
        self._thread: threading.Thread | None = None
        self._latest = None  # the last progress object the training thread reported
        self._result: Any = None
        self._error: BaseException | None = None
        self._periodic = None
        self.seconds = 0.0  # wall time of the last training, start to end

    def __panel__(self):
        return self.layout

    # -- training in the background --------------------------------------------------------

    def report(self, progress) -> None:
        """The training thread's progress callback: remember it (drawn at the next poll)."""
        self._latest = progress

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, train: Callable[[Callable[[Any], None]], Any]) -> None:
        """Call ``train(self.report)`` in a background thread and poll the runs meanwhile."""
        if self.running:
            raise RuntimeError("training is already running in this dashboard")
        self._result, self._error, self._latest = None, None, None
        t0 = time.perf_counter()

        def body():
            try:
                self._result = train(self.report)
            except BaseException as err:  # handed to wait(), in the notebook's thread
                self._error = err
            finally:
                self.seconds = time.perf_counter() - t0

        self._thread = threading.Thread(target=body, name="fae-lab-training", daemon=True)
        self._thread.start()
        self.status.object = "training started"
        try:  # polls while the kernel is idle; needs the kernel's running event loop
            self._periodic = pn.state.add_periodic_callback(self.poll, period=round(self.poll_seconds * 1000))
        except RuntimeError:
            self._periodic = None

    def wait(self) -> Any:
        """Block until training ends, polling every ``poll_seconds``; its return value, or its
        exception raised here."""
        if self._thread is None:
            raise RuntimeError("nothing to wait for: start training first")
        while self._thread.is_alive():
            self._thread.join(self.poll_seconds)
            self.poll()
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        self.poll()
        if self._error is not None:
            self.status.object = f"training failed: {type(self._error).__name__}: {self._error}"
            raise self._error
        return self._result

    def train(self, train: Callable[[Callable[[Any], None]], Any]) -> Any:
        """:meth:`start` then :meth:`wait`: the views move while this cell runs."""
        self.start(train)
        return self.wait()

    # -- drawing -------------------------------------------------------------------------

    def poll(self) -> None:
        """Read the stores' new rows into the views; move the bar and the status line."""
        self.state.poll()
        p = self._latest
        if p is not None and p.total:
            self.bar.value = round(1000 * min(p.step, p.total) / p.total)
            if p.runs:
                self.status.object = (f"step {p.step:,} of {p.total:,} (group {p.group + 1} of "
                                      f"{p.n_groups}: {', '.join(p.runs)})")
            else:
                self.status.object = f"trained {p.total:,} steps in {p.n_groups} groups"
        if not self.running and self._thread is not None and self._error is None:
            self.bar.value = self.bar.max
            if p is None or not p.total:
                self.status.object = f"done: every run was already trained ({len(self.state.runs)} runs)"
            else:
                self.status.object = (f"done: {len(self.state.runs)} runs, {p.total:,} group steps in "
                                      f"{self.seconds:.0f} s")
        # The views stream rows into Bokeh sources directly; in a notebook those changes wait
        # in the displayed document until pushed over its comm (no-op where not displayed).
        pn.io.push_notebook(self.layout)
