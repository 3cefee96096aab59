"""``fae-lab report RUN_OR_DIR --out FILE.html``: a run (or a folder of runs) as one HTML file.

The file is self-contained (BokehJS inlined): it opens offline, in any browser, without a
server, and can be mailed or archived next to the runs. Bad input is one line and exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fae_lab.cli_util import OneLineArgumentParser, main_entry, path_text


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="fae-lab report",
        description="Write one self-contained HTML report (opens offline) of a run, or a "
                    "comparison of the runs under a folder (ranking, ladder, curves).")
    parser.add_argument("source", type=path_text, metavar="RUN_OR_DIR",
                        help="a run folder (holding config.json) or a folder of runs")
    parser.add_argument("--out", type=path_text, required=True, metavar="FILE.html",
                        help="the report file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def run(args) -> int:
    from lab.report.build import write_report  # Bokeh, after the arguments are checked

    path = write_report(args.source, args.out, overwrite=args.overwrite)
    print(f"report written to {path}", file=sys.stderr)
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_entry("fae-lab report", build_parser, run, argv)
