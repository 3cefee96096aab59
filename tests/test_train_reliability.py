"""Reliability of the training engine: divergence, signals, kills, and --resume of every end.

Divergence is provoked through the learning rate of a configuration built in-process
(1e39, infinite in float32: step 1 cannot be finite; a decay *rate* of 1e8 after 10 steps: blows up
mid-run). Signals go to real ``python -m fae_lab train`` processes, at moments read from
their own ``progress.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fae_lab.train.args import parse_run_config
from fae_lab.train.cli import main as train_main
from tests.train_helpers import read_json, uncached_env, write_tiny_data


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data") / "tiny.npz")


def _argv(data, out, *extra):
    return ["--data-path", str(data), "--output-dir", str(out), "--pooling-type", "mean",
            "--encoder-hidden", "16,16", "--decoder-hidden", "16,16", "--latent-dim", "8",
            "--batch-size", "4", "--n-reconstruction-samples", "4", "--eval-batch-size", "4", *extra]


def _config(argv, **optim):
    config = parse_run_config(argv)
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, **optim))


def _latest_checkpoint(run_dir: Path) -> int | None:
    from fae_lab.train.checkpoint import Checkpoints

    checkpoints = Checkpoints(run_dir, keep_best=False)
    try:
        return checkpoints.latest_step()
    finally:
        checkpoints.close()


def _restored_params_finite(run_dir: Path, config) -> tuple[bool, int, dict]:
    """Restore the latest checkpoint against the model the configuration builds."""
    import jax
    from flax import nnx

    from fae_lab.models import build_model
    from fae_lab.train.checkpoint import Checkpoints
    from fae_lab.train.step import TrainState, adam

    model = build_model(config.model, 16, seed=config.seed)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    import jax.numpy as jnp

    target = TrainState(params, adam().init(params), jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32))
    checkpoints = Checkpoints(run_dir, keep_best=False)
    try:
        state, record, _ = checkpoints.restore_latest(target)
    finally:
        checkpoints.close()
    leaves = jax.tree.leaves(state.params)
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in leaves), int(state.step), record


def _eval_rows(run_dir: Path, n: int) -> np.ndarray:
    with xr.open_zarr(run_dir / "metrics.zarr") as ds:
        return ds["eval_rel_mse"].values[:n].copy()


# ----------------------------------------------------------------------------- divergence


# 1e39 -> float32 overflows (a RuntimeWarning, an error under this suite's settings): meant.
@pytest.mark.parametrize("case", [
    pytest.param("step one", marks=pytest.mark.filterwarnings("ignore:overflow encountered in cast")),
    "mid-run"])
@pytest.mark.slow
def test_divergence_checkpoints_the_last_finite_step_and_resume_repeats_it(tiny_data, tmp_path, case):
    from fae_lab.train.run import train

    out = tmp_path / "run"
    common = ["--max-steps", "40", "--eval-every", "10", "--log-every", "1", "--steps-per-call", "5"]
    if case == "step one":
        # 1e39 is infinite in float32: no step-1 update is finite (and config.json keeps it).
        config = _config(_argv(tiny_data, out, *common), learning_rate=1e39)
    else:  # lr x 1e8 from step 11 on; the policy would checkpoint only at step 40
        config = _config(_argv(tiny_data, out, *common, "--lr-decay-rate", "1e8", "--lr-decay-steps", "10",
                               "--checkpoint-every", "40"))
    result = train(config, quiet=True)
    assert result.status == "diverged"
    d = result.step
    progress = read_json(out / "progress.json")
    assert progress["status"] == "diverged" and progress["step"] == d
    assert f"at step {d};" in progress["message"] and f"checkpoint at step {d - 1}" in progress["message"]
    if case == "step one":
        assert d == 1
    else:
        assert 11 <= d < 40
    # Steps before d were finite: their loss rows are (log_every 1: row s-1 is step s).
    with xr.open_zarr(out / "metrics.zarr") as ds:
        losses = ds["train_loss"].values
    assert progress["n_train"] == d and np.isfinite(losses[: d - 1]).all()
    # Every counted evaluation is finite and none after the last finite step is counted.
    assert progress["n_eval"] == len([s for s in range(0, 41, 10) if s <= d - 1])
    assert np.isfinite(_eval_rows(out, progress["n_eval"])).all()
    # The checkpoint holds finite parameters at step d - 1, whatever --checkpoint-every said.
    assert _latest_checkpoint(out) == d - 1
    finite, held, record = _restored_params_finite(out, config)
    # (The checkpoint of step 0 is taken before its evaluation: a resumed run evaluates it again.)
    assert finite and held == d - 1 and record["n_eval"] == (0 if d == 1 else progress["n_eval"])
    assert read_json(out / "final.json")["final/status"] == "diverged"
    assert read_json(out / "final.json")["final/test_rel_mse"] is not None

    # --resume from it computes step d again, from a finite state, and it is not finite again:
    # so step d is the first non-finite step.
    again = train(dataclasses.replace(config, resume=True), quiet=True)
    assert (again.status, again.step) == ("diverged", d)
    assert read_json(out / "progress.json")["n_eval"] == progress["n_eval"]


@pytest.mark.slow
def test_one_diverging_member_leaves_the_other_members_exactly_as_they_would_be(tiny_data, tmp_path):
    from fae_lab.train.run import train_group

    common = ["--max-steps", "20", "--eval-every", "10", "--log-every", "2", "--steps-per-call", "5"]
    healthy = lambda out: _config(_argv(tiny_data, out, *common, "--seed", "1"))  # noqa: E731
    group = train_group([healthy(tmp_path / "a"), _config(_argv(tiny_data, tmp_path / "b", *common),
                                                           learning_rate=math.inf)], quiet=True)
    assert [r.status for r in group] == ["finished", "diverged"] and group[1].step == 1
    twin = train_group([healthy(tmp_path / "c"), _config(_argv(tiny_data, tmp_path / "d", *common))], quiet=True)
    assert [r.status for r in twin] == ["finished", "finished"]
    with xr.open_zarr(tmp_path / "a" / "metrics.zarr") as a, xr.open_zarr(tmp_path / "c" / "metrics.zarr") as c:
        for name in ("train_loss", "eval_rel_mse", "eval_scale_mse"):
            np.testing.assert_allclose(a[name].values, c[name].values, rtol=1e-6, err_msg=name)
    assert _latest_checkpoint(tmp_path / "b") == 0


# ----------------------------------------------------------------------------- resume of a finished run


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_changes_nothing(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _argv(tiny_data, out, "--max-steps", "10", "--eval-every", "5", "--steps-per-call", "5")
    assert train_main(argv) == 0
    assert _latest_checkpoint(out) == 10  # the final checkpoint is committed, not a temporary directory
    assert not [p for p in (out / "checkpoints").rglob("*tmp*")]
    before = _snapshot(out)
    capsys.readouterr()
    assert train_main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "already finished" in printed and len(printed.strip().splitlines()) == 1
    assert _snapshot(out) == before


# ----------------------------------------------------------------------------- signals and kills


def _start(data, out, *extra, env=None) -> subprocess.Popen:
    argv = _argv(data, out, "--max-steps", "400", "--eval-every", "20", "--log-every", "5",
                 "--steps-per-call", "5", "--checkpoint-every", "100000", *extra)
    return subprocess.Popen([sys.executable, "-m", "fae_lab", "train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(proc: subprocess.Popen, out: Path, min_eval: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            progress = read_json(out / "progress.json")
        except (OSError, ValueError):
            progress = None
        if progress is not None and progress["n_eval"] >= min_eval:
            return progress
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run did not get there in time")


def _check_store_agrees(out: Path) -> dict:
    progress = read_json(out / "progress.json")
    with xr.open_zarr(out / "metrics.zarr") as ds:
        assert np.isfinite(ds["train_loss"].values[: progress["n_train"]]).all()
        assert np.isfinite(ds["eval_rel_mse"].values[: progress["n_eval"]]).all()
    return progress


@pytest.mark.parametrize("sig, code, moment", [(signal.SIGTERM, 143, "after the first evaluation"),
                                              (signal.SIGINT, 130, "during compilation")])
@pytest.mark.slow
def test_a_signal_ends_the_run_failed_at_a_checkpoint_of_its_last_step(tiny_data, tmp_path, sig, code, moment):
    out = tmp_path / "run"
    # During compilation: a real one, not a hit in the session's compilation cache.
    proc = _start(tiny_data, out, env=uncached_env() if moment == "during compilation" else None)
    if moment == "during compilation":  # the store exists, the first evaluation compiles
        _wait_for(proc, out, 0)
    else:
        _wait_for(proc, out, 2)
    proc.send_signal(sig)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert time.monotonic() - t0 < 60
    assert "Traceback" not in stderr
    progress = _check_store_agrees(out)
    assert progress["status"] == "failed"
    saved = _latest_checkpoint(out)
    assert saved == progress["step"]
    assert f"at step {saved}; checkpoint at step {saved}: continue with --resume" in progress["message"]
    assert signal.Signals(sig).name in progress["message"] and progress["message"] in stdout
    finite, held, record = _restored_params_finite(out, parse_run_config(_argv(tiny_data, out)))
    assert finite and held == saved and record["n_eval"] == progress["n_eval"]


@pytest.mark.slow
def test_a_run_killed_after_its_first_evaluation_resumes_and_keeps_its_evaluations(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = _start(tiny_data, out, "--seed", "2", "--checkpoint-every", "40")
    _wait_for(proc, out, 5)  # step 80 evaluated: checkpoints at 0, 40 and perhaps 80
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    progress = _check_store_agrees(out)
    assert progress["status"] == "running"  # nobody could say otherwise after SIGKILL
    saved = _latest_checkpoint(out)
    assert saved is not None and saved <= progress["step"]
    _, _, record = _restored_params_finite(out, parse_run_config(_argv(tiny_data, out)))
    assert record["n_eval"] >= 3 and record["n_eval"] <= progress["n_eval"]
    kept = _eval_rows(out, record["n_eval"])
    argv = _argv(tiny_data, out, "--max-steps", "400", "--eval-every", "20", "--log-every", "5",
                 "--steps-per-call", "5", "--checkpoint-every", "40", "--seed", "2", "--resume")
    assert train_main(argv) == 0
    final = _check_store_agrees(out)
    assert final["status"] == "finished" and final["n_eval"] == 21 and final["n_train"] == 80
    np.testing.assert_array_equal(_eval_rows(out, record["n_eval"]), kept)


@pytest.mark.slow
def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _argv(tiny_data, out, "--max-steps", "10", "--eval-every", "5", "--steps-per-call", "5")
    # The kill must come before the first checkpoint: the run compiles for real meanwhile.
    proc = subprocess.Popen([sys.executable, "-m", "fae_lab", "train", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=uncached_env())
    _wait_for(proc, out, 0)  # the store exists; the first checkpoint (before the first evaluation) not yet
    # config.json is written last of the store (a run is found by it): a kill before it leaves
    # a half-made folder, which --resume refuses with its own message, not this test's case.
    deadline = time.monotonic() + 240
    while not (out / "config.json").is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    if _latest_checkpoint(out) is not None:
        pytest.fail("the run got to its first checkpoint before the kill; the test needs it earlier")
    capsys.readouterr()
    assert train_main([*argv, "--resume"]) == 0
    assert "has no checkpoint" in capsys.readouterr().err
    final = _check_store_agrees(out)
    assert final["status"] == "finished" and final["n_eval"] == 3


@pytest.mark.slow
def test_a_stop_takes_seconds_when_steps_are_slow(tiny_data, tmp_path):
    """Steps of half a second on the device (tests/slow_steps.py: a sleep inside the compiled
    step), no --steps-per-call: SIGTERM ends the run within a few seconds (at fifty steps a call
    it took up to two calls, 50 s), failed at a checkpoint of its last completed step."""
    out = tmp_path / "run"
    argv = _argv(tiny_data, out, "--max-steps", "2000", "--eval-every", "1000", "--log-every", "1",
                 "--checkpoint-every", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "tests.slow_steps", "0.5", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # past the calls that measure the step time
        assert proc.poll() is None, proc.communicate()
        try:
            if read_json(out / "progress.json")["n_train"] >= 8:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("the run did not reach step 8 in time")
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 143, stderr
    assert took < 15, f"the run went on for {took:.1f} s after SIGTERM"
    progress = _check_store_agrees(out)
    assert progress["status"] == "failed" and progress["n_train"] == progress["step"]  # a row a step
    saved = _latest_checkpoint(out)
    assert saved == progress["step"]
    assert f"interrupted by SIGTERM at step {saved}; checkpoint at step {saved}" in progress["message"]
