"""The served dashboards over a directory of runs.

Start it with ``fae-lab serve --runs DIR`` (bound to 127.0.0.1:5006), or with Panel itself (the
page is then http://127.0.0.1:5006/app)::

    panel serve lab/app.py --address 127.0.0.1 --port 5006 \\
        --allow-websocket-origin 127.0.0.1:5006 --args --runs DIR [--data-dir DATA]

Each browser session gets its own :class:`LabApp`: a :class:`lab.state.LabState` over ``DIR``
polled every ``poll_ms`` milliseconds (reading only the rows written since the last poll), the
tag filter in the sidebar and one tab per view. Names, paths and messages from the runs are
shown as text (:mod:`lab.text`). No JAX is imported: the app reads stores with
xarray and launches training as a separate process.
"""

from __future__ import annotations

import logging
import os
import sys

import panel as pn
from panel.io.resources import LOCAL_DIST
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from lab.cli import POLL_INTERVAL, build_parser
from lab.state import LabState
from lab.text import isolated_name
from lab.views import (
    CurvesView,
    FrequencyBandsView,
    LadderView,
    LaunchForm,
    LearnedFractionView,
    NTKView,
    PerScaleView,
    ReconstructionsView,
    ReportDownload,
    RunFilter,
    RunsTable,
    SettingsView,
    SpectraOverlayView,
    TwoRunComparison,
)

POLL_MS = round(POLL_INTERVAL * 1000)
log = logging.getLogger(__name__)

pn.extension("tabulator", notifications=False)

# Writes to a browser that has gone (closed tab, lost network) fail with these; they are the
# disconnect itself, not a fault of the server.
DISCONNECTED = (WebSocketClosedError, StreamClosedError)


