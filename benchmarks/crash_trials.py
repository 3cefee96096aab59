"""Crash trials of the training engine: SIGKILL, SIGTERM and divergence, with their figures.

    python benchmarks/crash_trials.py                    # 20 + 20 SIGKILL, 30 SIGTERM, 6 divergences
    python benchmarks/crash_trials.py --trials 4 --jobs 2 --out benchmarks/results/crash_trials_cpu.json

Every trial trains a tiny model on tiny generated data (16x16, 10 samples) in a real
``python -m fae_lab train`` process with the default checkpoint policy, and then:

* ``kill-after-eval``: SIGKILL at a uniform random moment in [0, 4] s after the run's first
  evaluation is in ``progress.json``;
* ``kill-early``: SIGKILL at a uniform random moment in [0, 30] s (``--window``) after the
  process starts;
* ``sigterm``: SIGTERM at a uniform random moment in [0, 30] s (``--window``) after the
  process starts.

After a kill it checks that the stores open and agree with ``progress.json`` (every row it
counts is finite), then resumes: a run with a checkpoint must resume and finish with every
evaluation the checkpoint counted unchanged; one without must say so and start again; one
killed before its store existed must start cleanly without ``--resume``. After SIGTERM it
checks the exit status (143), that there is no traceback or crash, that the status is not
``running`` and that the message is true (the checkpoint it names exists at that step).
Divergence trials run learning rates that blow up at step 1 or later and check that the
checkpoint is at the last finite step, restores finite parameters, and that ``--resume``
diverges at the same step again.

``--cache DIR`` shares JAX's persistent compilation cache between the trial processes
(faster, but compilation is then short, so fewer signals land inside it).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS, EVAL_EVERY = 400, 20


def tiny_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-path", str(data), "--output-dir", str(out), "--pooling-type", "mean",
            "--encoder-hidden", "16,16", "--decoder-hidden", "16,16", "--latent-dim", "8",
            "--batch-size", "4", "--n-reconstruction-samples", "4", "--eval-batch-size", "4",
            "--max-steps", str(MAX_STEPS), "--eval-every", str(EVAL_EVERY), "--log-every", "5",
            "--steps-per-call", "5", *extra]


def train_cmd(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "fae_lab", "train", *argv]


def read_progress(out: Path) -> dict | None:
    try:
        return json.loads((out / "progress.json").read_text())
    except (OSError, ValueError):
        return None


def latest_checkpoint(out: Path) -> int | None:
    from fae_lab.train.run import has_checkpoint

    if not has_checkpoint(out):
        return None
    from fae_lab.train.checkpoint import Checkpoints

    c = Checkpoints(out, keep_best=False)
    try:
        return c.latest_step()
    finally:
        c.close()


def store_agrees(out: Path) -> tuple[bool, str]:
    """The stores open, and every row progress.json counts is finite."""
    import numpy as np
    import xarray as xr

    progress = read_progress(out)
    if progress is None:
        return False, "no progress.json"
    try:
        with xr.open_zarr(out / "metrics.zarr") as ds:
            train = ds["train_loss"].values[: progress["n_train"]]
            evals = ds["eval_rel_mse"].values[: progress["n_eval"]]
        xr.open_zarr(out / "reconstructions.zarr").close()
    except Exception as err:  # the figure is whether it opens
        return False, f"store does not open: {type(err).__name__}: {err}"
    if not (np.isfinite(train).all() and np.isfinite(evals).all()):
        return False, "a counted row is not finite"
    return True, ""


def eval_rows(out: Path, n: int):
    import xarray as xr

    with xr.open_zarr(out / "metrics.zarr") as ds:
        return ds["eval_rel_mse"].values[:n].copy()


def wait_first_eval(proc: subprocess.Popen, out: Path, timeout: float = 600) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        p = read_progress(out)
        if p is not None and p["n_eval"] >= 1:
            return True
        time.sleep(0.02)
    return False


def run(argv: list[str], env, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(argv), capture_output=True, text=True, env=env, timeout=timeout)


# ----------------------------------------------------------------------------- trials


def kill_trial(kind: str, i: int, data: Path, work: Path, env, rng: random.Random, window: float = 30) -> dict:
    out = work / f"{kind}-{i}"
    argv = tiny_argv(data, out, "--seed", str(i))
    proc = subprocess.Popen(train_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    t0 = time.monotonic()
    if kind == "kill-after-eval":
        if not wait_first_eval(proc, out):
            proc.kill()
            proc.communicate()
            return {"kind": kind, "trial": i, "ok": False, "note": "never reached its first evaluation"}
        delay = rng.uniform(0, 4)
    else:
        delay = rng.uniform(0, window)
    # kill-early: the moment counts from the start; kill-after-eval: from the first evaluation.
    time.sleep(max(0.0, t0 + delay - time.monotonic()) if kind == "kill-early" else delay)
    moment = time.monotonic() - t0
    ended_first = proc.poll() is not None
    if not ended_first:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    row = {"kind": kind, "trial": i, "killed_at_s": round(moment, 2), "ended_before_kill": ended_first}
    if not (out / "progress.json").exists():
        # Killed before its store existed: --resume says there is no run, a fresh start works.
        r = run([*argv, "--resume"], env)
        fresh = run(argv, env)
        ok = r.returncode == 2 and "no run" in r.stderr and fresh.returncode == 0
        return {**row, "state": "no store", "ok": ok, "checkpoint": None, "resumed": ok}
    agrees, why = store_agrees(out)
    saved = latest_checkpoint(out)
    progress = read_progress(out)
    row.update(state="store", store_agrees=agrees, why=why, checkpoint=saved, step_at_kill=progress["step"],
               n_eval_at_kill=progress["n_eval"])
    kept = None
    if saved is not None:
        n_eval_ckpt = _record_n_eval(out)
        kept = eval_rows(out, n_eval_ckpt)
        row["n_eval_checkpoint"] = n_eval_ckpt
    r = run([*argv, "--resume"], env)
    after = read_progress(out) or {}
    finished = r.returncode == 0 and after.get("status") == "finished" and \
        after.get("n_eval") == MAX_STEPS // EVAL_EVERY + 1
    said_no_checkpoint = "has no checkpoint" in r.stderr
    lost = None
    if kept is not None:
        lost = int((eval_rows(out, len(kept)) != kept).sum())
    agrees_after, _ = store_agrees(out)
    ok = agrees and finished and agrees_after and (
        (saved is not None and lost == 0 and not said_no_checkpoint) or (saved is None and said_no_checkpoint))
    return {**row, "resumed": finished, "said_no_checkpoint": said_no_checkpoint, "evaluations_lost": lost,
            "ok": bool(ok), "resume_stderr_tail": r.stderr.strip().splitlines()[-1:] if not ok else []}


def _record_n_eval(out: Path) -> int:
    """n_eval of the latest checkpoint's record, restored through the engine's own class."""
    from fae_lab.train.checkpoint import Checkpoints

    c = Checkpoints(out, keep_best=False)
    try:
        step = c.latest_step()
        import orbax.checkpoint as ocp

        restored = c.latest.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
        return int(restored["record"]["n_eval"])
    finally:
        c.close()


def sigterm_trial(i: int, data: Path, work: Path, env, rng: random.Random, window: float = 30,
                  sig=signal.SIGTERM) -> dict:
    out = work / f"sigterm-{i}"
    argv = tiny_argv(data, out, "--seed", str(i))
    proc = subprocess.Popen(train_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    delay = rng.uniform(0, window)
    time.sleep(delay)
    ended_first = proc.poll() is not None
    if not ended_first:
        proc.send_signal(sig)
    t_sig = time.monotonic()
    _, stderr = proc.communicate(timeout=900)
    exit_s = time.monotonic() - t_sig
    code = proc.returncode
    crash = code < 0 or code in (134, 139) or "Traceback" in stderr or "Segmentation" in stderr
    progress = read_progress(out)
    status = None if progress is None else progress["status"]
    saved = latest_checkpoint(out) if progress is not None else None
    if progress is None:
        true = "nothing was written" in stderr
    elif status == "failed":
        m = progress["message"]
        named = f"checkpoint at step {saved}: continue with --resume" in m and progress["step"] == saved
        true = named and signal.Signals(sig).name in m
    elif status == "finished":
        true = ended_first or code == 128 + sig  # the signal came after the last step
    else:
        true = False
    expected = 0 if ended_first else 128 + sig
    agrees = store_agrees(out)[0] if progress is not None else True
    ok = (not crash) and code == expected and status != "running" and true and agrees
    return {"kind": "sigterm", "trial": i, "signal_at_s": round(delay, 2), "exit": code, "exit_after_signal_s":
            round(exit_s, 2), "status": status, "checkpoint": saved, "crash": crash, "message_true": bool(true),
            "store_agrees": agrees, "ok": bool(ok),
            "message": progress["message"] if progress else stderr.strip().splitlines()[-1:]}


DIVERGENCE_CASES = [
    # 1e39 is infinite in float32 (JSON keeps it, so --resume accepts the same setting).
    ("lr 1e39 (step 1)", {"learning_rate": 1e39}, []),
    ("lr 3e38", {"learning_rate": 3e38}, []),
    ("lr 1e6", {"learning_rate": 1e6}, []),
    ("lr 1e4", {"learning_rate": 1e4}, []),
    ("lr x1e8 after step 10", {}, ["--lr-decay-rate", "1e8", "--lr-decay-steps", "10"]),
    ("lr x1e4 after step 20", {}, ["--lr-decay-rate", "1e4", "--lr-decay-steps", "20"]),
]


def divergence_trial(name: str, optim: dict, extra: list[str], data: Path, work: Path) -> dict:
    """In-process, so that a non-finite learning rate needs no command-line flag."""
    import dataclasses

    import numpy as np

    from fae_lab.train.args import parse_run_config
    from fae_lab.train.run import train

    out = work / ("div-" + "".join(c if c.isalnum() else "_" for c in name))
    argv = tiny_argv(data, out, *extra)
    argv[argv.index("--max-steps") + 1] = "60"
    argv[argv.index("--eval-every") + 1] = "10"
    argv[argv.index("--log-every") + 1] = "1"
    config = parse_run_config(argv)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, **optim))
    first = train(config, quiet=True)
    d = first.step
    progress = read_progress(out)
    saved = latest_checkpoint(out)
    import xarray as xr

    with xr.open_zarr(out / "metrics.zarr") as ds:  # the last counted row is step d's: the evidence
        agrees = progress["n_train"] == d and bool(np.isfinite(ds["train_loss"].values[: d - 1]).all())
    evals = eval_rows(out, progress["n_eval"])
    again = train(dataclasses.replace(config, resume=True), quiet=True)
    ok = (first.status == "diverged" and saved == d - 1 and agrees and np.isfinite(evals).all()
          and progress["n_eval"] == (d - 1) // 10 + 1 and (again.status, again.step) == ("diverged", d))
    return {"kind": "divergence", "case": name, "status": first.status, "diverged_step": d, "checkpoint": saved,
            "n_eval": progress["n_eval"], "resume_diverges_at": again.step, "message": progress["message"],
            "ok": bool(ok)}


# ----------------------------------------------------------------------------- main


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for kind in ("kill-after-eval", "kill-early", "sigterm", "divergence"):
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        entry = {"trials": kind, "n": len(group), "ok": sum(r["ok"] for r in group)}
        if kind.startswith("kill"):
            entry["with checkpoint"] = sum(r.get("checkpoint") is not None for r in group)
            entry["store agrees"] = sum(r.get("store_agrees", True) for r in group)
            entry["resumed+finished"] = sum(bool(r.get("resumed")) for r in group)
            entry["evals lost"] = sum(r.get("evaluations_lost") or 0 for r in group)
            entry["no ckpt, said so"] = sum(bool(r.get("said_no_checkpoint")) for r in group)
            entry["no store"] = sum(r.get("state") == "no store" for r in group)
        elif kind == "sigterm":
            entry["crash"] = sum(r["crash"] for r in group)
            entry["stale running"] = sum(r["status"] == "running" for r in group)
            entry["message true"] = sum(r["message_true"] for r in group)
            entry["exit 143"] = sum(r["exit"] == 143 for r in group)
            waits = sorted(r["exit_after_signal_s"] for r in group)
            entry["exit after signal s (median, max)"] = (waits[len(waits) // 2], waits[-1])
        else:
            entry["diverged"] = sum(r["status"] == "diverged" for r in group)
        table.append(entry)
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None,
                   help="trials per signal set (default 20, 20 and 30)")
    p.add_argument("--jobs", type=int, default=2, help="trials run at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="a JAX compilation cache shared by the trial processes")
    p.add_argument("--window", type=float, default=30.0,
                   help="kill-early and sigterm moments are uniform in [0, WINDOW] s after the start "
                   "(on a loaded machine a run may not have its store within 30 s)")
    p.add_argument("--only", default="kill-after-eval,kill-early,sigterm,divergence")
    p.add_argument("--out", default=None, help="write every trial and the summary as JSON here")
    args = p.parse_args()
    n_after, n_early, n_term = (args.trials,) * 3 if args.trials else (20, 20, 30)
    only = set(args.only.split(","))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if args.cache:
        env.update(JAX_COMPILATION_CACHE_DIR=args.cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    os.environ.update({k: v for k, v in env.items() if k.startswith("JAX_")})  # the in-process trials too
    rng = random.Random(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="crash_trials_") as tmp:
        work = Path(tmp)
        from fae_lab.data.generate import generate_microstructures
        from fae_lab.data.npz import save_npz

        data = work / "tiny.npz"
        save_npz(data, generate_microstructures(n_samples=10, resolution=16, n_scales=3, seed=0))
        jobs = []
        with futures.ThreadPoolExecutor(args.jobs) as pool:
            if "kill-after-eval" in only:
                jobs += [pool.submit(kill_trial, "kill-after-eval", i, data, work, env, random.Random(rng.random()))
                         for i in range(n_after)]
            if "kill-early" in only:
                jobs += [pool.submit(kill_trial, "kill-early", i, data, work, env, random.Random(rng.random()),
                                     args.window)
                         for i in range(n_early)]
            if "sigterm" in only:
                jobs += [pool.submit(sigterm_trial, i, data, work, env, random.Random(rng.random()), args.window)
                         for i in range(n_term)]
            rows = []
            for job in futures.as_completed(jobs):
                row = job.result()
                rows.append(row)
                print(json.dumps(row), flush=True)
        if "divergence" in only:
            for name, optim, extra in DIVERGENCE_CASES:
                try:
                    row = divergence_trial(name, optim, extra, data, work)
                except Exception as err:  # a trial that breaks is a failed trial, not the end
                    row = {"kind": "divergence", "case": name, "status": None, "ok": False,
                           "error": f"{type(err).__name__}: {err}"}
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = summarise(rows)
    print()
    for entry in table:
        print("  ".join(f"{k}: {v}" for k, v in entry.items()))
    print(f"wall {time.time() - t0:.0f} s, jobs {args.jobs}, cache {'on' if args.cache else 'off'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": table, "trials": rows, "jobs": args.jobs,
                                              "cache": bool(args.cache), "wall_s": round(time.time() - t0),
                                              "cpu_count": os.cpu_count()}, indent=1, default=str))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
