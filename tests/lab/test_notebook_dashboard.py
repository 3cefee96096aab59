"""lab.notebook.NotebookDashboard outside a kernel: training in a thread, the views polled
meanwhile, the bar and status at the end, the training's exception handed back."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from fae_lab.testing.fake_runs import SyntheticRunWriter
from lab.notebook import NotebookDashboard


def progress(step, total, runs=("a",)):
    return SimpleNamespace(step=step, total=total, group=0, n_groups=1, runs=runs)


@pytest.mark.slow
def test_views_follow_the_stores_while_the_thread_trains(tmp_path):
    dashboard = NotebookDashboard(tmp_path / "runs", views=("Curves", "Learned fraction"), poll_seconds=0.05)
    assert dashboard.state.runs == [] and dashboard.status.object == "not started"
    seen_while_training = threading.Event()
    in_thread = []

    def train(report):
        in_thread.append(threading.current_thread() is not threading.main_thread())
        writer = SyntheticRunWriter(tmp_path / "runs" / "a", n_evals=4, resolution=16, n_bins=8)
        writer.advance(2)
        report(progress(50, 150))
        # The notebook's thread polls meanwhile: the run shows up before training ends.
        deadline = time.monotonic() + 30
        while "a" not in dashboard.state.runs and time.monotonic() < deadline:
            time.sleep(0.05)
        if "a" in dashboard.state.runs:
            seen_while_training.set()
        writer.advance(2)
        writer.finish()
        report(progress(150, 150))
        return "rows"

    assert dashboard.train(train) == "rows"
    assert in_thread == [True] and seen_while_training.is_set()
    assert dashboard.state.runs == ["a"]
    assert dashboard.bar.value == dashboard.bar.max
    assert dashboard.status.object.startswith("done: 1 runs, 150 group steps")
    # The curves hold every evaluation the store has (4), read by the polls.
    assert len(dashboard.views["Curves"].eval_sources["a"].data["step"]) == 4


def test_the_training_exception_is_raised_in_the_waiting_thread(tmp_path):
    dashboard = NotebookDashboard(tmp_path, views=("Curves",), poll_seconds=0.05)

    def train(report):
        report(progress(3, 10))
        raise ValueError("bad flag")

    with pytest.raises(ValueError, match="bad flag"):
        dashboard.train(train)
    assert dashboard.status.object == "training failed: ValueError: bad flag"
    assert dashboard.bar.value == 300  # 3 of 10 steps, on the bar's scale of 1000


def test_unknown_view_and_waiting_before_start_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no view 'Nope'"):
        NotebookDashboard(tmp_path, views=("Curves", "Nope"))
    with pytest.raises(RuntimeError, match="start training first"):
        NotebookDashboard(tmp_path, views=("Curves",)).wait()
