"""What every live view shares: it is fed by a :class:`LabState`, and works only while shown.

A view in a hidden tab does nothing at each poll but remember that it is stale; when its tab is
shown again it redraws once from the rows already in memory. So the per-poll cost of the page is
that of the views on screen.
"""

from __future__ import annotations

import contextlib

import panel as pn
import param

from fae_lab.store import PollResult
from lab.state import LabState


class LiveView(pn.viewable.Viewer):
    """Base of the views. Subclasses implement :meth:`refresh` (redraw everything from
    memory) and :meth:`ingest` (apply one poll's new rows) and list in ``_structure`` the
    :class:`LabState` parameters whose change calls for a refresh."""

    shown = param.Boolean(default=True, doc="""
        Whether the view is on screen; a hidden view defers its work until shown.""")

    _structure: tuple[str, ...] = ("visible", "colour_by")

    def __init__(self, state: LabState, **params):
        super().__init__(**params)
        self.state = state
        self._stale = True
        self._holding = False  # see _hold
        self._drawn_in_poll = -1  # the poll whose rows the last refresh already drew
        state.subscribe(self._on_poll)
        if self._structure:
            state.param.watch(self._on_structure, list(self._structure))

    def start(self) -> None:
        """Draw for the first time if shown (subclasses call this at the end of __init__)."""
        self._on_shown()

    def prime(self) -> None:
        """Draw now even if hidden, if never drawn (the next poll while hidden marks it stale
        again)."""
        if self._stale:
            self._refresh_now()

    def _refresh_now(self) -> None:
        self._stale = False
        self._drawn_in_poll = self.state.n_polls
        self.refresh()

    @contextlib.contextmanager
    def _hold(self):
        """Set several parameters at once: the watchers that check ``_holding`` (widgets echo
        each change back) wait, and the caller redraws once afterwards."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def refresh(self) -> None:
        raise NotImplementedError

    def ingest(self, result: PollResult) -> None:
        raise NotImplementedError

    def _on_poll(self, result: PollResult) -> None:
        if not (result.deltas or result.new_runs) or self._drawn_in_poll == self.state.n_polls:
            return  # nothing new, or a refresh during this poll (a new run) drew its rows
        if self.shown and not self._stale:
            self.ingest(result)
        else:
            self._stale = True

    def _on_structure(self, *_events) -> None:
        if self.shown:
            self._refresh_now()
        else:
            self._stale = True

    @param.depends("shown", watch=True)
    def _on_shown(self) -> None:
        if self.shown and self._stale:
            self._refresh_now()
