"""Progress of a run: a bar on a terminal (steps/s, loss, ETA), plain log lines otherwise.

``on_step(step)``, when given, is called with the group's step at the start and after every
chunk of steps, whatever the terminal and ``quiet`` (a caller's own progress bar, e.g. the
phase-wide one of :func:`fae_lab.phase.run_phase`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class ProgressReporter:
    def __init__(self, max_steps: int, *, quiet: bool = False, stream=None, label: str = "",
                 on_step: Callable[[int], None] | None = None):
        self.max_steps, self.quiet = max_steps, quiet
        self.on_step = on_step
        self.stream = stream or sys.stderr
        self.label = f"[{label}] " if label else ""
        self.bar = None
        self.t0 = time.perf_counter()
        self.step0 = 0
        self.loss = float("nan")

    def start(self, step: int) -> None:
        self.t0, self.step0 = time.perf_counter(), step
        self.reached(step)
        if self.quiet or not getattr(self.stream, "isatty", lambda: False)():
            return
        from tqdm import tqdm

        self.bar = tqdm(total=self.max_steps, initial=step, file=self.stream, unit="step",
                        dynamic_ncols=True, desc=self.label.strip() or "train")

    def reached(self, step: int) -> None:
        """The group stands at ``step`` (every member that still runs)."""
        if self.on_step is not None:
            self.on_step(step)

    def rate(self, step: int) -> float:
        dt = time.perf_counter() - self.t0
        return (step - self.step0) / dt if dt > 0 else float("nan")

    def update(self, step: int, loss: float) -> None:
        self.loss = loss
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.3e}", refresh=False)
            self.bar.refresh()

    def evaluation(self, step: int, metrics: dict, prefix: str = "") -> None:
        if self.quiet:
            return
        rate = self.rate(step)
        eta = (self.max_steps - step) / rate if rate and rate > 0 else float("nan")
        loss = f"{self.loss:.3e}" if self.loss == self.loss else "-"
        line = (
            f"{self.label}{prefix}step {step}/{self.max_steps}  loss {loss}  "
            f"eval rel_mse {float(metrics['eval_rel_mse']):.3e}  "
            + (f"train {float(metrics['eval_train_rel_mse']):.3e}  " if "eval_train_rel_mse" in metrics else "")
            +             f"high/total {float(metrics['eval_high_freq_error_ratio']):.2f}  "
            + (f"{rate:.1f} steps/s  ETA {_duration(eta)}" if step > self.step0 else "")
        )
        self.note(line)

    def note(self, line: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def finish(self, final: dict, member: str = "") -> None:
        if self.bar is not None:
            self.bar.n = self.max_steps
            self.bar.refresh()
        who = f"[{member}] " if member else ""
        train = final.get("final/train_rel_mse")
        self.note(f"{self.label}{who}finished: test rel MSE {final['final/test_rel_mse']:.3e}"
                  + (f", train {train:.3e}" if train is not None else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
