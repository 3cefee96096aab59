"""What a phase's groups save by sharing one evaluation program (fae_lab/train/run.py,
``_EVALUATIONS``): groups of one model that train with different losses evaluate through the
same jitted program, so the second group does not compile its evaluation again.

In one process, on the demo's data and flags (``fae_lab.demo``): the demo's baseline run (which
compiles the evaluation), then its H¹ run twice, each with its own training step compiled afresh
(the process's step programs cleared): once with the evaluation programs cleared as well (the
old behaviour, a compilation of its own), once sharing the baseline's. Prints one JSON line:
each H¹ run's wall seconds and its first evaluation's seconds from the run's start, as its
metrics store records the evaluation's wall time (to 0.1 s).

    python3 benchmarks/bench_evaluation_sharing.py [--steps 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for bench_seed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench_seed import first_rows  # seconds from a run's start to its first evaluation and row
from jsonl import emit


def train_once(flags: list[str], out: Path) -> float:
    from fae_lab.train.cli import main as train_main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = train_main([*flags, "--output-dir", str(out)])
    if status != 0:
        raise SystemExit(f"bench_evaluation_sharing: fae-lab train exited {status}")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", type=Path, help="append the result here")
    args = p.parse_args()

    import jax

    from fae_lab.demo import DEMO_EXPERIMENTS, DEMO_TRAINING, write_demo_data
    from fae_lab.train import run as train_run

    flags = {e.name: list(e.argv) for e in DEMO_EXPERIMENTS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_demo_data(tmp / "data.npz", overwrite=False)
        common = ["--data-path", str(tmp / "data.npz"), *DEMO_TRAINING, "--max-steps", str(args.steps)]
        baseline_s = train_once([*common, *flags["baseline"]], tmp / "baseline")
        result = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                  "steps": args.steps, "baseline_wall_s": round(baseline_s, 2)}
        for way, clear_evaluations in (("own_evaluation", True), ("shared_evaluation", False)):
            train_run._PROGRAMS.clear()  # the H1 step compiles afresh either way
            if clear_evaluations:
                train_run._EVALUATIONS.clear()
            run = tmp / way
            result[f"{way}_wall_s"] = round(train_once([*common, *flags["h1"]], run), 2)
            result[f"{way}_first_evaluation_s"] = first_rows(run / "metrics.zarr")["first_evaluation_s"]
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
