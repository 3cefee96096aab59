"""``fae-lab serve``: the live dashboards over a directory of runs.

    fae-lab serve [--runs DIR] [--port 5006] [--address 127.0.0.1] [--show]

Bound to 127.0.0.1 unless ``--address`` says otherwise (``--address 0.0.0.0`` serves every
interface: anyone who can reach the port can then launch training runs from the page).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import OneLineArgumentParser, main_entry, positive
from fae_lab.errors import UsageError

POLL_INTERVAL = 0.5  # seconds between a page's reads of new rows


def _port(text: str) -> int:

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer port, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="fae-lab serve",
        description="Serve the live dashboards over a directory of run stores "
                    "(reads with xarray; never imports JAX).")
    parser.add_argument("--runs", default="runs", metavar="DIR",
                        help="directory holding the runs, searched recursively (default: runs)")
    parser.add_argument("--port", type=_port, default=5006,
                        help="port to serve on (default 5006; 0 picks a free one)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--show", action="store_true", help="open the page in a browser")
    parser.add_argument("--poll-interval", type=positive(float), default=POLL_INTERVAL, metavar="SECONDS",
                        help=f"how often each page reads new rows (default {POLL_INTERVAL})")
    parser.add_argument("--allow-websocket-origin", action="append", default=[],
                        metavar="HOST:PORT",
                        help="also accept pages served through this host (e.g. a proxy)")
    return parser


def free_port(address: str) -> int:
    """A port the OS reports free on ``address``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _check_bindable(address: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except OSError as err:
        raise UsageError(f"--address {address} --port {port}: cannot listen there "
                         f"({err.strerror or err})") from None


def run(args) -> int:
    runs = Path(args.runs)
    if not runs.is_dir():
        what = "is not a directory" if runs.exists() else "does not exist (create it first)"
        raise UsageError(f"--runs {args.runs}: {what}")
    port = args.port or free_port(args.address)
    _check_bindable(args.address, port)
    from lab.app import serve

    print(f"fae-lab serve: dashboards for {runs.resolve()} at http://{args.address}:{port}/ "
          "(Ctrl-C stops)", file=sys.stderr)
    serve(runs, port=port, address=args.address, show=args.show,
          poll_ms=round(args.poll_interval * 1000),
          websocket_origins=args.allow_websocket_origin)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry("fae-lab serve", build_parser, run, argv)
