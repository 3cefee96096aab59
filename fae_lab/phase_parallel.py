"""The groups of a phase trained side by side: ``fae-lab phase ... --parallel-groups N``.

A phase is a list of groups, each one vmapped program (:func:`fae_lab.phase.run_series`). On a
host with several GPUs the groups need not wait for one another: here each group trains in its
own child process (``python -m fae_lab.phase_parallel SPEC``), at most N at once, and child i of
a slot sees only that slot's GPU (``CUDA_VISIBLE_DEVICES``: the slot's entry of the parent's own
list, or 0 .. N-1). Separate processes keep each JAX runtime, its memory and its compilation
on one device, with nothing shared but the run directories, which are disjoint.

What stays as in the serial path:

* the runs, their stores and their numbers (a child trains its group with the same
  :func:`fae_lab.train.run.train_group` call, the same configs and command lines);
* a signal: the parent forwards SIGINT / SIGTERM to every running child, each stops at a
  checkpoint, no further group starts, and the parent raises
  :class:`fae_lab.train.interrupt.Interrupted` so that the same command continues them;
* bad settings are refused by the parent before any child starts (the plan is validated there).

The largest group starts first: groups are started in decreasing order of their cost (the
caller's estimate; :func:`fae_lab.phase.run_series` gives members x steps), ties in the phase's
order. A phase's groups are uneven (phase b: three of 3 runs and the Fourier sweep's 9), and
started in the phase's order the big one would begin last and end long after the rest: on two
slots, groups of 3, 3, 9 and 3 runs (a group's time about its runs times one run's) end after
12 runs' time in that order (3 + 9 on one slot), after 9 largest first (9 against 3 + 3 + 3).

A child that fails (a usage error found late, a crash) is named with its exit status and the
remaining groups still train; the phase then reports the failure after ranking what finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fae_lab.cli_util import run_guarded
from fae_lab.errors import UsageError
from fae_lab.train import interrupt

# One group: (run name, command line of ``fae-lab train`` without the program name).
Group = Sequence[tuple[str, Sequence[str]]]

POLL_SECONDS = 0.2
# How a child is started (the tests put a stand-in here); the spec file's path is appended.
CHILD_COMMAND = (sys.executable, "-m", "fae_lab.phase_parallel")


def device_slots(n: int) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each of ``n`` slots: the i-th entry of the parent's
    own list when it has one (it must then name at least ``n`` devices), else ``str(i)``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return [str(i) for i in range(n)]
    ids = [d.strip() for d in visible.split(",") if d.strip()]
    if len(ids) < n:
        raise UsageError(f"--parallel-groups {n}: CUDA_VISIBLE_DEVICES names only {len(ids)} device(s) "
                         f"({visible}); give at most {len(ids)}")
    return ids[:n]


def train_groups_in_parallel(groups: Sequence[Group], n_parallel: int, *, quiet: bool = False,
                             costs: Sequence[float] | None = None) -> list[str]:
    """Train ``groups`` in child processes, at most ``n_parallel`` at once, each on its slot's
    device, the costliest first (``costs``, one per group; default: the number of runs);
    return one line per group whose child failed (empty when all finished or stopped at a
    checkpoint). Raises :class:`interrupt.Interrupted` after forwarding a signal."""
    slots = device_slots(n_parallel)
    costs = [len(g) for g in groups] if costs is None else list(costs)
    if len(costs) != len(groups):
        raise ValueError(f"{len(costs)} costs for {len(groups)} groups")
    pending = sorted(enumerate(groups), key=lambda item: -costs[item[0]])  # stable: ties keep order
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fae-lab-phase-") as tmp:
        while pending or running:
            signum = interrupt.requested()
            if signum is not None:
                _stop_children(running, signum)
                raise interrupt.Interrupted(f"interrupted by {interrupt.signal_name(signum)}; the same "
                                            "command continues the stopped runs", signum)
            for slot in slots:
                if slot not in running and pending:
                    index, group = pending.pop(0)
                    running[slot] = (_start_child(group, slot, Path(tmp) / f"group{index}.json", quiet), index)
            for slot, (child, index) in list(running.items()):
                code = child.poll()
                if code is None:
                    continue
                del running[slot]
                if code in (128 + signal.SIGINT, 128 + signal.SIGTERM) and interrupt.requested() is None:
                    failures.append(f"group {index + 1} ({', '.join(n for n, _ in groups[index])}) was "
                                    f"stopped by a signal of its own (exit {code})")
                elif code != 0:
                    failures.append(f"group {index + 1} ({', '.join(n for n, _ in groups[index])}) "
                                    f"failed with exit status {code}")
            time.sleep(POLL_SECONDS)
    return failures


def _start_child(group: Group, slot: str, spec: Path, quiet: bool) -> subprocess.Popen:
    spec.write_text(json.dumps({"runs": [[name, list(argv)] for name, argv in group], "quiet": quiet}))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=slot)
    if not quiet:
        names = ", ".join(name for name, _ in group)
        print(f"== device slot {slot}: training {names}", file=sys.stderr, flush=True)
    return subprocess.Popen([*CHILD_COMMAND, str(spec)], env=env)


def _stop_children(running: dict[str, tuple[subprocess.Popen, int]], signum: int) -> None:
    """Forward ``signum`` to every running child and wait for each to stop at its checkpoint."""
    for child, _ in running.values():
        if child.poll() is None:
            child.send_signal(signum)
    for child, _ in running.values():
        child.wait()


def child_main(argv: Sequence[str]) -> int:
    """Train the one group described by the JSON file ``argv[0]`` (written by the parent)."""
    from fae_lab.train.args import parse_run_config
    from fae_lab.train.run import train_group

    def body() -> int:
        spec = json.loads(Path(argv[0]).read_text())
        names = [name for name, _ in spec["runs"]]
        command_lines = [list(a) for _, a in spec["runs"]]
        configs = [parse_run_config(a) for a in command_lines]
        train_group(configs, [["fae-lab", "train", *a] for a in command_lines], quiet=spec["quiet"],
                    labels=names)
        signum = interrupt.requested()
        return 0 if signum is None else 128 + signum

    with interrupt.stop_on_signals():
        return run_guarded("fae-lab phase (group)", body)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
