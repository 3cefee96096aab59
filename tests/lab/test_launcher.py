"""lab.launcher: the launch form's command line, checked by the trainer's own parser, started
from an argument list (no shell)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fae_lab.errors import UsageError
from lab.launcher import (
    allowed_data_file,
    form_defaults,
    launch,
    run_directory,
    train_argv,
    validate_train_argv,
)

TINY = dict(form_defaults(), loss_type="h1", decoder_type="rff_output", pooling_type="mean",
            latent_dim=8, beta=1e-4, lambda_grad=0.25, freq_weight_power=2.0, rff_dim=64,
            max_steps=20, learning_rate=3e-3, batch_size=4, eval_every=10, seed=3,
            generate_n_samples=8, generate_resolution=16, generate_n_scales=3)


def test_every_form_value_reaches_the_run_configuration(tmp_path):
    config = validate_train_argv(train_argv(TINY, tmp_path / "tiny"))
    assert config.output_dir == str((tmp_path / "tiny").absolute())
    assert (config.loss.loss_type, config.model.decoder_type, config.model.pooling_type) == (
        "h1", "rff_output", "mean")
    assert (config.model.latent_dim, config.model.rff_dim, config.max_steps, config.seed) == (
        8, 64, 20, 3)
    assert (config.loss.beta, config.loss.lambda_grad, config.loss.freq_weight_power) == (
        1e-4, 0.25, 2.0)
    assert (config.optim.learning_rate, config.optim.batch_size, config.eval.eval_every) == (
        3e-3, 4, 10)
    assert config.data.data_path is None
    assert (config.data.generate_n_samples, config.data.generate_resolution,
            config.data.generate_n_scales) == (8, 16, 3)


def test_argv_is_flag_value_pairs_one_element_each(tmp_path):
    argv = train_argv(dict(TINY, data_path=""), tmp_path / "r")
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    assert set(pairs) == {  # every form field, by the trainer's spelling
        "--output-dir", "--training-mode", "--loss-type", "--decoder-type", "--pooling-type",
        "--latent-dim", "--beta", "--lambda-grad", "--freq-weight-power", "--rff-dim", "--max-steps",
        "--learning-rate", "--batch-size", "--eval-every", "--seed", "--generate-n-samples",
        "--generate-resolution", "--generate-n-scales",
        "--h1-form", "--rff-location", "--rff-sigma"}  # (h1_k0, rff_multiscale_sigmas: empty)
    assert pairs["--learning-rate"] == "0.003" and pairs["--batch-size"] == "4"


def test_a_data_file_replaces_the_generated_data(tmp_path):
    data = tmp_path / "fields.npz"
    data.write_bytes(b"")
    argv = train_argv(dict(TINY, data_path=str(data)), tmp_path / "r")
    assert "--data-path" in argv and "--generate-n-samples" not in argv
    assert validate_train_argv(argv).data.data_path == str(data)
    missing = train_argv(dict(TINY, data_path=str(tmp_path / "nope.npz")), tmp_path / "r")
    with pytest.raises(UsageError, match="--data-path"):
        validate_train_argv(missing)


@pytest.mark.parametrize("field,value,flag", [
    ("batch_size", 0, "--batch-size"),
    ("latent_dim", -3, "--latent-dim"),
    ("learning_rate", -1e-3, "--learning-rate"),
    ("beta", -1.0, "--beta"),
    ("rff_dim", 31, "--rff-dim"),  # cos/sin pairs: the CLI's own cross-check
    ("loss_type", "h2", "--loss-type"),
    ("decoder_type", "standard; rm -rf /", "--decoder-type"),
])
def test_bad_values_get_the_clis_one_line_message(tmp_path, field, value, flag):
    with pytest.raises(UsageError, match=flag) as caught:
        validate_train_argv(train_argv(dict(TINY, **{field: value}), tmp_path / "r"))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "a/b", "../up", ".hidden", "x y", "a;b", "$(id)", "é",
                                  "a" * 101])
def test_run_names_are_plain_folder_names(tmp_path, name):
    with pytest.raises(UsageError, match="run name"):
        run_directory(tmp_path, name)


def test_an_existing_folder_is_not_reused(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        run_directory(tmp_path, "taken")
    assert run_directory(tmp_path, "free-1.2_x") == tmp_path / "free-1.2_x"


def test_launch_starts_the_trainer_from_an_argument_list(tmp_path, monkeypatch):
    calls = []

    class FakeProcess:
        pid = 4242

        def __init__(self, args, **kwargs):
            calls.append((args, kwargs))

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    started = launch(tmp_path, "tiny", TINY)
    (args, kwargs), = calls
    assert args[:3] == [sys.executable, "-m", "fae_lab.train"]
    assert args[3:] == started.argv == train_argv(TINY, tmp_path / "tiny")
    assert not kwargs.get("shell") and kwargs["start_new_session"]
    assert started.log_path == tmp_path / ".launches" / "tiny.log"
    assert started.status == "running"
    calls.clear()
    with pytest.raises(UsageError):
        launch(tmp_path, "bad", dict(TINY, batch_size=0))
    assert not calls  # refused before anything started


# -- the data file: from the data directory only, one message for every refusal -------------

@pytest.fixture
def data_dir(tmp_path):
    """A data directory with one allowed file, next to a file outside it and a symlink out."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "fields.npz").write_bytes(b"npz")
    (tmp_path / "secret.npz").write_bytes(b"secret")
    (root / "link-out.npz").symlink_to(tmp_path / "secret.npz")
    (root / "link-in.npz").symlink_to(root / "sub" / "fields.npz")
    return root


