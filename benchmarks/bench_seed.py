"""Speed where users run: the seed's eight commands, and a whole phase, on one GPU.

    python benchmarks/bench_seed.py [--steps 5000] [--json FILE] [--commands NAMES]
    python benchmarks/bench_seed.py --phase b --seeds 3 --phase-steps 50000 [--parallel-groups 2]
    python benchmarks/bench_seed.py --tiny ...    # 16 x 16, few steps: checks the script on a CPU

Each of ``fae_lab.experiments.SEED_COMMANDS`` trains with its own flags (64 x 64, batch 32,
generated data: 4,096 samples, 6 scales), ``--max-steps`` replaced by ``--steps`` and an
evaluation every ``steps / 5``, in a child process of its own, so that the peak GPU memory
(``memory_stats()['peak_bytes_in_use']``) is that command's alone. Steady steps/s come from the
run store (``bench_gpu.steady_rate``: training-log rows after the first compiled chunk), so
compilation is left out; the wall time with compilation is kept beside it.

``--phase X`` times ``fae-lab phase X --seeds N --max-steps S`` end to end (data generation,
compilation, evaluations and the ranking included), with ``--parallel-groups`` passed on.

Results: one JSON object per line on stdout, all of them in ``--json``; figures belong in
RESULTS.md with the card they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY = ["--generate-resolution", "16", "--generate-n-scales", "2", "--generate-n-samples", "64",
        "--batch-size", "4", "--spectral-n-bins", "4"]


def command_flags(name: str, steps: int, tiny: bool) -> list[str]:
    """The seed command's own flags, then the benchmark's size, budget and evaluation cadence."""
    from fae_lab.experiments import SEED_COMMANDS

    size = TINY if tiny else ["--generate-n-samples", "4096", "--generate-resolution", "64",
                              "--generate-n-scales", "6", "--batch-size", "32"]
    return [*SEED_COMMANDS[name], *size, "--max-steps", str(steps),
            "--eval-every", str(max(steps // 5, 1)), "--log-every", str(max(min(50, steps // 10), 1))]


def one_command(name: str, steps: int, tiny: bool, root: Path) -> dict:
    """Train one seed command in this process and return its figures (the child's side)."""
    sys.path.insert(0, str(HERE))
    from bench_gpu import run_case

    result = run_case(name, [command_flags(name, steps, tiny)], root)
    result["command"] = name
    return result


def run_child(name: str, args, root: Path) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--steps", str(args.steps),
            "--out", str(root)] + (["--tiny"] if args.tiny else [])
    done = subprocess.run(argv, capture_output=True, text=True,
                          env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"command": name, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def time_phase(args, root: Path) -> dict:
    argv = [sys.executable, "-m", "fae_lab", "phase", args.phase, "--runs", str(root / f"phase_{args.phase}"),
            "--seeds", str(args.seeds), "--max-steps", str(args.phase_steps), "--quiet",
            "--parallel-groups", str(args.parallel_groups)]
    if args.tiny:
        argv += ["--", *TINY]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return {"phase": args.phase, "seeds": args.seeds, "max_steps": args.phase_steps,
            "parallel_groups": args.parallel_groups, "exit_status": done.returncode,
            "wall_s": round(wall, 1), "runs": phase_run_rates(root / f"phase_{args.phase}"),
            "last_line": (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]}


def phase_run_rates(phase_dir: Path) -> dict[str, dict]:
    """Each trained run of a phase: steady steps/s (its members advance together, so a group's
    members show the group's rate), the seconds its training-log rows span, and the seconds
    from the start of its training loop to its first evaluation's end and to its first
    training-log row (the first of them compiles the evaluation, the second the chunk too)."""
    sys.path.insert(0, str(HERE))
    from bench_gpu import steady_rate

    rates = {}
    for store in sorted(phase_dir.glob("*/metrics.zarr")):
        try:
            rate, seconds = steady_rate(store.parent)
        except Exception as error:  # a run that did not train far enough has no rate
            rates[store.parent.name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        rates[store.parent.name] = {"steps_per_s": round(rate, 1), "logged_s": round(seconds, 1),
                                    **first_rows(store)}
    return rates


def first_rows(store: Path) -> dict:
    import numpy as np
    import xarray as xr

    with xr.open_zarr(store) as ds:
        firsts = {"first_evaluation_s": ds["eval_wall_time"].values[:1], "first_row_s": ds["wall_time"].values[:1]}
    return {name: round(float(v[0]), 1) for name, v in firsts.items() if v.size and np.isfinite(v[0])}


def main() -> int:
    from fae_lab.experiments import SEED_COMMANDS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", default=",".join(SEED_COMMANDS), help="seed commands to time (comma-separated)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--phase", help="time this phase (a, b, c, combined) instead of the commands")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--phase-steps", type=int, default=50000)
    p.add_argument("--parallel-groups", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="16 x 16, a few samples: check the script on a CPU")
    p.add_argument("--out", help="directory for the runs (default: a temporary one)")
    p.add_argument("--json", help="also write every result to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)  # the child: one command, in this process
    args = p.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="fae_bench_seed_"))
    if args.one:
        print(json.dumps(one_command(args.one, args.steps, args.tiny, root)), flush=True)
        return 0
    unknown = [n for n in args.commands.split(",") if n not in SEED_COMMANDS]
    if unknown:
        p.error(f"--commands: no seed command {unknown[0]!r} (choose from {', '.join(SEED_COMMANDS)})")
    # Each result is printed and kept as soon as it exists: a call cut off by its time limit
    # keeps the commands it finished.
    results = []
    for result in ([time_phase(args, root)] if args.phase
                   else (run_child(n, args, root) for n in args.commands.split(","))):
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r and r.get("exit_status", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
