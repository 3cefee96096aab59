"""``fae-lab phase`` and ``fae-lab demo``: the seed's programme as runs under one directory."""

from __future__ import annotations

import csv
import json

import pytest

from fae_lab.config import to_json_dict
from fae_lab.experiments import PHASES, SEED_COMMANDS, phase_experiments
from fae_lab.phase import PHASE_GENERATED_SAMPLES, plan, select
from fae_lab.phase import main as phase_main
from fae_lab.train.args import parse_run_config
from tests.train_helpers import assert_one_line_refusal, read_json, run_cli, write_tiny_data


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_plans_valid_runs_with_its_sweeps(phase, tmp_path):
    planned = plan(phase_experiments(phase), tmp_path, None, 10, [], False)
    names = [name for name, _, _ in planned]
    assert names[0] == "baseline_multi_scale" and len(set(names)) == len(names)
    configs = {name: cfg for name, cfg, _ in planned}
    if phase == "b":
        assert sorted(c.loss.freq_weight_power for n, c in configs.items() if "fourier" in n) == [0.5, 1.0, 2.0]
    if phase == "c":
        assert sorted(c.model.rff_dim for n, c in configs.items() if "penultimate" in n) == [256, 512, 1024]
        assert {c.model.rff_location for c in configs.values() if c.model.decoder_type == "rff_output"} == {
            "penultimate", "coordinates", "both"}
    for _, cfg, _ in planned:
        assert cfg.max_steps == 10 and cfg.output_dir.startswith(str(tmp_path))
    # Every seed command of the phase is one of its runs (same settings, whatever the run's name).
    ignored = {"output_dir", "wandb_name", "wandb_project", "max_steps"}

    def settings(cfg):
        return {k: v for k, v in to_json_dict(cfg).items() if k not in ignored}

    planned_settings = [settings(cfg) for _, cfg, _ in planned]
    prefix = "combined_" if phase == "combined" else f"phase_{phase}_"
    seed_names = [n for n in SEED_COMMANDS if n.startswith(prefix)]
    assert seed_names
    for name in seed_names:
        assert settings(parse_run_config(list(SEED_COMMANDS[name]))) in planned_settings, name