def refused(path, root) -> str:
    with pytest.raises(UsageError) as caught:
        allowed_data_file(path, root)
    return str(caught.value)


def test_paths_outside_the_data_directory_all_get_one_message(data_dir):
    paths = ["/etc/passwd",  # exists, readable, outside
             str(data_dir.parent / "secret.npz"),  # exists, outside
             "../secret.npz", "sub/../../secret.npz",  # `..` out of the directory
             "link-out.npz",  # a symlink inside pointing outside
             "missing.npz", str(data_dir / "missing.npz"), "/nonexistent/x.npz",  # missing
             "sub", str(data_dir), "",  # folders, not files
             "bad\0name"]  # the OS refuses the name itself
    messages = {refused(path, data_dir) for path in paths}
    assert messages == {f"--data-path: not an allowed data file (files under {data_dir} only)"}


def test_an_unreadable_file_gets_the_same_message(data_dir, monkeypatch):
    locked = data_dir / "locked.npz"
    locked.write_bytes(b"")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads files whatever their mode: let access() say what a user's would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked
                            else real_access(path, mode))
    assert refused(locked, data_dir) == refused("/etc/passwd", data_dir)
    locked.chmod(0o644)
    monkeypatch.undo()
    assert allowed_data_file(locked, data_dir) == locked  # readable again: taken


def test_a_file_inside_the_data_directory_is_taken_resolved(data_dir):
    wanted = (data_dir / "sub" / "fields.npz").resolve()
    for path in ("sub/fields.npz", str(data_dir / "sub" / "fields.npz"), "./sub/../sub/fields.npz",
                 "link-in.npz", f"  {data_dir / 'sub' / 'fields.npz'}  "):
        assert allowed_data_file(path, data_dir) == wanted


def test_launch_refuses_a_data_file_outside_before_starting(tmp_path, data_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a))
    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(UsageError, match="not an allowed data file"):
        launch(runs, "steal", dict(TINY, data_path="/etc/passwd"), data_dir)
    with pytest.raises(UsageError, match=f"files under {runs} only"):  # default: the runs dir
        launch(runs, "steal", dict(TINY, data_path=str(data_dir / "sub" / "fields.npz")))
    assert not calls and not (runs / "steal").exists() and not (runs / ".launches").exists()


