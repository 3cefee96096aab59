"""Chunk lengths sized from the measured step time, and the word on a GPU-sized run on a CPU.

The stop latency of a real run with slow steps is in tests/test_train_reliability.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from fae_lab.demo import DEMO_DATA, DEMO_STEPS, DEMO_TRAINING
from fae_lab.train.args import parse_run_config
from fae_lab.train.chunks import CHUNK_SECONDS, MAX_STEPS_PER_CALL, ChunkSizer, fixed_length
from fae_lab.train.cpu_sizing import CPU_FLAGS, cpu_hint, gpu_sized, slow_hint


def settle(sizer: ChunkSizer, step_seconds: float) -> int:
    """Feed the sizer calls of its own lengths at ``step_seconds`` a step (each length's first
    call also compiling, 20 s) until the length stops changing; return it."""
    for _ in range(20):
        n = sizer.length(10_000)
        compiling = 20.0 if n not in sizer.run_before else 0.0
        sizer.observe(n, n * step_seconds + compiling)
    return sizer.length(10_000)


@pytest.mark.parametrize("step_seconds", [3.3, 0.3, 0.07, 0.001, 1e-5])
def test_a_chunk_lasts_about_a_second_at_most_fifty_steps(step_seconds):
    n = settle(ChunkSizer(), step_seconds)
    # By hand: the largest power of two whose chunk fits in CHUNK_SECONDS, 1 if none does,
    # the cap where the cap fits.
    fits = [k for k in (1, 2, 4, 8, 16, 32) if k * step_seconds <= CHUNK_SECONDS]
    expected = MAX_STEPS_PER_CALL if MAX_STEPS_PER_CALL * step_seconds <= CHUNK_SECONDS else max(fits or [1])
    assert n == expected
    assert n * step_seconds <= max(CHUNK_SECONDS, step_seconds)  # a stop waits about a second


def test_the_first_call_of_a_length_is_not_taken_as_its_step_time():
    sizer = ChunkSizer()
    assert sizer.length(500) == 1  # unknown step time: one step
    sizer.observe(1, 30.0)  # compilation and one step
    assert sizer.step_seconds is None and sizer.length(500) == 1
    sizer.observe(1, 0.05)
    assert sizer.step_seconds == 0.05 and sizer.length(500) == 16  # 16 x 0.05 s <= 1 s < 32 x 0.05 s
    assert sizer.length(7) == 7  # the rest before an evaluation in one call


def test_a_given_steps_per_call_is_kept_whatever_the_step_time():
    sizer = ChunkSizer(fixed=50)
    for _ in range(3):
        sizer.observe(50, 50 * 3.3)
    assert sizer.length(10_000) == 50 and sizer.length(20) == 20
    assert parse_run_config([]).steps_per_call is None  # sized by default
    assert parse_run_config(["--steps-per-call", "7"]).steps_per_call == 7


def test_off_the_cpu_calls_are_fifty_steps_from_the_first_with_no_probing_compile():
    for backend in ("gpu", "cuda", "tpu"):
        sizer = ChunkSizer(fixed_length(None, backend))
        assert sizer.length(1000) == MAX_STEPS_PER_CALL  # no one-step call to compile first
    assert fixed_length(None, "cpu") is None and ChunkSizer(fixed_length(None, "cpu")).length(1000) == 1
    assert fixed_length(7, "gpu") == fixed_length(7, "cpu") == 7  # the user's length wins


def test_the_gpu_sized_defaults_are_named_and_the_hint_offers_the_demos_sizes():
    found = gpu_sized(parse_run_config([]))
    assert found == ["--generate-resolution 64", "--pooling-type attention", "--max-steps 50000"]
    hint = cpu_hint(parse_run_config([]))
    assert "\n" not in hint and all(f in hint for f in found) and CPU_FLAGS in hint
    # The suggested flags are CPU-sized, and they are the demo's (read from fae_lab.demo).
    suggested = parse_run_config(CPU_FLAGS.split())
    assert gpu_sized(suggested) == [] and cpu_hint(suggested) is None
    assert suggested.data.generate_resolution == DEMO_DATA["resolution"]
    assert suggested.max_steps == DEMO_STEPS
    i = DEMO_TRAINING.index("--pooling-type")
    assert suggested.model.pooling_type == DEMO_TRAINING[i + 1]
    assert suggested.optim.batch_size == int(DEMO_TRAINING[DEMO_TRAINING.index("--batch-size") + 1])
    # A data file's grid counts once it is known.
    on_file = parse_run_config(["--data-path", "x.npz", *CPU_FLAGS.split()[2:]])
    assert gpu_sized(on_file) == [] and gpu_sized(on_file, resolution=128) == ["a 128x128 grid"]


def test_a_long_measured_time_gets_a_line_with_its_hours():
    assert slow_hint(0.01, 1500) is None  # 15 s
    line = slow_hint(3.3, 50_000)  # 165,000 s: 45 h 50 min
    assert "45 h 50 min" in line and CPU_FLAGS in line and "\n" not in line


@pytest.mark.slow
def test_train_at_its_defaults_on_a_cpu_says_so_on_stderr_and_goes_on(tmp_path):
    """`fae-lab train` at its defaults on the CPU: one line on stderr naming the GPU-sized
    settings and the CPU-sized flags, and the run is not refused (stopped here by SIGTERM)."""
    env = {**__import__("os").environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "fae_lab", "train", "--output-dir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(240, proc.kill)  # the test's own limit
    timer.start()
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "sized for a GPU" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[1]
    finally:
        timer.cancel()
    hints = [line for line in lines if "sized for a GPU" in line]
    assert len(hints) == 1, "".join(lines) + rest
    assert "--pooling-type attention" in hints[0] and CPU_FLAGS in hints[0]
    assert proc.returncode in (143, 0), rest  # not refused (2): it was training
    assert (tmp_path / "run" / "progress.json").exists()


def test_a_run_stored_with_fixed_calls_resumes_without_the_flag(tmp_path):
    import json

    from fae_lab.config import to_json_dict
    from fae_lab.errors import UsageError
    from fae_lab.train.output_dir import check_resume_matches

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stored = parse_run_config(["--output-dir", str(run), "--steps-per-call", "50"])
    (run / "config.json").write_text(json.dumps({"config": to_json_dict(stored)}))
    check_resume_matches(parse_run_config(["--output-dir", str(run), "--resume"]), run)  # no refusal
    with pytest.raises(UsageError, match="--batch-size was 32"):  # a setting that computes still counts
        check_resume_matches(parse_run_config(["--output-dir", str(run), "--resume", "--batch-size", "8"]), run)


@pytest.mark.parametrize(("per_call", "ahead", "width"),  # a width of its own: no other run's program
                         [(["--steps-per-call", "5"], True, "13"), ([], True, "14"), ([], False, "15")])
def test_the_first_chunk_compiles_in_the_background_once(tmp_path, per_call, ahead, width, caplog, monkeypatch):
    """Off the CPU (here pretended: ``ahead``), the training chunk's program is compiled in a
    thread of its own while the first checkpoint and evaluation run
    (fae_lab.train.run.compile_ahead), and the loop's first call waits for it and finds it
    compiled: one compilation of it in all, in that thread, even when it starts late (here 3
    s, longer than the tiny run's first evaluation). Fixed call lengths (a GPU's) and sized
    ones (a CPU's). On the CPU itself, one compilation, by the first call."""
    import time

    import jax

    from fae_lab.cli import main
    from fae_lab.train import run
    from tests.train_helpers import TINY, write_tiny_data

    assert not run.compiles_ahead()  # this suite runs on the CPU
    monkeypatch.setattr(run, "compiles_ahead", lambda: ahead)
    compile_late = run.CompileAhead._compile
    monkeypatch.setattr(run.CompileAhead, "_compile", staticmethod(lambda *a: (time.sleep(3), compile_late(*a))))

    data = write_tiny_data(tmp_path / "tiny.npz")
    at = TINY.index("--steps-per-call")
    flags = TINY[:at] + TINY[at + 2:] + per_call
    jax.config.update("jax_log_compiles", True)  # for every thread (the context manager's is this thread's)
    try:
        with caplog.at_level("WARNING", logger="jax"):
            assert main(["train", "--data-path", str(data), "--output-dir", str(tmp_path / "run"),
                         "--decoder-hidden", f"{width},{width}", *flags]) == 0
    finally:
        jax.config.update("jax_log_compiles", False)
    chunks = [r for r in caplog.records if r.getMessage().startswith("Compiling") and "chunk" in r.getMessage()]
    where = "fae-lab-compile-ahead" if ahead else "MainThread"
    assert [r.threadName for r in chunks] == [where], [r.getMessage()[:80] for r in chunks]
