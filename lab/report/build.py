"""Which report a path asks for, the page's HTML, and writing it without losing a file.

A folder holding ``config.json`` is one run: its report (:mod:`lab.report.run`). Any other
folder is searched for runs (:class:`fae_lab.store.RunsDirectory`): their comparison
(:mod:`lab.report.compare`), which lists the runs that could not be read. Bad input is a
:class:`~fae_lab.errors.UsageError` with one line.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fae_lab.destination import check_can_create
from fae_lab.errors import UsageError
from fae_lab.store import RunReader, RunsDirectory, open_run
from fae_lab.store.layout import CONFIG_FILE
from lab.report.compare import comparison_sections
from lab.report.page import Section, render, table
from lab.report.run import header, prepare, run_sections


def _generated() -> tuple[str, str]:
    return ("generated", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def run_report_html(reader: RunReader) -> str:
    """The report of one polled run."""
    prepare(reader)
    return render(f"fae-lab report: {reader.run_name}", [*header(reader), _generated()],
                  run_sections(reader))


def comparison_html(title: str, readers: Mapping[str, RunReader],
                    unreadable: Mapping[str, str] | None = None, root: str = "") -> str:
    """The comparison of ``readers`` (run name -> polled reader, at least one)."""
    sections = comparison_sections(dict(readers))
    if unreadable:
        sections.append(Section("Runs that could not be read", "Left out of everything above.",
                                table(("run", "reason"), sorted(unreadable.items()), "unreadable")))
    rows = [("runs", len(readers)), _generated()]
    if root:
        rows.insert(0, ("folder", root))
    return render(title, rows, sections)


def report_html(source: str | os.PathLike) -> str:
    """The report of ``source``: one run's, or the comparison of the runs under a folder."""
    path = Path(source)
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise UsageError(f"{path}: not a run or a folder of runs (a file)")
    if (path / CONFIG_FILE).is_file():
        return run_report_html(open_run(path))
    runs = RunsDirectory(path)
    runs.poll()
    readable = {name: r for name, r in runs.readers.items() if r.error is None}
    if not readable:
        why = f" ({len(runs.unreadable)} unreadable)" if runs.unreadable else ""
        raise UsageError(f"{path}: no runs found (no folder with a {CONFIG_FILE} below it){why}")
    return comparison_html(f"fae-lab report: {path.resolve().name}", readable, runs.unreadable,
                           str(path))


def check_destination(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` if a report may be written there, else :class:`UsageError`: a folder, an existing
    file without ``overwrite``, or a parent that is missing or not writable."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; give a file name such as {out / 'report.html'}")
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out}: exists; add --overwrite to replace it")
    if not out.parent.is_dir():
        what = "is a file, not a folder" if out.parent.exists() else "does not exist"
        raise UsageError(f"--out {out}: {out.parent} {what}")
    check_can_create(out, "--out", kind="file")  # a probe: permission bits do not bind root
    return out


def write_html(html: str, out: Path, overwrite: bool) -> Path:
    """Write ``html`` to ``out`` through a temporary file in its folder: a failure leaves no
    partial report, and without ``overwrite`` an ``out`` that appeared meanwhile is kept."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)  # fails if out exists: nothing is replaced
            except FileExistsError:
                raise UsageError(f"--out {out}: exists; add --overwrite to replace it") from None
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def write_report(source: str | os.PathLike, out: str | os.PathLike, *,
                 overwrite: bool = False) -> Path:
    """Write the self-contained HTML report of ``source`` (a run, or a folder of runs) to
    ``out`` and return its path. :class:`UsageError` for bad input; nothing is overwritten
    unless ``overwrite``."""
    destination = check_destination(out, overwrite)
    return write_html(report_html(source), destination, overwrite)
