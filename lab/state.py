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
from collections.abc import Callable

import param

from fae_lab import config as C
from fae_lab.store import PollResult, RunsDirectory
from lab.transforms import FILTER_TAGS, colour_keys, select_runs

# Colour-blind-safe palette (Okabe & Ito), then Bokeh's Category20 for long run lists.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78")
TAG_LABELS = {"training_mode": "Training mode", "loss_type": "Loss type",
              "decoder_type": "Decoder type", "pooling_type": "Pooling", "rung": "Ladder rung"}

Listener = Callable[[PollResult], None]


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
    colour_by = param.Selector(default="loss_type", objects=["run", *FILTER_TAGS], doc="""
        Legend and colour of each run: its name or one of its tags.""")
    chosen = param.ListSelector(default=[], objects=[], doc="""
        Runs picked by name; empty means every run the tag filter lets through.""")
    runs = param.List(default=[], doc="Every run found, in the order found.")
    visible = param.List(default=[], doc="Runs drawn: through the tag filter and ``chosen``.")

    def __init__(self, runs_dir: str | os.PathLike, **params):
        super().__init__(**params)
        self.source = RunsDirectory(runs_dir)
        self._listeners: list[Listener] = []
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
        """Colour of a run: fixed per tag value (a tag's values in the CLI's order), or per run
        in the order found."""
        key = self.colour_key(run)
        if self.colour_by == "run":
            order = self.runs
        else:
            order = list(self.param[self.colour_by].objects)
        index = order.index(key) if key in order else len(order)
        return PALETTE[index % len(PALETTE)]

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