@pytest.mark.slow
def test_phase_combined_trains_ranks_and_writes_csv(tmp_path, capsys):
    data = write_tiny_data(tmp_path / "d.npz")
    runs = tmp_path / "runs"
    assert phase_main(["combined", "--runs", str(runs), "--data-path", str(data), "--max-steps", "6",
                       "--quiet", "--", "--batch-size", "4", "--eval-every", "3", "--steps-per-call", "3"]) == 0
    table = capsys.readouterr().out
    with open(runs / "ranking.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert {r["experiment"] for r in rows} == {"baseline_multi_scale", "combined_best"}
    assert all(r["runs"] == r["experiment"] and r["n_seeds"] == "1" for r in rows)  # RUNS/<experiment>
    values = [float(r["test_rel_mse"]) for r in rows]
    assert values == sorted(values)
    for r in rows:
        final = read_json(runs / r["runs"] / "final.json")
        assert float(r["test_rel_mse"]) == pytest.approx(final["final/test_rel_mse"])
        assert float(r["high_freq_mse"]) == pytest.approx(final["final/spectral/high_freq_mse"])
    assert "combined_best" in table and "ranking written" in table
    # ... and the HTML report of the runs, its path printed.
    assert f"report: {runs / 'report.html'}" in table
    report = (runs / "report.html").read_text()
    assert report.startswith("<!DOCTYPE html>") and "compare-loss:combined_best" in report
    # Run again: finished runs are reused, not retrained (their stores are unchanged).
    before = (runs / "combined_best" / "final.json").read_bytes()
    assert phase_main(["combined", "--runs", str(runs), "--data-path", str(data), "--max-steps", "6",
                       "--quiet", "--", "--batch-size", "4", "--eval-every", "3", "--steps-per-call", "3"]) == 0
    assert (runs / "combined_best" / "final.json").read_bytes() == before


@pytest.mark.slow
def test_phase_rejects_a_bad_phase_with_one_line():
    result = run_cli("phase", "d")
    assert_one_line_refusal(result, "phase")


@pytest.mark.slow
def test_demo_trains_three_runs_and_says_where_they_are(tmp_path):
    runs = tmp_path / "demo"
    result = run_cli("demo", "--runs", str(runs), "--max-steps", "10", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("baseline", "h1", "rff_output"):
        assert read_json(runs / name / "progress.json")["status"] == "finished"
    assert read_json(runs / "h1" / "config.json")["tags"][1] == "h1"
    assert read_json(runs / "rff_output" / "config.json")["tags"][2] == "rff_output"
    assert "fae-lab serve --runs" in result.stdout and str(runs) in result.stdout
    assert f"report: {runs / 'report.html'}" in result.stdout
    report = (runs / "report.html").read_text()
    assert all(f"compare-loss:{name}" in report for name in ("baseline", "h1", "rff_output"))


@pytest.mark.slow
def test_the_phase_table_reads_final_json_through_the_store_reader(tmp_path):
    """read_final: None without a run or before the run ends, final.json once it has, and a
    one-line UsageError (not a traceback) for a run whose progress.json the store cannot honour."""
    from fae_lab.errors import UsageError
    from fae_lab.phase import read_final
    from fae_lab.testing.fake_runs import write_synthetic_run

    assert read_final(tmp_path / "nothing") is None
    running = write_synthetic_run(tmp_path / "running", n_evals=4, resolution=16, n_bins=8,
                                  status="running")
    assert read_final(running) is None
    done = write_synthetic_run(tmp_path / "done", n_evals=4, resolution=16, n_bins=8)
    assert read_final(done) == read_json(done / "final.json")
    progress = read_json(done / "progress.json")
    progress["n_eval"] = 99
    (done / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(UsageError, match="n_eval = 99 is outside") as refused:
        read_final(done)
    assert "\n" not in str(refused.value)


def test_only_keeps_the_baseline_and_refuses_an_unknown_name(tmp_path, capsys):
    experiments = phase_experiments("b")
    chosen = select(experiments, ("phase_b_h1_lambda0.5",))
    assert [e.name for e in chosen] == ["baseline_multi_scale", "phase_b_h1_lambda0.5"]
    assert [e.name for e in select(experiments, None)] == [e.name for e in experiments]
    assert phase_main(["b", "--runs", str(tmp_path / "r"), "--only", "phase_b_nothing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--only" in err and "phase_b_nothing" in err and "phase_b_h1_lambda0.5" in err
    assert not (tmp_path / "r").exists()


def test_a_phase_on_generated_data_uses_the_phase_sample_count(tmp_path, monkeypatch):
    seen = {}

    def fake_series(experiments, runs, **kwargs):
        seen.update(kwargs, names=[e.name for e in experiments])
        return []

    monkeypatch.setattr("fae_lab.phase.run_series", fake_series)
    monkeypatch.setattr("fae_lab.phase.print_ranking", lambda rows, runs: None)
    assert phase_main(["c", "--runs", str(tmp_path / "r"), "--only", "phase_c_rff512_both",
                       "--", "--generate-n-samples", "64"]) == 0
    assert seen["names"] == ["baseline_multi_scale", "phase_c_rff512_both"]
    extra = seen["extra"]
    assert extra[:2] == ["--generate-n-samples", str(PHASE_GENERATED_SAMPLES)] == ["--generate-n-samples", "4096"]
    # a later flag wins: the user's 64
    assert parse_run_config([*extra, "--output-dir", str(tmp_path / "x")]).data.generate_n_samples == 64
    seen.clear()
    data = write_tiny_data(tmp_path / "d.npz")
    assert phase_main(["c", "--runs", str(tmp_path / "r2"), "--data-path", str(data)]) == 0
    assert "--generate-n-samples" not in seen["extra"]


@pytest.mark.slow
def test_a_rerun_phase_continues_its_stopped_runs(tmp_path):
    data = write_tiny_data(tmp_path / "d.npz")
    runs = tmp_path / "runs"
    argv = ["a", "--runs", str(runs), "--data-path", str(data), "--max-steps", "6", "--quiet",
            "--only", "phase_a_ladder_auto_decoder",
            "--", "--batch-size", "4", "--eval-every", "3", "--steps-per-call", "3"]
    assert phase_main(argv) == 0
    stopped = runs / "phase_a_ladder_auto_decoder"
    finished_baseline = (runs / "baseline_multi_scale" / "final.json").read_bytes()
    # As a run stopped by a signal before its end leaves it: failed, no final.json.
    (stopped / "final.json").unlink()
    progress = read_json(stopped / "progress.json")
    (stopped / "progress.json").write_text(json.dumps(dict(progress, status="failed")))
    assert phase_main(argv) == 0
    assert read_json(stopped / "progress.json")["status"] == "finished"
    assert read_json(stopped / "final.json")["final/step"] == 6
    assert (runs / "baseline_multi_scale" / "final.json").read_bytes() == finished_baseline  # reused
    with open(runs / "ladder.csv") as f:
        assert [r["rung"] for r in csv.DictReader(f)] == ["auto_decoder", "fae"]


def test_without_the_lab_extra_the_report_is_one_line_saying_how_to_get_it(tmp_path, monkeypatch,
                                                                         capsys):
    import importlib.util

    from fae_lab.runs_report import LAB_EXTRA_HINT, write_runs_report

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bokeh" else real(name, *a))
    assert write_runs_report(tmp_path, "fae-lab demo") is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and LAB_EXTRA_HINT in out[0] and "fae-lab report" in out[0]
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_a_report_that_cannot_be_written_is_one_line_not_a_failure(tmp_path, capsys):
    from fae_lab.runs_report import write_runs_report

    assert write_runs_report(tmp_path, "fae-lab phase") is None  # an empty folder: no runs
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("fae-lab phase: no HTML report: ") and "no runs" in out[0]


def test_the_demo_runs_share_their_training_settings_and_evaluate_whole_batches(tmp_path):
    """The three demo runs differ only in loss and decoder (same batch, steps, schedule and
    evaluation), and the evaluation batch splits the test split into whole batches, so no
    padded sample is decoded (the demo's CPU budget counts every decoded point)."""
    from fae_lab.demo import DEMO_DATA, DEMO_EXPERIMENTS, DEMO_STEPS, DEMO_TRAINING

    planned = plan(DEMO_EXPERIMENTS, tmp_path, str(tmp_path / "data.npz"), DEMO_STEPS, DEMO_TRAINING, False)
    configs = [cfg for _, cfg, _ in planned]
    assert [name for name, _, _ in planned] == ["baseline", "h1", "rff_output"]
    assert len({(c.optim, c.eval, c.max_steps, c.steps_per_call, c.data) for c in configs}) == 1
    cfg = configs[0]
    assert cfg.max_steps == DEMO_STEPS and DEMO_STEPS % cfg.eval.eval_every == 0
    # the split's rule (fae_lab.data.views.split_samples): round(test_fraction * N) test samples
    n_test = round(cfg.data.test_fraction * DEMO_DATA["n_samples"])
    assert n_test == 205 and n_test % cfg.eval.eval_batch_size == 0
    assert cfg.eval.eval_train_samples is None  # as many training samples as test samples
