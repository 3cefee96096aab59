"""Archive or delete a run folder from the dashboards, without ever leaving the runs directory.

A run is named as the dashboards name it: its folder's path relative to ``RUNS``
(:class:`fae_lab.store.RunsDirectory`). :func:`archive_run` moves the folder to
``RUNS/.archive/NAME`` (a hidden folder, which run discovery skips; ``NAME-1``, ``NAME-2``, ...
if taken), :func:`delete_run` removes it. Both act on ``RUNS/NAME`` itself: its parent folders
must lie inside ``RUNS`` once symlinks are resolved, and a run folder that is a symlink is moved
or removed as a link: what it points to is never touched. Anything else is refused with one
:class:`~fae_lab.errors.UsageError` line and nothing on disk changes. (The page asks for a
confirmation before calling these; see :class:`lab.views.runs.RunActions`.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from fae_lab.errors import UsageError

ARCHIVE_FOLDER = ".archive"
CONFIG_FILE = "config.json"


def run_folder(runs_dir: str | os.PathLike, name: str) -> Path:
    """``RUNS/NAME`` (not resolved), if it is a run this module may move or remove."""
    root = Path(runs_dir).resolve(strict=True)
    parts = PurePosixPath(name).parts if name else ()
    if (not parts or PurePosixPath(name).is_absolute() or "\\" in name
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
        raise UsageError(f"run {name!r}: not a run folder under {root}")
    path = root.joinpath(*parts)
    try:
        parent = path.parent.resolve(strict=True)
    except OSError:
        raise UsageError(f"run {name!r}: no such run under {root}") from None
    if not parent.is_relative_to(root):  # a symlinked folder on the way out of RUNS
        raise UsageError(f"run {name!r}: its folder is not inside {root}")
    if path.is_symlink():
        return path  # moved or removed as a link, never followed
    if not (path.is_dir() and (path / CONFIG_FILE).is_file()):
        raise UsageError(f"run {name!r}: no such run under {root}")
    return path


def archive_run(runs_dir: str | os.PathLike, name: str) -> Path:
    """Move run ``name`` to ``RUNS/.archive/NAME`` (a free name: ``NAME-1``, ... if taken);
    returns where it went."""
    path = run_folder(runs_dir, name)
    root = Path(runs_dir).resolve(strict=True)
    target = root / ARCHIVE_FOLDER / name
    candidate, n = target, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = target.with_name(f"{target.name}-{n}")
    candidate.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, candidate)  # renames a symlink itself, not its target
    return candidate


def delete_run(runs_dir: str | os.PathLike, name: str) -> None:
    """Remove run ``name``: the folder and everything in it (links inside are removed as
    links), or only the link if the run folder is a symlink."""
    path = run_folder(runs_dir, name)
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)
