"""fae_lab.conclusions: a phase's table rebuilt from its stores, comparisons beyond the seed spread.

The expected numbers are computed here from each run's final.json with NumPy, independently of
fae_lab.ranking's code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fae_lab.conclusions import NoStores, against_baseline, compare, rank_stores, runs_of
from fae_lab.testing.fake_runs import write_synthetic_run

BASE, H1 = "baseline_multi_scale", "phase_b_h1_lambda0.5"


def test_runs_of_finds_one_seed_or_numbered_seeds_only():
    names = ["a", "a_s0", "a_s1", "a_s10", "ab_s0", "a_sx", "a_ladder_s0_s0", "a_ladder_s0_s1"]
    assert runs_of("a", names) == ["a_s0", "a_s1", "a_s10"]
    assert runs_of("a", ["a", "ab"]) == ["a"]
    assert runs_of("a_ladder_s0", names) == ["a_ladder_s0_s0", "a_ladder_s0_s1"]
    assert runs_of("b", names) == []


@pytest.fixture
def phase_runs(tmp_path):
    """Two seeds of the baseline and of H1 (fabricated, different data seeds), one unrelated run."""
    for i in range(2):
        write_synthetic_run(tmp_path / f"{BASE}_s{i}", seed=i, n_evals=4, resolution=16, n_bins=8)
        write_synthetic_run(tmp_path / f"{H1}_s{i}", loss_type="h1", seed=10 + i, n_evals=4,
                            resolution=16, n_bins=8)
    write_synthetic_run(tmp_path / "elsewhere", seed=99, n_evals=4, resolution=16, n_bins=8)
    return tmp_path


def final(run_dir, key):
    return json.loads((run_dir / "final.json").read_text())[key]


@pytest.mark.slow
def test_rank_stores_recomputes_means_spreads_and_marks(phase_runs):
    rows = rank_stores(phase_runs, [BASE, H1, "phase_b_not_run"])
    assert sorted(r["experiment"] for r in rows) == [BASE, H1]  # the unrun one is left out
    by = {r["experiment"]: r for r in rows}
    assert by[H1]["loss_type"] == "h1" and by[BASE]["decoder_type"] == "standard"
    assert by[H1]["runs"] == f"{H1}_s0;{H1}_s1" and by[H1]["n_seeds"] == 2
    for name in (BASE, H1):
        values = np.array([final(phase_runs / f"{name}_s{i}", "final/test_rel_mse") for i in range(2)])
        assert by[name]["test_rel_mse"] == pytest.approx(values.mean())
        assert by[name]["test_rel_mse_spread"] == pytest.approx(values.std(ddof=1))
    # The rule, applied by hand: sig when |mean_a - mean_b| > spread_a + spread_b.
    for statistic in ("test_rel_mse", "high_freq_mse"):
        c = compare(rows, H1, BASE, statistic)
        a = np.array([final(phase_runs / f"{H1}_s{i}", f"final/{'spectral/' if 'freq' in statistic else ''}"
                                                           f"{statistic}") for i in range(2)])
        b = np.array([final(phase_runs / f"{BASE}_s{i}", f"final/{'spectral/' if 'freq' in statistic else ''}"
                                                             f"{statistic}") for i in range(2)])
        beyond = abs(a.mean() - b.mean()) > a.std(ddof=1) + b.std(ddof=1)
        assert c.mark == ("sig" if beyond else "n.s.")
        assert c.better == (a.mean() < b.mean())
        assert c.relative == pytest.approx((a.mean() - b.mean()) / b.mean())
        assert c.mark in c.sentence() and H1 in c.sentence()


@pytest.mark.slow
def test_against_baseline_covers_every_other_experiment(phase_runs):
    rows = rank_stores(phase_runs, [BASE, H1])
    comparisons = against_baseline(rows, BASE)
    assert [(c.experiment, c.statistic) for c in comparisons] == [
        (H1, "test_rel_mse"), (H1, "high_freq_mse"), (H1, "resolved_bandwidth")]
    assert all(c.reference == BASE for c in comparisons)


@pytest.mark.slow
def test_one_seed_is_undecided(tmp_path):
    write_synthetic_run(tmp_path / BASE, n_evals=3, resolution=16, n_bins=8)
    write_synthetic_run(tmp_path / H1, loss_type="h1", seed=3, n_evals=3, resolution=16, n_bins=8)
    c = compare(rank_stores(tmp_path, [BASE, H1]), H1, BASE, "test_rel_mse")
    assert c.mark == "-" and not c.significant and "undecided" in c.sentence()


@pytest.mark.slow
def test_no_finished_store_raises(tmp_path):
    with pytest.raises(NoStores, match="nothing to conclude"):
        rank_stores(tmp_path / "missing", [BASE])
    write_synthetic_run(tmp_path / "runs" / BASE, status="running", n_evals=4, resolution=16, n_bins=8)
    write_synthetic_run(tmp_path / "runs" / "other", n_evals=4, resolution=16, n_bins=8)
    with pytest.raises(NoStores):
        rank_stores(tmp_path / "runs", [BASE, H1])
