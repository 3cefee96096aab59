"""The training loop of a group, between host calls, and what it keeps per member.

Each host call runs a chunk of steps of every member in one compiled call (``--steps-per-call``,
or by default as many as last about a second at the measured step time, at most 50:
:mod:`fae_lab.train.chunks`); the next call is dispatched before the previous call's metrics
are read, so the device never waits on the host. At the steps of the evaluation schedule the loop evaluates on the device, hands the
rows to each member's background store writer and, when due, checkpoints each member.

What survives a failure:

* The first checkpoint (the initial state, step 0) is committed before the first
  evaluation, so a run killed once its store shows any row has one to resume from.
* A member whose step s is not finite (loss, gradient or updated parameters; see
  :mod:`fae_lab.train.step`) is ``diverged`` at step s; its state, frozen on the device at
  step s - 1, is checkpointed there whatever ``--checkpoint-every`` says. An evaluation
  that is not finite is not written (it is not counted in ``n_eval``) and ends the member
  as ``diverged`` too. The other members go on.
* A SIGINT / SIGTERM (:mod:`fae_lab.train.interrupt`) is read at the next chunk boundary:
  the chunks in flight (at most two) complete, the last completed step is checkpointed, and
  the run is ``failed`` with a message naming that checkpoint. Chunks sized from the step
  time keep that wait to a few seconds on a slow CPU too.
* ``finished`` (and any status that names a checkpoint) is written only after the
  checkpoint it relies on is committed (orbax writes a temporary directory and renames it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.config import RunConfig
from fae_lab.store import AsyncStoreWriter, StoreLayout, final_metrics
from fae_lab.train import interrupt
from fae_lab.train.checkpoint import Checkpoints
from fae_lab.train.chunks import ChunkSizer, fixed_length
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
    message: str = ""


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
    message: str = ""
    checkpoint_step: int | None = None  # the step of the member's latest checkpoint

    def result(self) -> RunResult:
        return RunResult(run_dir=self.run_dir, status=self.status, step=self.step, final=self.final,
                         message=self.message)


CHECKPOINT_SECONDS = 60.0


class GroupLoop:
    """The training loop of a group, between host calls (kept small and explicit)."""

    def __init__(self, config: RunConfig, members: list[Member], progress: ProgressReporter,
                 evaluate, eval_data: EvalData, run_chunk, rest,
                 stop: Callable[[], int | None] = interrupt.requested,
                 on_evaluation: Callable | None = None,
                 slow_note: Callable[[float, int], str | None] | None = None,
                 compile_chunk: Callable[[int], Any] | None = None):
        self.config, self.members, self.progress = config, members, progress
        # Called after each evaluation as on_evaluation(running members, params_of, step)
        # (--track-ntk-every); None leaves the loop as it is.
        self.on_evaluation = on_evaluation
        # Called once, when the step time is first measured, as slow_note(seconds a step,
        # steps left); a line it returns is noted (a CPU run that will take long).
        self.slow_note = slow_note
        # Called once, as compile_chunk(n), with the length of the first chunk, before the first
        # checkpoint and evaluation: it begins compiling that chunk's program in the background
        # and returns an object whose wait() returns once it is compiled (run.compile_ahead).
        self.compile_chunk = compile_chunk
        self.evaluate, self.eval_data, self.run_chunk, self.rest = evaluate, eval_data, run_chunk, rest
        self.stop = stop
        self.step = 0
        self.n_eval = 0  # evaluation rows done (the row index of the next one)
        self.eval_steps = [int(s) for s in members[0].layout.eval_steps]
        self.chunks = ChunkSizer(fixed_length(config.steps_per_call, jax.default_backend()))
        self.last_done: float | None = None  # when the device last finished a chunk

    def elapsed(self, member: Member) -> float:
        return member.record["elapsed"] + (time.perf_counter() - self.t0)

    def running(self) -> list[tuple[int, Member]]:
        return [(i, m) for i, m in enumerate(self.members) if m.status == "running"]

    def run(self, state: TrainState) -> None:
        cfg = self.config
        self.t0 = self.last_checkpoint = time.perf_counter()
        self.step = int(state.step[0])
        self.n_eval = self.members[0].record["n_eval"]
        self.progress.start(self.step)
        evaluate_first = self.n_eval == 0 and self.step == 0
        ahead = None
        if self.compile_chunk is not None and self.step < cfg.max_steps:
            first = self._target(self.n_eval + evaluate_first) - self.step
            ahead = self.compile_chunk(self.chunks.length(first))
        if any(m.checkpoint_step is None for _, m in self.running()):
            # The first checkpoint, committed before anything else (evaluation included), so
            # a run killed once its store shows a row can resume.
            self._checkpoint(state)
            self._wait_checkpoints()
        if evaluate_first and self.stop() is None:
            self._evaluate(state, 0)
            self.n_eval = 1
            self._after_evaluation(state)
        pending = None  # (metrics of the chunk in flight, its length, its first step, when it was called)
        while self.step < cfg.max_steps and self.running():
            if self.stop() is not None:
                if pending is not None:
                    self._absorb(*pending, state)
                self._interrupted(state)
                return
            target = self._target(self.n_eval)
            n = self.chunks.length(target - self.step)
            if ahead is not None:
                ahead.wait()  # the first chunk's program, compiled in the background
                ahead = None
            called = time.perf_counter()
            state, metrics = self.run_chunk(state, n)
            if pending is not None:
                self._absorb(*pending, state)
            pending = (metrics, n, self.step, called)
            self.step += n
            if self.step == target:
                self._absorb(*pending, state)
                pending = None
                if not self.running():
                    break
                self._evaluate(state, self.n_eval)
                self.n_eval += 1
                self._after_evaluation(state)
                stop = cfg.stop_after_step is not None and self.step >= cfg.stop_after_step
                if stop or self.step == cfg.max_steps or self._due_checkpoint(self.step):
                    self._checkpoint(state)
                if stop and self.step < cfg.max_steps:
                    self._wait_checkpoints()
                    for _, member in self.running():
                        self._end(member, "failed", self.step,
                                  f"stopped at step {self.step}: continue with --resume")
                    return
        if pending is not None:  # every member diverged within the chunk in flight
            self._absorb(*pending, state)
        self._wait_checkpoints()  # 'finished' only once the final checkpoint is committed
        for _, member in self.running():
            member.status, member.step = "finished", self.step
            member.final = self._final(member, "finished")
            member.writer.write_final(member.final)
            member.writer.update_progress(status="finished", step=self.step, message="")
            self.progress.finish(member.final, member.label if len(self.members) > 1 else "")

    def _target(self, n_eval: int) -> int:
        """The step the loop trains to before evaluation row ``n_eval`` (the last step once
        every row is written)."""
        return self.eval_steps[n_eval] if n_eval < len(self.eval_steps) else self.config.max_steps

    def _due_checkpoint(self, step: int) -> bool:
        """At the evaluations that are multiples of ``--checkpoint-every``; by default at the
        first evaluation after ``CHECKPOINT_SECONDS`` since the last checkpoint (saving at
        every evaluation costs a sizeable share of the end-to-end rate on a GPU;
        benchmarks/RESULTS.md has the figure)."""
        every = self.config.checkpoint_every
        if every is not None:
            return step % every == 0
        return time.perf_counter() - self.last_checkpoint >= CHECKPOINT_SECONDS

    def _absorb(self, metrics, n: int, first_step: int, called: float, state: TrainState) -> None:
        """Log a chunk's per-step metrics; end the members that diverged within it.

        ``metrics``: (M, >= n) arrays whose first ``n`` columns are the chunk's ``n`` steps (a
        sized chunk's arrays are longer). ``state`` is the latest state (possibly of a later
        chunk): a diverged member's part of it stays frozen at its last finite step.
        ``called``: when the chunk was called."""
        host_all = {k: np.asarray(v, np.float64)[:, :n] for k, v in jax.device_get(metrics).items()}  # (M, n) each
        self._timed(len(host_all["train_loss"][0]), called)
        for i, member in self.running():
            host = {k: v[i] for k, v in host_all.items()}
            diverged = int(host.pop("diverged_step")[-1])
            steps = np.arange(first_step + 1, first_step + len(host["train_loss"]) + 1)
            if diverged < 0:
                self._log_rows(member, steps, host)
                continue
            self._log_rows(member, steps[steps < diverged], {k: v[steps < diverged] for k, v in host.items()})
            self._checkpoint_last_finite(member, i, state, diverged - 1)
            # The first non-finite step is logged: it is the evidence (after the checkpoint,
            # whose row count excludes it, so a resumed run computes that step again).
            self._log_rows(member, steps[steps == diverged], {k: v[steps == diverged] for k, v in host.items()})
            self._end(member, "diverged", diverged,
                      f"non-finite loss, gradient or parameters at step {diverged}; checkpoint at step "
                      f"{diverged - 1}, the last finite step (--resume repeats step {diverged} exactly)")
            self.progress.note(f"{member.label or 'run'} diverged at step {diverged} "
                               f"(checkpoint at step {diverged - 1})")
        self.progress.reached(first_step + len(host_all["train_loss"][0]))
        if len(self.members) == 1 and self.members[0].status == "running":
            self.progress.update(first_step + len(host_all["train_loss"][0]),
                                 float(host_all["train_loss"][0, -1]))

    def _timed(self, n: int, called: float) -> None:
        """Give the chunk sizer the device time of a chunk of ``n`` steps just read: from its
        call, or from the end of the chunk before it when that ended later (two are in flight)."""
        done = time.perf_counter()
        start = called if self.last_done is None else max(called, self.last_done)
        first = self.chunks.step_seconds is None
        self.chunks.observe(n, done - start)
        self.last_done = done
        if first and self.chunks.step_seconds is not None and self.slow_note is not None:
            line = self.slow_note(self.chunks.step_seconds, self.config.max_steps - self.step)
            if line:
                self.progress.note(line)

    def _log_rows(self, member: Member, steps: np.ndarray, host: dict[str, np.ndarray]) -> None:
        for start, block in member.rows.add(steps, host, self.elapsed(member)):
            member.writer.write_train_rows(start, block)

    def _evaluate(self, state: TrainState, row: int) -> None:
        metrics, recon = self.evaluate(state.params, self.rest, self.eval_data)
        metrics, recon = jax.device_get((metrics, recon))  # one transfer for all of them
        host_all = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        recon = np.asarray(recon, np.float32)
        for i, member in self.running():
            host = {k: v[i] for k, v in host_all.items()}
            # A ladder rung without an encoder is evaluated on its training split only.
            split = "eval_" if member.config.model.rung == "fae" else "eval_train_"
            rel = float(host[f"{split}rel_mse"])
            if not (math.isfinite(rel) and math.isfinite(float(host[f"{split}mse"]))):
                # Finite parameters whose reconstructions are not: the row is not written
                # (n_eval never counts it) and the member ends here.
                self._end(member, "diverged", self.step,
                          f"the evaluation at step {self.step} is not finite (not written); the last "
                          f"checkpoint is at step {member.checkpoint_step}")
                self.progress.note(f"{member.label or 'run'}: non-finite evaluation at step {self.step}")
                continue
            host["eval_wall_time"] = np.asarray(self.elapsed(member))
            member.writer.write_eval(row, host, recon[i])  # progress.json's step becomes this row's
            member.last_metrics, member.step = host, self.step
            best = member.record["best_rel_mse"]
            member.is_best = best is None or rel < best
            if member.is_best:
                member.record.update(best_rel_mse=rel, best_step=self.step)
            prefix = f"[{member.label}] " if len(self.members) > 1 and member.label else ""
            self.progress.evaluation(self.step, host, prefix=prefix)

    def _after_evaluation(self, state: TrainState) -> None:
        if self.on_evaluation is not None and self.running():
            self.on_evaluation(self.running(), lambda i: member_slice(state.params, i), self.step)

    def _save(self, i: int, member: Member, member_state: TrainState, step: int, *, best: bool = False) -> None:
        """Checkpoint member ``i`` at ``step``: its state, a record of the rows it counts and
        its model's fixed features (kept so that a resume does not draw them again)."""
        record = dict(member.record, n_eval=self.n_eval, rows=member.rows.snapshot(), step=step,
                      elapsed=self.elapsed(member))
        member.writer.flush()  # the rows the checkpoint counts are on disk before it exists
        fixed = member_slice(self.rest, i).to_pure_dict()
        member.checkpoints.save(step, member_state, record, fixed=fixed, best=best)
        member.checkpoint_step = step

    def _checkpoint(self, state: TrainState) -> None:
        self.last_checkpoint = time.perf_counter()
        for i, member in self.running():
            self._save(i, member, member_slice(state, i), self.step,
                       best=member.config.save_best_model and member.is_best)

    def _checkpoint_last_finite(self, member: Member, i: int, state: TrainState, step: int) -> None:
        """A diverged member's checkpoint at its last finite ``step`` (whatever the policy)."""
        if member.checkpoint_step == step:
            return
        member_state = member_slice(state, i)
        held = int(member_state.step)
        if held != step:  # the step function freezes a diverged member at its last finite step
            raise RuntimeError(f"diverged member holds step {held}, expected {step}")
        member_state = member_state._replace(diverged_step=jnp.asarray(-1, jnp.int32))
        self._save(i, member, member_state, step)

    def _wait_checkpoints(self) -> None:
        for member in self.members:
            member.checkpoints.wait()

    def _interrupted(self, state: TrainState) -> None:
        """A signal arrived: checkpoint the last completed step, then mark the run failed."""
        name = interrupt.signal_name(self.stop())
        if any(m.checkpoint_step != self.step for _, m in self.running()):
            self._checkpoint(state)
        self._wait_checkpoints()
        for _, member in self.running():
            self._end(member, "failed", self.step,
                      f"interrupted by {name} at step {self.step}; checkpoint at step {self.step}: "
                      "continue with --resume")
        self.progress.note(f"interrupted by {name} at step {self.step}; checkpoint at step {self.step}")

    def _end(self, member: Member, status: str, step: int, message: str) -> None:
        """End a member: ``final.json`` when it ends as diverged, then ``progress.json``."""
        member.status, member.step, member.message = status, int(step), message
        if status == "diverged" and member.last_metrics is not None:
            member.final = self._final(member, "diverged")
            member.writer.write_final(member.final)
        if status == "diverged":
            self._wait_checkpoints()  # the message names a checkpoint: it is committed first
        member.writer.update_progress(status=status, step=int(step), message=message)

    def _final(self, member: Member, status: str) -> dict[str, Any]:
        lay = member.layout
        return final_metrics(member.last_metrics, lay.scales, lay.held_out, lay.k_centres,
                             step=member.step, status=status)
