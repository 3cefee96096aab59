"""``fae-lab serve``: the live dashboards over a directory of runs.

    fae-lab serve [--runs DIR] [--data-dir DIR] [--port 5006] [--address 127.0.0.1]
                  [--allow-remote] [--allow-websocket-origin HOST:PORT] [--show]

Bound to 127.0.0.1. The page can start training processes, so an address other than a
loopback one (127.0.0.0/8, ::1, localhost) is refused unless ``--allow-remote`` is given: anyone
who can reach the port could then launch training runs. An empty address (every interface) is
refused; say ``--address 0.0.0.0 --allow-remote`` instead. The launch form takes data files
from ``--data-dir`` only (default: the runs directory).
"""

from __future__ import annotations

import argparse
import ipaddress
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
                        help="address to bind (default 127.0.0.1: this machine only; any "
                             "non-loopback address needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --address: whoever reaches the port can see "
                             "the runs and launch training from the page")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="the launch form's data files must lie under DIR "
                             "(default: the runs directory)")
    parser.add_argument("--show", action="store_true", help="open the page in a browser")
    parser.add_argument("--poll-interval", type=positive(float), default=POLL_INTERVAL, metavar="SECONDS",
                        help=f"how often each page reads new rows (default {POLL_INTERVAL})")
    parser.add_argument("--allow-websocket-origin", action="append", default=[],
                        metavar="HOST:PORT",
                        help="also accept pages served through this host (e.g. a proxy)")
    return parser


def is_loopback(address: str) -> bool:
    """Whether ``address`` reaches this machine only: ``localhost``, 127.0.0.0/8 or ::1."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        return False


def check_address(address: str, allow_remote: bool) -> None:
    """Refuse an empty address, and a non-loopback one without ``--allow-remote``."""
    if not address.strip():
        raise UsageError('--address "": give the address to bind (127.0.0.1 for this machine; '
                         "every interface is --address 0.0.0.0 --allow-remote)")
    if not (is_loopback(address) or allow_remote):
        raise UsageError(f"--address {address}: not a loopback address; whoever reaches it can "
                         "launch training from the page; add --allow-remote to serve it anyway")


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def free_port(address: str) -> int:
    """A port the OS reports free on ``address``."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _check_bindable(address: str, port: int) -> None:
    try:
        with socket.socket(_family(address), socket.SOCK_STREAM) as probe:
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
    data_dir = runs if args.data_dir is None else Path(args.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: not a directory")
    check_address(args.address, args.allow_remote)
    port = args.port or free_port(args.address)
    _check_bindable(args.address, port)
    from lab.app import serve

    host = f"[{args.address}]" if ":" in args.address else args.address
    if not is_loopback(args.address):
        print(f"fae-lab serve: --allow-remote: whoever reaches port {port} can see the runs and "
              "launch training from this page; a browser that reaches it by another name (host "
              f"name, proxy) needs --allow-websocket-origin HOST:{port}", file=sys.stderr)
    print(f"fae-lab serve: dashboards for {runs.resolve()} at http://{host}:{port}/, data files "
          f"from {data_dir.resolve()} (Ctrl-C stops)", file=sys.stderr)
    serve(runs, port=port, address=args.address, show=args.show,
          poll_ms=round(args.poll_interval * 1000),
          websocket_origins=args.allow_websocket_origin, data_dir=data_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry("fae-lab serve", build_parser, run, argv)
