"""The ranked table over seeds (fae_lab.ranking, ``--seeds``): mean and spread per experiment,
the significance rule, the rose-from-best flag and the gap, on fabricated run stores (real
writer) and on a real vmapped sweep of seeds; bad ``--seeds`` values are refused in one line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import xarray as xr

from fae_lab.ranking import (
    COLUMNS,
    evaluation_statistics,
    experiment_row,
    format_table,
    rank,
    run_summary,
)
from fae_lab.sweep import main as sweep_main
from fae_lab.testing.fake_runs import SyntheticRunWriter, write_synthetic_run
from tests.train_helpers import assert_one_line_refusal, read_json, run_cli, write_tiny_data

SMALL = dict(eval_every=20, log_every=5, resolution=16, n_scales=3, n_samples=2, n_bins=8)


def _experiment(root, name, seeds, stuck=False, **options):
    """Fabricated runs of one experiment, one per seed, and its table row; ``stuck`` runs
    keep the reconstruction of their second evaluation to the end (they stop learning)."""
    runs = [f"{name}_s{i}" for i in range(len(seeds))]
    for run, seed in zip(runs, seeds, strict=True):
        writer = SyntheticRunWriter(root / run, seed=seed, **{**SMALL, **options})
        if stuck:
            fabricated = writer.reconstruction
            writer.reconstruction = lambda row, f=fabricated: f(min(row, 1))
        writer.advance(writer.layout.n_eval)
        writer.finish()
    summaries = [run_summary(root / run) for run in runs]
    return experiment_row(name, runs, summaries, options.get("loss_type", "l2"), "standard"), summaries


def _final_errors(root, runs):
    return np.array([read_json(root / r / "final.json")["final/test_rel_mse"] for r in runs])


@pytest.mark.slow
def test_mean_and_spread_over_seeds_and_the_significance_rule(tmp_path):
    # The same settings twice (different seeds), and runs that stopped learning early.
    same_a, _ = _experiment(tmp_path, "same_a", [0, 1, 2], n_evals=12)
    same_b, _ = _experiment(tmp_path, "same_b", [3, 4, 5], n_evals=12)
    short, _ = _experiment(tmp_path, "short", [6, 7, 8], stuck=True, n_evals=12)
    for row in (same_a, same_b, short):
        errors = _final_errors(tmp_path, row["runs"].split(";"))
        assert row["n_seeds"] == 3 and row["status"] == "finished"
        assert row["test_rel_mse"] == pytest.approx(errors.mean())
        assert row["test_rel_mse_spread"] == pytest.approx(errors.std(ddof=1))
        assert row["gap"] is None and row["gap_spread"] is None  # no training-split variables
    ranked = rank([short, same_b, same_a], baseline="same_a")
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    assert ranked[-1]["experiment"] == "short"  # stopped learning: the largest error
    by_name = {r["experiment"]: r for r in ranked}
    # |Δmean| against spread_a + spread_b, from the stored numbers.
    a, b, c = (_final_errors(tmp_path, by_name[n]["runs"].split(";"))
               for n in ("same_a", "same_b", "short"))
    assert abs(a.mean() - b.mean()) <= a.std(ddof=1) + b.std(ddof=1)
    assert abs(c.mean() - a.mean()) > c.std(ddof=1) + a.std(ddof=1)
    assert by_name["same_b"]["vs_baseline"] == "n.s."
    assert by_name["short"]["vs_baseline"] == "sig"
    assert by_name["same_a"]["vs_baseline"] == "-"  # the baseline itself
    assert ranked[0]["vs_above"] == "-" and ranked[1]["vs_above"] == "n.s."
    assert ranked[2]["vs_above"] == "sig"
    table = format_table(ranked)
    assert "n.s." in table and "±" in table and len(table.splitlines()) == 4


@pytest.mark.slow
def test_one_seed_has_no_spread_and_no_verdict(tmp_path):
    one, _ = _experiment(tmp_path, "one", [0], n_evals=4)
    other, _ = _experiment(tmp_path, "other", [1, 2], n_evals=4)
    assert one["test_rel_mse_spread"] is None
    ranked = rank([one, other], baseline="other")
    assert {r["experiment"]: r["vs_baseline"] for r in ranked}["one"] == "-"


@pytest.mark.slow
def test_resolved_bandwidth_and_rose_from_best_of_a_run(tmp_path):
    # A run whose last evaluation falls back to an early reconstruction: its error rose.
    writer = SyntheticRunWriter(tmp_path / "rose", n_evals=6, seed=3, **SMALL)
    fabricated = writer.reconstruction
    writer.reconstruction = lambda row: fabricated(1 if row == 5 else row)
    writer.advance(6)
    writer.finish()
    write_synthetic_run(tmp_path / "steady", n_evals=6, seed=3, **SMALL)
    for name, rose in (("rose", True), ("steady", False)):
        summary = run_summary(tmp_path / name)
        with xr.open_zarr(tmp_path / name / "metrics.zarr") as ds:
            errors = ds["eval_rel_mse"].values
            fraction = 1 - ds["eval_spectral_mse"].values[-1] / ds["eval_spectral_target"].values[-1]
            upper = ds["k_upper"].values
        # The flag: the final error against 1.1 x the best, read from the store.
        assert bool(errors[-1] > 1.1 * errors.min()) is rose and summary["rose_from_best"] is rose
        # Resolved bandwidth: the upper edge of the last bin before the first one under 0.5.
        failing = np.flatnonzero(fraction < 0.5)
        expected = upper[failing[0] - 1] if failing.size and failing[0] > 0 else (
            0.0 if failing.size else upper[-1])
        assert summary["resolved_bandwidth"] == pytest.approx(expected)
    row = experiment_row("rose", ["rose"], [run_summary(tmp_path / "rose")], "l2", "standard")
    assert row["rose_from_best"] == 1


@pytest.mark.slow
def test_the_gap_is_test_minus_training_split_error_when_the_store_has_it(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_evals=5, **SMALL)
    with xr.open_zarr(run / "metrics.zarr") as ds:
        metrics = ds.load()
    train_error = metrics["eval_rel_mse"] * 0.5
    with_train = metrics.assign(eval_train_rel_mse=train_error)
    stats = evaluation_statistics(with_train, int(metrics["eval_step"][-1]), None)
    assert stats["gap"] == pytest.approx(float(metrics["eval_rel_mse"][-1] * 0.5))
    assert evaluation_statistics(metrics, None, None)["gap"] is None


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.mark.slow
def test_sweep_of_two_identical_settings_with_seeds_is_not_significant(tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    # Two grid points with the same setting spelled twice: identical configurations.
    assert sweep_main(["--runs", str(runs), "--grid", "beta=1e-4,1.0e-4", "--seeds", "2", "--",
                       "--data-path", str(tiny_data), "--max-steps", "4", "--eval-every", "2",
                       "--batch-size", "4", "--steps-per-call", "2", "--pooling-type", "mean",
                       "--n-reconstruction-samples", "2"]) == 0
    err = capsys.readouterr().err
    assert "training 4 runs as one vmapped program" in err
    with open(runs / "ranking.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 2
    for row in rows:
        names = row["runs"].split(";")
        assert names == [f"{row['experiment']}_s0", f"{row['experiment']}_s1"]
        seeds = [read_json(runs / n / "config.json")["config"]["seed"] for n in names]
        assert seeds == [0, 1]
        errors = np.array([read_json(runs / n / "final.json")["final/test_rel_mse"] for n in names])
        assert float(row["test_rel_mse"]) == pytest.approx(errors.mean())
        assert float(row["test_rel_mse_spread"]) == pytest.approx(errors.std(ddof=1))
        assert errors[0] != errors[1]  # the seeds really differ
    assert {r["vs_baseline"] for r in rows} == {"-", "n.s."}
    assert rows[1]["vs_above"] == "n.s."


@pytest.mark.slow
@pytest.mark.parametrize("command, value", [("phase", "0"), ("phase", "two"), ("sweep", "-2")])
def test_bad_seeds_are_refused_in_one_line(command, value, tmp_path):
    args = ["combined"] if command == "phase" else ["--grid", "beta=1e-4"]
    result = run_cli(command, *args, "--runs", str(tmp_path / "r"), "--seeds", value)
    assert_one_line_refusal(result, "--seeds")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_sweep_refuses_seeds_with_a_seed_grid(tmp_path):
    result = run_cli("sweep", "--runs", str(tmp_path / "r"), "--grid", "seed=0,1", "--seeds", "2")
    assert_one_line_refusal(result, "--seeds")
    assert not (tmp_path / "r").exists()
