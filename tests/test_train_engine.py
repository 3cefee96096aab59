"""The training engine's behaviour: resume, live readers, divergence, learning, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from fae_lab.train.cli import main as train_main
from tests.train_helpers import TINY, assert_one_line_refusal, read_json, run_cli, write_tiny_data


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data") / "tiny.npz")


def _common(data, out):
    return ["--data-path", str(data), "--output-dir", str(out), "--pooling-type", "mean",
            "--encoder-hidden", "32,32", "--decoder-hidden", "32,32,32", "--latent-dim", "16"]


@pytest.mark.slow
def test_a_moved_stopped_run_resumes_to_the_same_metrics_as_an_uninterrupted_one(tiny_data, tmp_path):
    steps = ["--max-steps", "30", "--eval-every", "10", "--log-every", "3", "--batch-size", "4",
             "--steps-per-call", "4", "--loss-type", "h1", "--seed", "3"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train_main([*_common(tiny_data, whole), *steps]) == 0
    assert train_main([*_common(tiny_data, parts), *steps, "--stop-after-step", "12"]) == 0
    stopped = read_json(parts / "progress.json")
    assert stopped["status"] == "failed" and "resume" in stopped["message"]
    assert stopped["step"] == 20 and stopped["n_eval"] == 3  # stopped at the first eval >= 12
    # The stopped run is moved (as when unpacked on another machine) and resumed where it is now.
    parts = parts.rename(tmp_path / "moved")
    assert train_main([*_common(tiny_data, parts), *steps, "--resume"]) == 0
    assert read_json(parts / "progress.json")["status"] == "finished"

    a = xr.open_zarr(whole / "metrics.zarr").load()
    b = xr.open_zarr(parts / "metrics.zarr").load()
    for name in a.data_vars:
        if name in ("wall_time", "eval_wall_time"):
            continue
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-5, atol=1e-8, err_msg=name)
    fa, fb = read_json(whole / "final.json"), read_json(parts / "final.json")
    assert fb["final/test_rel_mse"] == pytest.approx(fa["final/test_rel_mse"], rel=1e-5)


@pytest.mark.slow
def test_a_resume_trains_on_the_features_the_run_drew_not_on_a_new_draw(tiny_data, tmp_path, monkeypatch):
    """The Fourier features are checkpointed: a resume whose own draw differs (another machine,
    backend or set of XLA flags; here doubled on purpose) still ends where the run would have."""
    import shutil

    from flax import nnx

    from fae_lab.models.features import CoordinateFeatures
    from fae_lab.train import run as train_run

    steps = ["--max-steps", "24", "--eval-every", "8", "--log-every", "4", "--batch-size", "4",
             "--steps-per-call", "4", "--decoder-type", "rff_output", "--rff-dim", "8", "--seed", "5"]
    whole, parts, old = tmp_path / "whole", tmp_path / "parts", tmp_path / "old_checkpoint"
    assert train_main([*_common(tiny_data, whole), *steps]) == 0
    assert train_main([*_common(tiny_data, parts), *steps, "--stop-after-step", "8"]) == 0
    checkpoint = parts / "checkpoints" / "latest" / "8"
    assert (checkpoint / "fixed").is_dir()
    # A checkpoint from before the features were kept: the same one without them.
    shutil.copytree(parts, old)
    shutil.rmtree(old / "checkpoints" / "latest" / "8" / "fixed")

    drawn = train_run.build_rung_model

    def another_draw(*args, **kwargs):
        model = drawn(*args, **kwargs)
        for _, module in nnx.iter_modules(model):
            if isinstance(module, CoordinateFeatures):
                module.frequencies[...] = 2 * module.frequencies[...]
        return model

    monkeypatch.setattr(train_run, "build_rung_model", another_draw)
    assert train_main([*_common(tiny_data, parts), *steps, "--resume"]) == 0
    assert train_main([*_common(tiny_data, old), *steps, "--resume"]) == 0

    def test_errors(run):
        return xr.open_zarr(run / "metrics.zarr")["eval_rel_mse"].values

    a, b, c = test_errors(whole), test_errors(parts), test_errors(old)
    assert len(a) == len(b) == len(c) == 4
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-8)
    # Drawn again, the doubled features change every evaluation after the resume.
    np.testing.assert_allclose(c[:2], a[:2], rtol=1e-5, atol=1e-8)
    assert np.all(np.abs(c[2:] - a[2:]) > 1e-3 * np.abs(a[2:])), (c, a)


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    """One finished TINY run, trained once for the tests that only read it (both refuse to
    write into it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train_main([*_common(tiny_data, out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_resume_refuses_changed_settings_and_missing_runs(tiny_data, finished_run, tmp_path):
    out = finished_run
    before = (out / "config.json").read_bytes()
    result = run_cli("train", *_common(tiny_data, out), *TINY, "--resume", "--beta", "0.5")
    assert_one_line_refusal(result, "--beta")
    assert (out / "config.json").read_bytes() == before
    result = run_cli("train", *_common(tiny_data, tmp_path / "nothing"), *TINY, "--resume")
    assert result.returncode == 2 and "no run" in result.stderr


@pytest.mark.slow
def test_existing_run_is_refused_and_left_untouched(tiny_data, finished_run):
    out = finished_run
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in out.iterdir() if p.is_file()}
    result = run_cli("train", *_common(tiny_data, out), *TINY)
    assert_one_line_refusal(result, "already holds a run")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.iterdir() if p.is_file()} == digest


@pytest.mark.parametrize("flags, named", [
    (["--loss-type", "h3"], "--loss-type"),
    (["--decoder-type", "cnn"], "--decoder-type"),
    (["--rff-location", "middle"], "--rff-location"),
    (["--max-steps", "-5"], "--max-steps"),
    (["--rff-multiscale-sigmas", "0.5,x"], "--rff-multiscale-sigmas"),
    (["--rff-dim", "33"], "--rff-dim"),
    (["--loss-type", "h1", "--decoder-points", "10"], "--decoder-points"),
    pytest.param(["--single-scale-index", "7", "--training-mode", "single_scale"], "--single-scale-index",
                 marks=pytest.mark.slow),
])
@pytest.mark.slow
def test_bad_flag_values_get_one_line_and_status_2(flags, named, tiny_data, tmp_path):
    out = tmp_path / "never"
    result = run_cli("train", "--data-path", str(tiny_data), "--output-dir", str(out), *flags)
    assert_one_line_refusal(result, named)
    assert not out.exists()


@pytest.mark.slow
def test_bad_data_file_is_refused_by_train(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, fields=np.zeros((4, 2, 8, 8)), resolution=16, times=np.array([0.0, 1.0]))
    result = run_cli("train", "--data-path", str(bad), "--output-dir", str(tmp_path / "run"))
    assert_one_line_refusal(result, "resolution")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_divergence_ends_the_run_as_diverged_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    # The learning rate multiplies by 1e8 at step 10: training blows up right after the
    # evaluation at step 10.
    argv = [*_common(tiny_data, out), "--max-steps", "40", "--eval-every", "10", "--log-every", "1",
            "--batch-size", "4", "--steps-per-call", "5", "--lr-decay-rate", "1e8", "--lr-decay-steps", "10",
            "--checkpoint-every", "10"]
    assert train_main(argv) == 1
    progress = read_json(out / "progress.json")
    assert progress["status"] == "diverged"
    assert 10 <= progress["step"] < 40 and str(progress["step"]) in progress["message"]
    metrics = xr.open_zarr(out / "metrics.zarr")
    losses = metrics["train_loss"].values[: progress["n_train"]]
    assert np.isfinite(losses[:10]).all()
    assert progress["n_eval"] == 2  # steps 0 and 10; nothing evaluated after the blow-up

    from fae_lab.train.checkpoint import Checkpoints

    ckpt = Checkpoints(out, keep_best=False)
    # The last good state: the step before the first non-finite one, checkpointed whatever
    # --checkpoint-every says (tests/test_train_reliability.py checks it in detail).
    assert ckpt.latest_step() == progress["step"] - 1 >= 10
    ckpt.close()
    assert read_json(out / "final.json")["final/status"] == "diverged"


@pytest.mark.slow
def test_reader_process_never_sees_errors_or_half_rows_while_training_writes(tiny_data, tmp_path):
    out = tmp_path / "live"
    train = subprocess.Popen(
        [sys.executable, "-m", "fae_lab.train", *_common(tiny_data, out), "--max-steps", "300",
         "--eval-every", "10", "--log-every", "2", "--batch-size", "4", "--steps-per-call", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads, errors, seen_eval = 0, [], set()
    try:
        while train.poll() is None:  # pytest-timeout bounds a hung trainer
            if not (out / "progress.json").exists() or not (out / "metrics.zarr" / "zarr.json").exists():
                time.sleep(0.05)
                continue
            try:
                progress = json.loads((out / "progress.json").read_text())
                ds = xr.open_zarr(out / "metrics.zarr")
                ev = ds[["eval_mse", "eval_scale_mse", "eval_spectral_mse"]].isel(
                    eval_step=slice(0, progress["n_eval"])).load()
                tr = ds["train_loss"].isel(step=slice(0, progress["n_train"])).load()
                for name in ev.data_vars:
                    if not np.isfinite(ev[name].values).all():
                        errors.append(f"half-written {name} at n_eval={progress['n_eval']}")
                if not np.isfinite(tr.values).all():
                    errors.append(f"half-written train row at n_train={progress['n_train']}")
                seen_eval.add(progress["n_eval"])
                reads += 1
            except Exception as err:  # any read failure is what this test exists to catch
                errors.append(f"{type(err).__name__}: {err}")
    finally:
        if train.poll() is None:
            train.kill()
        _, stderr = train.communicate()
    assert train.returncode == 0, stderr
    assert not errors, errors[:5]
    # The reader really read while the run grew: at least once between the first and the last
    # evaluation (how many reads fit in depends on the machine, so no count is asserted).
    final_n_eval = json.loads((out / "progress.json").read_text())["n_eval"]
    assert reads >= 1 and any(0 < n < final_n_eval for n in seen_eval), (reads, sorted(seen_eval))


@pytest.mark.slow
def test_baseline_test_error_falls_during_training(tmp_path):
    data = write_tiny_data(tmp_path / "d.npz", n_samples=24, resolution=16, n_scales=3, seed=1)
    out = tmp_path / "run"
    assert train_main(["--data-path", str(data), "--output-dir", str(out), "--pooling-type", "mean",
                       "--max-steps", "150", "--eval-every", "50", "--batch-size", "8",
                       "--learning-rate", "2e-3", "--steps-per-call", "25"]) == 0
    rel = xr.open_zarr(out / "metrics.zarr")["eval_rel_mse"].values
    assert np.all(np.isfinite(rel))
    assert rel[-1] < 0.5 * rel[0], rel


def test_a_run_sized_from_its_step_time_compiles_one_loop_and_matches_fixed_calls(tiny_data, tmp_path, caplog):
    """On the CPU, without --steps-per-call, call lengths change from call to call (1, 1, then
    the rest up to each evaluation: several lengths here). They share one compiled loop, and the
    logged rows and final metrics are those of a run with fixed calls (a step does not depend on
    the call it runs in)."""
    import logging

    import jax

    steps = ["--max-steps", "23", "--eval-every", "7", "--log-every", "1", "--batch-size", "4", "--seed", "5"]
    fixed, sized = tmp_path / "fixed", tmp_path / "sized"
    assert train_main([*_common(tiny_data, fixed), *steps, "--steps-per-call", "7"]) == 0
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            assert train_main([*_common(tiny_data, sized), *steps]) == 0
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling jit(chunk)")]
    assert len(compiled) == 1, compiled
    a = xr.open_zarr(fixed / "metrics.zarr").load()
    b = xr.open_zarr(sized / "metrics.zarr").load()
    assert np.isfinite(b["train_loss"].values).sum() == 23  # every step logged, once
    for name in a.data_vars:
        if name in ("wall_time", "eval_wall_time"):
            continue
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-5, atol=1e-8, err_msg=name)
    assert read_json(sized / "final.json")["final/test_rel_mse"] == pytest.approx(
        read_json(fixed / "final.json")["final/test_rel_mse"], rel=1e-5)
