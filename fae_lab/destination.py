"""Can a command write where it was told to? Asked before any work, answered in one line.

A destination (a run directory, an ``.npz`` file) is created with its missing parent
directories. Three things stop that, each of which would otherwise surface as a traceback
after minutes of work: a path that runs *through* a regular file (``afile/run``), a
directory the process may not write in, and a file system that refuses new entries (a
read-only mount, ``/proc``). The last two cannot be told from permission bits alone (root
passes every ``os.access`` test), so the deepest existing directory is probed by creating,
and at once removing, an empty directory in it: nothing already there is touched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fae_lab.errors import UsageError


def nearest_existing(path: str | os.PathLike) -> Path:
    """The deepest ancestor of ``path`` (``path`` itself included) that exists.

    ``Path("a/b/c")`` with only ``a`` existing -> ``a``; a relative path whose first part is
    missing -> ``.``.
    """
    candidate = Path(os.path.abspath(path))
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def check_can_create(path: str | os.PathLike, flag: str, *, kind: str = "directory") -> None:
    """Refuse, naming ``flag``, a ``path`` that cannot be created (with its parents).

    A directory is written into, so the deepest existing of it and its ancestors is probed; for
    a file (``kind="file"``) its parent is. That a file ``path`` already exists is the
    caller's check (overwrite or not).
    """
    target = Path(path)
    anchor = nearest_existing(target if kind == "directory" else target.parent)
    if not anchor.is_dir():
        raise UsageError(f"{flag} {path}: {_shown(anchor)} is a file, not a directory, so the "
                         f"{kind} cannot be created below it")
    try:
        probe = tempfile.mkdtemp(prefix=".fae-lab-probe-", dir=anchor)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create the {kind} in {_shown(anchor)} "
                         f"({err.strerror or type(err).__name__})") from None
    os.rmdir(probe)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as the user typed)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
