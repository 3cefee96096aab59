"""fae_lab.phase.run_phase, the Python API of ``fae-lab phase``: ranked rows, progress callbacks,
the same table as the one rebuilt from the stores, bad arguments refused before any write."""

from __future__ import annotations

import pytest

from fae_lab.conclusions import rank_stores
from fae_lab.errors import UsageError
from fae_lab.phase import PhaseProgress, run_phase
from tests.train_helpers import write_tiny_data


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UsageError, match="no phase 'd'"):
        run_phase("d", tmp_path / "r")
    with pytest.raises(UsageError, match="--only: no experiment 'nothing'"):
        run_phase("b", tmp_path / "r", only=["nothing"])
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_run_phase_trains_ranks_and_reports_progress(tmp_path):
    data = write_tiny_data(tmp_path / "d.npz")
    runs = tmp_path / "runs"
    seen: list[PhaseProgress] = []
    rows = run_phase("combined", runs, data_path=str(data), max_steps=6, seeds=2, quiet=True,
                     extra=["--batch-size", "4", "--eval-every", "3", "--steps-per-call", "3"],
                     progress=seen.append)
    assert [r["experiment"] for r in sorted(rows, key=lambda r: r["experiment"])] == [
        "baseline_multi_scale", "combined_best"]
    assert all(r["n_seeds"] == 2 and r["status"] == "finished" for r in rows)
    # Two groups (one per experiment, its two seeds vmapped) of 6 steps: 12 group steps.
    assert {p.total for p in seen} == {12} and seen[-1].step == 12 and seen[-1].runs == ()
    assert [p.step for p in seen] == sorted(p.step for p in seen)
    assert {p.runs for p in seen if p.group == 0} == {("baseline_multi_scale_s0", "baseline_multi_scale_s1")}
    assert {p.step for p in seen if p.group == 1} >= {6, 9, 12}
    # The rows are the table rebuilt from the stores on disk.
    rebuilt = rank_stores(runs, ["baseline_multi_scale", "combined_best"])
    for row, again in zip(rows, rebuilt, strict=True):
        assert row["experiment"] == again["experiment"]
        assert row["test_rel_mse"] == pytest.approx(again["test_rel_mse"])
        assert row["vs_baseline"] == again["vs_baseline"]
    # A second call reuses the finished runs: nothing to train, the progress says so.
    seen.clear()
    again = run_phase("combined", runs, data_path=str(data), max_steps=6, seeds=2, quiet=True,
                      extra=["--batch-size", "4", "--eval-every", "3", "--steps-per-call", "3"],
                      progress=seen.append)
    assert [p.total for p in seen] == [0] and [r["test_rel_mse"] for r in again] == [r["test_rel_mse"] for r in rows]