class DisconnectFilter(logging.Filter):
    """Drops the traceback asyncio and Tornado log when an update is sent to a browser that
    has disconnected ("Task exception was never retrieved" ... ``WebSocketClosedError``), and
    logs one line at debug level instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DISCONNECTED):
            log.debug("fae-lab dashboards: a browser disconnected (%s)", type(error).__name__)
            return False
        return True


def quiet_disconnects() -> None:
    """Install :class:`DisconnectFilter` on the loggers that report such failed writes
    (once)."""
    for name in ("asyncio", "tornado.application", "tornado.general", "bokeh.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DisconnectFilter) for f in logger.filters):
            logger.addFilter(DisconnectFilter())


def laid_out_when_shown(view: pn.viewable.Viewer) -> pn.param.ParamFunction:
    """``view``'s layout, made when its tab is first shown (``Tabs(dynamic=True)`` renders the
    shown tab only) and kept. The view itself exists, and follows the polls, from the start:
    only its widgets and panes wait."""
    return pn.param.ParamFunction(pn.bind(pn.panel, view), lazy=True,
                                  sizing_mode="stretch_width")


class LabApp(pn.viewable.Viewer):
    """Every view of one session over ``runs_dir``, in a Bootstrap template.

    The template asks for no web fonts or CDN files, so the page works offline.
    """

    def __init__(self, runs_dir: str | os.PathLike, poll_ms: int = POLL_MS,
                 data_dir: str | os.PathLike | None = None, **params):
        super().__init__(**params)
        self.poll_ms = poll_ms
        self.state = LabState(runs_dir)
        self.filter = RunFilter(self.state)
        self.download = ReportDownload(self.state)  # the drawn runs as one HTML file
        # Only the first tab is drawn now; the others draw when first shown.
        self.views = {
            "Curves": CurvesView(self.state),
            "Runs": RunsTable(self.state, shown=False),
            "Settings": SettingsView(self.state, shown=False),
            "Frequency bands": FrequencyBandsView(self.state, shown=False),
            "Learned fraction": LearnedFractionView(self.state, shown=False),
            "Ladder": LadderView(self.state, shown=False),
            "Reconstructions": ReconstructionsView(self.state, shown=False),
            "Per scale": PerScaleView(self.state, shown=False),
            "Compare two runs": TwoRunComparison(self.state, shown=False),
            "Spectra of runs": SpectraOverlayView(self.state, shown=False),
            "NTK": NTKView(self.state, shown=False),
            "Launch": LaunchForm(self.state, data_dir),
        }
        self.tabs = pn.Tabs(*((name, laid_out_when_shown(view) if index else view)
                              for index, (name, view) in enumerate(self.views.items())),
                            dynamic=True, sizing_mode="stretch_width")
        self.tabs.param.watch(self._show_active, "active")
        self.template = pn.template.BootstrapTemplate(
            title="fae-lab: spectral bias in functional autoencoders", sidebar_width=320,
            sidebar=[pn.pane.HTML(f"<strong>Runs under</strong> <code>{isolated_name(self.state.source.root)}"
                                  "</code>"), self.filter, self.download],
            main=[self.tabs])

    def __panel__(self):
        return self.template

    def _show_active(self, *_events) -> None:
        for index, view in enumerate(self.views.values()):
            if "shown" in view.param:
                view.shown = index == self.tabs.active

    def prime(self) -> None:
        """Draw the hidden tabs once (after the page has loaded: not part of its first render),
        so that a tab shown later renders with data and then catches up."""
        for view in self.views.values():
            if "shown" in view.param and not view.shown:
                view.prime()

    def poll(self) -> None:
        """One poll of the runs; a failure is logged and the next poll tries again."""
        try:
            self.state.poll()
        except Exception:
            log.exception("fae-lab dashboards: polling %s failed", self.state.source.root)

    def start_polling(self) -> None:
        """Poll every ``poll_ms`` ms while this session lives (needs a server session); the
        polling stops when the browser disconnects, so nothing is sent to a closed socket."""
        callback = pn.state.add_periodic_callback(self.poll, period=self.poll_ms)
        pn.state.on_session_destroyed(lambda _context: callback.stop())


def keep_panel_css_local() -> None:
    """Point the stylesheets of every model this session's document will hold at the server's
    own files, from the start.

    Panel gives a component's stylesheets its CDN's address (cdn.holoviz.org) and rewrites
    them, when the model is made, to the address in the document's ``dist_url``; but a
    session's document gets its ``dist_url`` only when its page is rendered. A model made for
    it before then (by the app's construction, or by a poll that fires first) kept the CDN
    address unless it was among the document's roots at that moment: offline, the page then
    failed to load ``loading.css`` and ``markdown.css`` (seen in the browser tests). The
    address is Panel's own for a served page (``panel.io.server``), which renders it again."""
    doc = pn.state.curdoc
    if doc is not None:
        rel = pn.state.rel_path
        doc._template_variables.setdefault("dist_url", f"{rel}/{LOCAL_DIST}" if rel else LOCAL_DIST)


def create_app(runs_dir: str | os.PathLike, poll_ms: int = POLL_MS,
               data_dir: str | os.PathLike | None = None) -> pn.template.BaseTemplate:
    """The page of one new session: a :class:`LabApp` that polls ``runs_dir`` and launches
    runs on data files under ``data_dir`` (default ``runs_dir``)."""
    keep_panel_css_local()
    app = LabApp(runs_dir, poll_ms, data_dir)
    app.start_polling()
    pn.state.onload(app.prime)
    return app.template


def serve(runs_dir: str | os.PathLike, port: int, address: str = "127.0.0.1",
          show: bool = False, poll_ms: int = POLL_MS, websocket_origins: list[str] | None = None,
          threaded: bool = False, data_dir: str | os.PathLike | None = None, **kwargs):
    """Serve the dashboards on ``address:port`` (blocking unless ``threaded``).

    WebSocket connections are accepted from the page's own origins (``address``, localhost and
    127.0.0.1 on ``port``) and ``websocket_origins``. The launch form takes data files under
    ``data_dir`` only (default ``runs_dir``). Which addresses may be bound is ``fae-lab serve``'s
    check (:func:`lab.cli.check_address`), not this function's.
    """
    quiet_disconnects()
    origins = {f"{host}:{port}" for host in (address, "localhost", "127.0.0.1")}
    origins.update(websocket_origins or [])

    def page() -> pn.template.BaseTemplate:  # a function: Panel serves a partial as text
        return create_app(runs_dir, poll_ms, data_dir)

    return pn.serve({"/": page}, port=port, address=address,
                    show=show, websocket_origin=sorted(origins), threaded=threaded,
                    title="fae-lab", **kwargs)


if __name__.startswith("bokeh"):  # panel serve lab/app.py --args --runs DIR [--data-dir D] ...
    quiet_disconnects()
    _args, _ = build_parser().parse_known_args(sys.argv[1:])  # fae-lab serve's own options
    create_app(_args.runs, round(_args.poll_interval * 1000),
               _args.runs if _args.data_dir is None else _args.data_dir).servable()
