"""The state one browser session shares between its views: runs, tag filter, colours, polling.

:class:`LabState` owns the :class:`fae_lab.store.RunsDirectory` of the session. Its
:meth:`LabState.poll` (a periodic callback while the page is open) reads only the rows written
since the last poll and hands the :class:`fae_lab.store.PollResult` to every subscribed view.
The tag filter is one ``ListSelector`` per tag of the seed's scheme
``[training_mode, loss_type, decoder_type, pooling_type]`` and one for the run's rung of the
bottleneck ladder (``RunReader.rung``: ``fae`` for a run without one); ``visible`` is the list
of runs it lets through, narrowed to ``chosen`` when the user picks runs by name.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import NamedTuple

import param

from fae_lab import config as C
from fae_lab.store import PollResult, RunsDirectory
from lab.transforms import FILTER_TAGS, colour_keys, select_runs

# Colour-blind-safe palette (Okabe & Ito), then Bokeh's Category20 for long run lists.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78")
# Line dashes that tell apart the drawn runs of one colour (in name order).
DASHES = ("solid", "dashed", "dotted", "dotdash", "dashdot", (8, 3, 2, 3), (2, 6), (12, 4))
TAG_LABELS = {"training_mode": "Training mode", "loss_type": "Loss type",
              "decoder_type": "Decoder type", "pooling_type": "Pooling", "rung": "Ladder rung"}

Listener = Callable[[PollResult], None]


class RunStyle(NamedTuple):
    """How a run is drawn: its colour, its line dash and its legend entry."""

    colour: str
    dash: str | tuple[int, ...]
    label: str


def run_colour(run: str) -> str:
    """A run's own colour: its name's CRC-32 into :data:`PALETTE`, the same in every view,
    session and page load (Python's ``hash`` of a string changes between processes)."""
    return PALETTE[zlib.crc32(run.encode("utf-8", "surrogatepass")) % len(PALETTE)]


class LabState(param.Parameterized):
    """Runs of one directory, which of them are drawn, and how they are coloured."""

    training_mode = param.ListSelector(default=list(C.TRAINING_MODES),
                                       objects=list(C.TRAINING_MODES))
    loss_type = param.ListSelector(default=list(C.LOSS_TYPES), objects=list(C.LOSS_TYPES))
    decoder_type = param.ListSelector(default=list(C.DECODER_TYPES),
                                      objects=list(C.DECODER_TYPES))
    pooling_type = param.ListSelector(default=list(C.POOLING_TYPES),
                                      objects=list(C.POOLING_TYPES))
    rung = param.ListSelector(default=list(C.RUNGS), objects=list(C.RUNGS))
    colour_by = param.Selector(default="run", objects=["run", *FILTER_TAGS], doc="""
        Colour of each run: its own (from its name), or that of one of its tags (the runs of
        one tag value then differ by line dash). Each run has its own legend entry.""")
    chosen = param.ListSelector(default=[], objects=[], doc="""
        Runs picked by name; empty means every run the tag filter lets through.""")
    runs = param.List(default=[], doc="Every run found, in the order found.")
    visible = param.List(default=[], doc="Runs drawn: through the tag filter and ``chosen``.")

    def __init__(self, runs_dir: str | os.PathLike, **params):
        super().__init__(**params)
        self.source = RunsDirectory(runs_dir)
        self._listeners: list[Listener] = []
        self._styles: tuple[tuple, dict[str, RunStyle]] = ((), {})
        self.n_polls = 0  # polls so far; a view that redrew during poll n skips its rows
        self.poll()

    # -- tags and colours ----------------------------------------------------------------

    def tags(self, runs: list[str] | None = None) -> dict[str, dict[str, str]]:
        """run -> {tag name -> value} (:data:`FILTER_TAGS`: the seed's four tags and the rung),
        for ``runs`` (default: every run)."""
        names = self.runs if runs is None else runs
        return {name: {**self.source[name].tags, "rung": self.source[name].rung}
                for name in names}

    def colour_key(self, run: str) -> str:
        return colour_keys(self.tags([run]), self.colour_by)[run]

    def colour(self, run: str) -> str:
        """Colour of a run: its own (:func:`run_colour`), or fixed per value of the tag
        ``colour_by`` (a tag's values in the CLI's order)."""
        if self.colour_by == "run":
            return run_colour(run)
        order = list(self.param[self.colour_by].objects)
        key = self.colour_key(run)
        index = order.index(key) if key in order else len(order)
        return PALETTE[index % len(PALETTE)]

    def style(self, run: str) -> RunStyle:
        """Colour, dash and legend entry of ``run``. Drawn runs that share a colour (one tag
        value, or two names hashed alike) get different dashes, in name order, so every drawn
        run can be told apart; the legend entry is the run's name, after its tag value when
        colouring by a tag."""
        key = (self.colour_by, tuple(self.visible))
        if key != self._styles[0]:
            self._styles = (key, {})
        styles = self._styles[1]
        if not styles:
            styles.update(self._styles_of(sorted(self.visible)))
        if run not in styles:  # a run not drawn: its style among the drawn, theirs unchanged
            styles[run] = self._styles_of(sorted({*self.visible, run}))[run]
        return styles[run]

    def _styles_of(self, runs: list[str]) -> dict[str, RunStyle]:
        seen: dict[str, int] = {}
        out = {}
        for run in runs:  # sorted: a run's dash depends on the drawn runs, not on poll order
            colour = self.colour(run)
            dash = DASHES[seen.get(colour, 0) % len(DASHES)]
            seen[colour] = seen.get(colour, 0) + 1
            label = run if self.colour_by == "run" else f"{self.colour_key(run)}: {run}"
            out[run] = RunStyle(colour, dash, label)
        return out

    # -- polling -------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(result)`` after every poll (most find nothing new)."""
        self._listeners.append(listener)

    def poll(self) -> PollResult:
        """Read what is new in every run (and any new run), then tell the views."""
        result = self.source.poll()
        self.n_polls += 1
        if result.new_runs:
            self._admit_tag_values(result.new_runs)
            self.param["chosen"].objects = self.source.names()
            self.runs = self.source.names()
        for listener in self._listeners:
            listener(result)
        return result

    def _admit_tag_values(self, runs: list[str]) -> None:
        """A tag value the CLI does not know (an older or newer run) gets its own toggle, on."""
        tags = self.tags(runs)
        for tag in FILTER_TAGS:
            known = list(self.param[tag].objects)
            extra = [v for v in dict.fromkeys(tags[r][tag] for r in runs)
                     if v not in known]
            if extra:
                self.param[tag].objects = known + extra
                setattr(self, tag, [*getattr(self, tag), *extra])

    def forget(self, run: str) -> None:
        """Stop showing ``run`` (its folder was archived or deleted from the page)."""
        self.source.readers.pop(run, None)
        self.chosen = [r for r in self.chosen if r != run]
        self.param["chosen"].objects = self.source.names()
        self.runs = self.source.names()

    def ready_readers(self):
        """``(run, reader)`` for each drawn run whose store has rows to read."""
        for run in self.visible:
            reader = self.source[run]
            if reader.ready:
                yield run, reader

    @param.depends("runs", "chosen", *FILTER_TAGS, watch=True, on_init=True)
    def _update_visible(self) -> None:
        allowed = {tag: getattr(self, tag) for tag in FILTER_TAGS}
        through = select_runs(self.tags(), allowed)
        if self.chosen:
            through = [run for run in through if run in self.chosen]
        if through != self.visible:
            self.visible = through
