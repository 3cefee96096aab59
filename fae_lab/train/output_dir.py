"""``--output-dir`` and ``--resume``: decided before any work, refused in one line.

A new run needs a directory it can create (:func:`fae_lab.destination.check_can_create`)
that holds no run yet; ``--resume`` needs a run there whose ``config.json`` can be read and
says the same settings as the command line. JAX-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fae_lab.config import RunConfig, to_json_dict
from fae_lab.destination import check_can_create
from fae_lab.errors import UsageError
from fae_lab.store.layout import CONFIG_FILE, PROGRESS_FILE

# Settings a resumed run may change: how it runs, not what it computes.
# The call length among them: a step's random keys are fold_in(key, step), whatever call it is
# in, so runs stored with a fixed length (50 before lengths were sized) resume without the flag.
# The run folder's own path too: a stopped run moved or unpacked elsewhere (another disk, another
# machine) is the same run, and nothing in the store depends on where it was written.
RESUME_MAY_CHANGE = frozenset({"resume", "overwrite", "stop_after_step", "n_devices", "kernels",
                               "steps_per_call", "output_dir"})


def check_output_dir(config: RunConfig) -> Path:
    """Refuse to clobber a run, or to resume one that is not there, before any work."""
    run_dir = Path(config.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output-dir: {run_dir} exists and is not a directory")
    has_run = (run_dir / CONFIG_FILE).exists() or (run_dir / PROGRESS_FILE).exists()
    if config.resume and not has_run:
        raise UsageError(f"--resume: no run in {run_dir} to resume")
    if has_run and not (config.resume or config.overwrite):
        raise UsageError(f"--output-dir: {run_dir} already holds a run (use --resume or --overwrite)")
    check_can_create(run_dir, "--output-dir", kind="directory")
    if config.resume:
        check_resume_matches(config, run_dir)
    return run_dir


def read_stored_config(run_dir: Path) -> dict[str, Any]:
    """The ``config`` mapping of ``run_dir/config.json``; a missing, unreadable or malformed
    file is a :class:`UsageError` naming it (the run cannot be resumed from it)."""
    path = run_dir / CONFIG_FILE
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--resume: {path} is missing, so the run cannot be resumed "
                         "(start it again with --overwrite)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"--resume: {path} is not readable JSON ({reason})") from None
    stored = payload.get("config") if isinstance(payload, dict) else None
    if not isinstance(stored, dict):
        raise UsageError(f"--resume: {path} holds no 'config' mapping of settings")
    return stored


def check_resume_matches(config: RunConfig, run_dir: Path) -> None:
    """A resumed run must be the same run: refuse a changed setting, naming it. A run killed
    before it wrote its ``config.json`` and its first checkpoint has nothing to compare and
    nothing to lose: it starts again. With a checkpoint but no readable ``config.json`` it
    cannot be resumed."""
    if not (run_dir / CONFIG_FILE).exists() and not (run_dir / "checkpoints").exists():
        return
    stored = read_stored_config(run_dir)
    current = json.loads(json.dumps(to_json_dict(config)))

    def differences(a, b, prefix=""):
        for key in sorted(set(a) | set(b)):
            if key in RESUME_MAY_CHANGE and not prefix:
                continue
            va, vb = a.get(key), b.get(key)
            if isinstance(va, dict) and isinstance(vb, dict):
                yield from differences(va, vb, f"{prefix}{key}.")
            elif va != vb:
                yield f"{prefix}{key}", va, vb

    for name, was, now in differences(stored, current):
        flag = "--" + name.split(".")[-1].replace("_", "-")
        raise UsageError(f"--resume: {flag} was {was!r} in the stored run, now {now!r}; "
                         "resume with the same settings")