def test_launch_passes_the_resolved_data_file_to_the_trainer(tmp_path, data_dir, monkeypatch):
    calls = []

    class FakeProcess:
        pid = 1

        def __init__(self, args, **kwargs):
            calls.append(args)

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    monkeypatch.setattr("lab.launcher.validate_train_argv", lambda argv: None)  # empty file
    started = launch(tmp_path, "on-file", dict(TINY, data_path="link-in.npz"), data_dir)
    pairs = dict(zip(started.argv[::2], started.argv[1::2], strict=True))
    assert pairs["--data-path"] == str((data_dir / "sub" / "fields.npz").resolve())
    assert calls == [[sys.executable, "-m", "fae_lab.train", *started.argv]]


def test_the_form_starts_from_the_trainers_defaults(tmp_path):
    """Launching the untouched form configures the run exactly as ``fae-lab train`` with no
    setting does."""
    from fae_lab.train.args import parse_run_config

    plain = parse_run_config(["--output-dir", str(tmp_path / "r")], raise_usage_errors=True)
    from_form = validate_train_argv(train_argv(form_defaults(), tmp_path / "r"))
    assert from_form == plain


def test_phase_c_variants_can_be_launched(tmp_path):
    """Every setting of the variant tables has a field, and its value reaches the run."""
    import dataclasses

    from fae_lab import variants
    from lab.launcher import VARIANT_FIELDS

    named = {n for v in variants.LOSSES.values() for n in (*v.sweepable, *v.static)}
    named |= {n for v in variants.DECODERS.values() for n in v.settings}
    assert {f.name for f in VARIANT_FIELDS} == named
    values = dict(TINY, loss_type="combined", decoder_type="rff_output", rff_location="both",
                  rff_sigma=2.5, rff_multiscale_sigmas="0.5, 1,4", h1_form="spectral",
                  h1_k0="3.5", freq_weight_power=1.5)
    config = validate_train_argv(train_argv(values, tmp_path / "c"))
    assert (config.model.rff_location, config.model.rff_sigma) == ("both", 2.5)
    assert config.model.rff_multiscale_sigmas == (0.5, 1.0, 4.0)
    assert (config.loss.h1_form, config.loss.h1_k0, config.loss.freq_weight_power) == (
        "spectral", 3.5, 1.5)
    bad = validate_train_argv  # a bad text value gets the parser's one line
    with pytest.raises(UsageError, match="--rff-multiscale-sigmas"):
        bad(train_argv(dict(values, rff_multiscale_sigmas="0.5,x"), tmp_path / "d"))
    assert dataclasses.is_dataclass(config)


def test_the_status_says_what_ended_the_process_in_words():
    from lab.launcher import exit_words

    assert exit_words(None) == "running"
    assert exit_words(0) == "finished (exit status 0)"
    assert exit_words(2) == "failed: exit status 2, a usage error (bad setting)"
    assert exit_words(-15) == "stopped by signal SIGTERM"
    assert exit_words(-9) == "stopped by signal SIGKILL"


def test_the_form_shows_the_trainers_cpu_hint_while_no_gpu_is_visible(tmp_path, monkeypatch):
    """The untouched form (``fae-lab train``'s GPU-sized defaults) on a machine without a GPU
    shows the trainer's own line; CPU-sized settings, or a visible GPU, show none."""
    import lab.views.launch as launch_view
    from fae_lab.train.args import parse_run_config
    from fae_lab.train.cpu_sizing import CPU_FLAGS, cpu_hint
    from lab.state import LabState
    from lab.text import markdown_text

    monkeypatch.setattr(launch_view, "gpu_visible", lambda: False)
    form = launch_view.LaunchForm(LabState(tmp_path))
    expected = cpu_hint(parse_run_config([]), prog="No GPU is visible on this machine")
    assert form.cpu_note.visible and form.cpu_note.object == markdown_text(expected)
    assert "--pooling-type attention" in expected and CPU_FLAGS in expected
    form.param.update(generate_resolution=16, pooling_type="mean", max_steps=1500)
    assert not form.cpu_note.visible
    form.max_steps = 50_000  # one GPU-sized setting is enough, and only it is named
    assert form.cpu_note.visible and "max\\-steps 50000" in form.cpu_note.object
    assert "pooling\\-type attention" not in form.cpu_note.object
    monkeypatch.setattr(launch_view, "gpu_visible", lambda: True)
    assert not launch_view.LaunchForm(LabState(tmp_path)).cpu_note.visible
