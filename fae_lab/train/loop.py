"""The training loop of a group, between host calls, and what it keeps per member.

Each host call runs ``steps_per_call`` steps of every member in one compiled call; the next
call is dispatched before the previous call's metrics are read, so the device never waits on
the host. At the steps of the evaluation schedule the loop evaluates on the device, hands the
rows to each member's background store writer and, when due, checkpoints each member.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fae_lab.config import RunConfig
from fae_lab.store import AsyncStoreWriter, StoreLayout, final_metrics
from fae_lab.train.checkpoint import Checkpoints
from fae_lab.train.evaluate import EvalData
from fae_lab.train.progress import ProgressReporter
from fae_lab.train.rows import TrainRowAggregator
from fae_lab.train.step import TrainState, member_slice


@dataclasses.dataclass
class RunResult:
    """What a finished (or stopped) run reports back to its caller."""

    run_dir: Path
    status: str
    step: int
    final: dict[str, Any] | None


@dataclasses.dataclass
class Member:
    """One run of a group: its configuration, store, checkpoints and bookkeeping."""

    config: RunConfig
    run_dir: Path
    command_line: list[str]
    label: str
    layout: StoreLayout | None = None
    writer: AsyncStoreWriter | None = None
    checkpoints: Checkpoints | None = None
    rows: TrainRowAggregator | None = None
    record: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"n_eval": 0, "best_rel_mse": None, "elapsed": 0.0})
    status: str = "running"
    step: int = 0
    last_metrics: dict[str, np.ndarray] | None = None
    is_best: bool = False
    final: dict[str, Any] | None = None

    def result(self) -> RunResult:
        return RunResult(run_dir=self.run_dir, status=self.status, step=self.step, final=self.final)


CHECKPOINT_SECONDS = 60.0


class GroupLoop:
    """The training loop of a group, between host calls (kept small and explicit)."""

    def __init__(self, config: RunConfig, members: list[Member], progress: ProgressReporter,
                 evaluate, eval_data: EvalData, run_chunk, rest):
        self.config, self.members, self.progress = config, members, progress
        self.evaluate, self.eval_data, self.run_chunk, self.rest = evaluate, eval_data, run_chunk, rest
        self.step = 0
        self.eval_steps = [int(s) for s in members[0].layout.eval_steps]

    def elapsed(self, member: Member) -> float:
        return member.record["elapsed"] + (time.perf_counter() - self.t0)

    def running(self) -> list[tuple[int, Member]]:
        return [(i, m) for i, m in enumerate(self.members) if m.status == "running"]

    def run(self, state: TrainState) -> None:
        cfg = self.config
        self.t0 = self.last_checkpoint = time.perf_counter()
        self.step = int(state.step[0])
        n_eval = self.members[0].record["n_eval"]
        if n_eval == 0 and self.step == 0:
            self._evaluate(state, 0)
            n_eval = 1
        self.progress.start(self.step)
        pending = None  # (metrics of the chunk in flight, its first step)
        while self.step < cfg.max_steps and self.running():
            target = self.eval_steps[n_eval] if n_eval < len(self.eval_steps) else cfg.max_steps
            n = min(cfg.steps_per_call, target - self.step)
            state, metrics = self.run_chunk(state, n)
            if pending is not None:
                self._absorb(*pending)
            pending = (metrics, self.step)
            self.step += n
            if self.step == target:
                self._absorb(*pending)
                pending = None
                if not self.running():
                    break
                self._evaluate(state, n_eval)
                n_eval += 1
                stop = cfg.stop_after_step is not None and self.step >= cfg.stop_after_step
                if stop or self.step == cfg.max_steps or self._due_checkpoint(self.step):
                    self._checkpoint(state, n_eval)
                if stop and self.step < cfg.max_steps:
                    for _, member in self.running():
                        member.status, member.step = "failed", self.step
                        member.writer.set_status("failed", f"stopped at step {self.step}: continue with --resume")
                    return
        for _, member in self.running():
            member.status, member.step = "finished", self.step
            member.final = self._final(member, "finished")
            member.writer.write_final(member.final)
            member.writer.update_progress(status="finished", step=self.step, message="")
            self.progress.finish(member.final, member.label if len(self.members) > 1 else "")

    def _due_checkpoint(self, step: int) -> bool:
        """At the evaluations that are multiples of ``--checkpoint-every``; by default at the
        first evaluation after ``CHECKPOINT_SECONDS`` since the last checkpoint (saving at
        every evaluation costs a sizeable share of the end-to-end rate on a GPU;
        benchmarks/RESULTS.md has the figure)."""
        every = self.config.checkpoint_every
        if every is not None:
            return step % every == 0
        return time.perf_counter() - self.last_checkpoint >= CHECKPOINT_SECONDS

    def _absorb(self, metrics, first_step: int) -> None:
        host_all = {k: np.asarray(v, np.float64) for k, v in jax.device_get(metrics).items()}  # (M, n) each
        for i, member in self.running():
            host = {k: v[i] for k, v in host_all.items()}
            diverged = int(host.pop("diverged_step")[-1])
            steps = np.arange(first_step + 1, first_step + len(host["train_loss"]) + 1)
            if diverged >= 0:
                keep = steps <= diverged  # the step that produced NaN is logged: it is the evidence
                host = {k: v[keep] for k, v in host.items()}
                steps = steps[keep]
            for start, block in member.rows.add(steps, host, self.elapsed(member)):
                member.writer.write_train_rows(start, block)
            if diverged >= 0:
                self._diverged(member, diverged)
        if len(self.members) == 1 and self.members[0].status == "running":
            self.progress.update(first_step + len(host_all["train_loss"][0]),
                                 float(host_all["train_loss"][0, -1]))

    def _evaluate(self, state: TrainState, row: int) -> None:
        metrics, recon = self.evaluate(state.params, self.rest, self.eval_data)
        metrics, recon = jax.device_get((metrics, recon))  # one transfer for all of them
        host_all = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        recon = np.asarray(recon, np.float32)
        for i, member in self.running():
            host = {k: v[i] for k, v in host_all.items()}
            host["eval_wall_time"] = np.asarray(self.elapsed(member))
            member.writer.write_eval(row, host, recon[i])  # progress.json's step becomes this row's
            member.last_metrics, member.step = host, self.step
            rel, best = float(host["eval_rel_mse"]), member.record["best_rel_mse"]
            member.is_best = math.isfinite(rel) and (best is None or rel < best)
            if member.is_best:
                member.record.update(best_rel_mse=rel, best_step=self.step)
            prefix = f"[{member.label}] " if len(self.members) > 1 and member.label else ""
            self.progress.evaluation(self.step, host, prefix=prefix)

    def _checkpoint(self, state: TrainState, n_eval: int) -> None:
        now = self.last_checkpoint = time.perf_counter()
        for member in self.members:
            member.record["elapsed"] += now - self.t0
        self.t0 = now
        for i, member in self.running():
            member.record.update(n_eval=n_eval, rows=member.rows.snapshot(), step=self.step)
            member.writer.flush()  # the rows the checkpoint counts are on disk before it exists
            member.checkpoints.save(self.step, member_slice(state, i), dict(member.record),
                                    best=member.config.save_best_model and member.is_best)

    def _diverged(self, member: Member, step: int) -> None:
        member.status, member.step = "diverged", int(step)
        if member.last_metrics is not None:
            member.final = self._final(member, "diverged")
            member.writer.write_final(member.final)
        member.writer.update_progress(
            status="diverged", step=int(step),
            message=f"non-finite loss or gradient at step {step}; the last checkpoint holds the last good state",
        )
        self.progress.note(f"{member.label or 'run'} diverged at step {step}")

    def _final(self, member: Member, status: str) -> dict[str, Any]:
        lay = member.layout
        return final_metrics(member.last_metrics, lay.scales, lay.held_out, lay.k_centres,
                             step=member.step, status=status)
