"""Malformed inputs, kept: every one ends with exit status 2, one line naming the problem on
stderr, no traceback, and nothing that was on disk before changed.

Three classes: malformed ``.npz`` files (built here, byte by byte where need be), bad
``fae-lab train`` command lines (non-finite numbers, output directories that cannot be
written, ``--resume`` without a readable run, sizes that cannot fit), and bad command lines
of ``data generate``, ``sweep``, ``phase`` and ``demo``. Most run in-process through each
command's ``main(argv)`` (a fresh interpreter costs seconds of JAX import); a few go through
a real subprocess, as a user's shell would.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fae_lab import cli as top_cli
from fae_lab.budget import DISK, HOST, Need, format_bytes, over_budget
from fae_lab.config import EvalConfig, RunConfig
from fae_lab.train.budget import activation_need, run_needs, schedule_rows
from tests.train_helpers import assert_one_line_refusal, run_cli, write_tiny_data

TiB = 1024**4

# ----------------------------------------------------------------------------- the scene


def good_arrays(n=3, t=2, r=8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"fields": rng.random((n, t, r, r)).astype(np.float32), "resolution": np.int64(r),
            "times": np.linspace(0.0, 1.0, t), "sigmas": np.linspace(0.0, 0.1, t)}


def npz(path: Path, **arrays) -> None:
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def changed(**edits) -> dict[str, np.ndarray]:
    arrays = good_arrays()
    for key, value in edits.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return arrays


def npy_member(header: dict, payload: bytes = b"") -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue() + payload


def huge_header(path: Path) -> None:
    """An archive whose ``fields.npy`` header claims 39 TiB but holds 64 bytes."""
    claimed = {"descr": "<f4", "fortran_order": False, "shape": (160_000, 64, 1024, 1024)}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fields.npy", npy_member(claimed, bytes(64)))
        for key in ("resolution", "times"):
            buffer = io.BytesIO()
            np.save(buffer, good_arrays()[key])
            archive.writestr(f"{key}.npy", buffer.getvalue())


def pickled_objects(path: Path) -> None:
    fields = np.empty((3, 2, 8, 8), dtype=object)
    fields[...] = 1.0
    npz(path, **changed(fields=fields))


def truncated(path: Path) -> None:
    npz(path, **good_arrays(n=20, r=16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def single_npy(path: Path) -> None:
    with open(path, "wb") as stream:
        np.save(stream, good_arrays()["fields"])


def inf_fields() -> np.ndarray:
    fields = good_arrays()["fields"].copy()
    fields[1, 0, 2, 3] = np.inf
    return fields


def nan_fields() -> np.ndarray:
    fields = good_arrays()["fields"].copy()
    fields[0, 1, 4, 4] = np.nan
    return fields


# name -> (writer of the file at a path, words the one line must contain)
MALFORMED_FILES = {
    "not_a_zip": (lambda p: p.write_text("fields,times\n1,2\n"), "not an .npz archive"),
    "empty_file": (lambda p: p.write_bytes(b""), "not an .npz archive"),
    "single_npy": (single_npy, "single .npy array"),
    "truncated_zip": (truncated, "not a readable .npz archive"),
    "huge_header_39_TiB": (huge_header, "header claims shape (160000, 64, 1024, 1024)"),
    "pickled_objects": (pickled_objects, "Python objects"),
    "missing_fields": (lambda p: npz(p, **changed(fields=None)), "key 'fields': missing"),
    "missing_resolution": (lambda p: npz(p, **changed(resolution=None)), "key 'resolution': missing"),
    "missing_times": (lambda p: npz(p, **changed(times=None)), "key 'times': missing"),
    "complex_fields": (lambda p: npz(p, **changed(fields=np.ones((3, 2, 8, 8), complex))),
                       "dtype complex128"),
    "string_fields": (lambda p: npz(p, **changed(fields=np.full((3, 2, 8, 8), "a"))), "dtype <U1"),
    "fields_2d": (lambda p: npz(p, **changed(fields=np.ones((8, 8), np.float32))), "shape (8, 8)"),
    "fields_not_square": (lambda p: npz(p, **changed(fields=np.ones((3, 2, 8, 6), np.float32))),
                          "8 x 6"),
    "one_sample": (lambda p: npz(p, **changed(fields=np.ones((1, 2, 8, 8), np.float32))), "N = 1"),
    "nan_fields": (lambda p: npz(p, **changed(fields=nan_fields())), "first at index (0, 1, 4, 4)"),
    "inf_fields": (lambda p: npz(p, **changed(fields=inf_fields())), "first at index (1, 0, 2, 3)"),
    "float32_overflow": (lambda p: npz(p, **changed(fields=np.full((3, 2, 8, 8), 1e300))),
                         "within float32 range"),
    "resolution_mismatch": (lambda p: npz(p, **changed(resolution=np.int64(16))), "got 16"),
    "resolution_fractional": (lambda p: npz(p, **changed(resolution=np.float64(8.5))), "got 8.5"),
    "times_decreasing": (lambda p: npz(p, **changed(times=np.array([1.0, 0.0]))), "key 'times'"),
    "times_wrong_length": (lambda p: npz(p, **changed(times=np.array([0.0, 1.0, 2.0]))),
                           "key 'times'"),
    "times_nan": (lambda p: npz(p, **changed(times=np.array([0.0, np.nan]))), "key 'times'"),
    "sigmas_negative": (lambda p: npz(p, **changed(sigmas=np.array([0.0, -0.1]))), "key 'sigmas'"),
    "held_out_out_of_range": (lambda p: npz(p, **changed(held_out_indices=np.array([5]))),
                              "out of range"),
    "held_out_duplicates": (lambda p: npz(p, **changed(fields=np.ones((3, 3, 8, 8), np.float32),
                                                         times=np.arange(3.0), sigmas=None,
                                                         held_out_indices=np.array([1, 1]))),
                            "duplicates"),
    "held_out_every_scale": (lambda p: npz(p, **changed(held_out_indices=np.array([0, 1]))),
                             "every scale held out"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "no_such_file": (lambda p: None, "no such file"),
}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: a file's bytes and mtime, a directory's presence."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_file():
            state[key] = (path.read_bytes(), path.stat().st_mtime_ns)
        else:
            state[key] = ("dir",)
    return state


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """A working directory that already holds things a bad command must leave alone: a
    regular file, a directory with a file, a small valid data file, and two broken runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("keep me\n")
    write_tiny_data(tmp_path / "data.npz", n_samples=4, resolution=8, n_scales=2)
    (tmp_path / "corrupt_run").mkdir()
    (tmp_path / "corrupt_run" / "config.json").write_text('{"config": {"max_steps": ')
    (tmp_path / "corrupt_run" / "progress.json").write_text('{"status": "running"}')
    (tmp_path / "no_config_run").mkdir()
    (tmp_path / "no_config_run" / "progress.json").write_text('{"status": "running"}')
    (tmp_path / "no_config_run" / "checkpoints" / "latest").mkdir(parents=True)  # else it restarts
    (tmp_path / "list_config_run").mkdir()
    (tmp_path / "list_config_run" / "config.json").write_text(json.dumps([1, 2]))
    return tmp_path


def refused_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``fae-lab ARGV`` through the dispatcher, in this process: (status, stderr)."""
    capsys.readouterr()
    try:
        status = top_cli.main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    return status, capsys.readouterr().err


def assert_refused(status: int, err: str, named: str) -> None:
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert named in lines[0], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize("name", sorted(MALFORMED_FILES))
def test_malformed_data_file_is_refused_by_inspect_and_train(name, scene, capsys):
    write, words = MALFORMED_FILES[name]
    path = scene / f"{name}.npz"
    write(path)
    before = snapshot(scene)
    status, err = refused_in_process(["data", "inspect", str(path)], capsys)
    assert_refused(status, err, words)
    assert str(path) in err
    status, err = refused_in_process(["train", "--data-path", str(path), "--output-dir",
                                      str(scene / "new_run"), "--max-steps", "2"], capsys)
    assert_refused(status, err, words)
    assert snapshot(scene) == before


def test_huge_header_is_refused_without_allocating_it(scene, monkeypatch):
    """The 38 TiB claim is refused from the header: loading is never attempted."""
    huge_header(scene / "huge.npz")
    calls = []
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(a))
    from fae_lab.data.npz import load_npz
    from fae_lab.errors import DataFileError

    claimed = f"{160_000 * 64 * 1024 * 1024 * 4 / TiB:.3g} TiB"  # float32, 4 bytes a value
    with pytest.raises(DataFileError, match=rf"\({claimed}\) but the file holds 64 B"):
        load_npz(scene / "huge.npz")
    assert calls == [] and claimed == "39.1 TiB"


# ----------------------------------------------------------------------------- bad command lines

TRAIN = ["train", "--data-path", "data.npz", "--max-steps", "2", "--batch-size", "2"]

# (id, argv, words the one line names); every float flag of `fae-lab train` is here once.
BAD_COMMAND_LINES = [
    ("lr_inf", [*TRAIN, "--learning-rate", "inf"], "--learning-rate"),
    ("lr_1e309", [*TRAIN, "--lr", "1e309"], "'1e309'"),
    ("lr_decay_rate_nan", [*TRAIN, "--lr-decay-rate", "nan"], "--lr-decay-rate"),
    ("beta_nan", [*TRAIN, "--beta", "nan"], "--beta"),
    ("lambda_grad_inf", [*TRAIN, "--lambda-grad", "inf"], "--lambda-grad"),
    ("lambda_grad_start_inf", [*TRAIN, "--lambda-grad-start", "Infinity"], "--lambda-grad-start"),
    ("freq_weight_power_1e309", [*TRAIN, "--freq-weight-power", "1e309"], "--freq-weight-power"),
    ("coordinate_sigma_inf", [*TRAIN, "--coordinate-sigma", "inf"], "--coordinate-sigma"),
    ("rff_sigma_nan", [*TRAIN, "--rff-sigma", "nan"], "--rff-sigma"),
    ("rff_multiscale_sigmas_inf", [*TRAIN, "--rff-multiscale-sigmas", "1,inf"],
     "--rff-multiscale-sigmas"),
    ("grad_clip_inf", [*TRAIN, "--grad-clip", "inf"], "--grad-clip"),
    ("h1_k0_nan", [*TRAIN, "--h1-k0", "nan"], "--h1-k0"),
    ("spectral_cutoff_inf", [*TRAIN, "--spectral-cutoff", "inf"], "--spectral-cutoff"),
    ("test_fraction_nan", [*TRAIN, "--test-fraction", "nan"], "--test-fraction"),
    ("seed_too_large", [*TRAIN, "--seed", str(2**64)], "--seed"),
    ("config_file_inf", [*TRAIN, "--config", "lr.json"], "--learning-rate"),
    ("output_dir_empty", [*TRAIN, "--output-dir", ""], "--output-dir"),
    ("output_dir_below_a_file", [*TRAIN, "--output-dir", "afile/run"], "afile is a file"),
    ("output_dir_is_a_file", [*TRAIN, "--output-dir", "afile"], "is not a directory"),
    ("output_dir_unwritable_sys", [*TRAIN, "--output-dir", "/sys/fae-lab-run"],
     "cannot create the directory in /sys"),
    ("output_dir_unwritable_proc", [*TRAIN, "--output-dir", "/proc/fae-lab-run/x"],
     "cannot create the directory in /proc"),
    ("resume_corrupt_config", [*TRAIN, "--output-dir", "corrupt_run", "--resume"],
     "config.json is not readable JSON"),
    ("resume_missing_config", [*TRAIN, "--output-dir", "no_config_run", "--resume"],
     "config.json is missing"),
    ("resume_config_not_a_mapping", [*TRAIN, "--output-dir", "list_config_run", "--resume"],
     "no 'config' mapping"),
    ("resume_nothing_there", [*TRAIN, "--output-dir", "existing", "--resume"], "no run in existing"),
    ("max_steps_huge", ["train", "--max-steps", str(10**16), "--output-dir", "big"],
     f"--max-steps {10**16}"),
    ("generate_resolution_huge", ["train", "--generate-resolution", str(10**6), "--output-dir", "big"],
     f"--generate-resolution {10**6}"),
    ("generate_n_samples_huge", ["train", "--generate-n-samples", str(10**13), "--output-dir", "big"],
     f"--generate-n-samples {10**13}"),
    ("batch_size_huge", [*TRAIN, "--batch-size", str(10**13), "--output-dir", "big"],
     f"--batch-size {10**13}"),
    ("generate_out_empty", ["data", "generate", "--out", ""], "--out"),
    ("generate_out_below_a_file", ["data", "generate", "--out", "afile/d.npz"], "afile is a file"),
    ("generate_out_unwritable", ["data", "generate", "--out", "/proc/fae-lab/d.npz"],
     "cannot create the file in /proc"),
    ("generate_resolution_huge_data", ["data", "generate", "--out", "d2.npz", "--resolution",
                                       str(10**6)], f"--resolution {10**6}"),
    ("generate_n_samples_huge_data", ["data", "generate", "--out", "d2.npz", "--n-samples",
                                      str(10**13)], f"--n-samples {10**13}"),
    ("generate_contrast_inf", ["data", "generate", "--out", "d2.npz", "--contrast", "inf"],
     "--contrast"),
    ("generate_sigmas_nan", ["data", "generate", "--out", "d2.npz", "--sigmas", "0,nan"], "--sigmas"),
    ("generate_radius_range_inf", ["data", "generate", "--out", "d2.npz", "--radius-range", "0.1,inf"],
     "--radius-range"),
    ("generate_out_exists", ["data", "generate", "--out", "data.npz"], "--overwrite"),
    ("inspect_empty_path", ["data", "inspect", ""], "expected a path"),
    ("sweep_runs_empty", ["sweep", "--runs", "", "--grid", "seed=0,1"], "--runs"),
    ("sweep_runs_below_a_file", ["sweep", "--runs", "afile/sweep", "--grid", "seed=0,1", "--",
                                 "--data-path", "data.npz"], "afile is a file"),
    ("sweep_member_lr_inf", ["sweep", "--runs", "sweep", "--grid", "seed=0,1", "--",
                             "--learning-rate", "inf"], "--learning-rate"),
    ("sweep_grid_beta_nan", ["sweep", "--runs", "sweep", "--grid", "beta=1e-3,nan"], "--beta"),
    ("phase_runs_below_a_file", ["phase", "a", "--runs", "afile/phase"], "afile is a file"),
    ("phase_runs_empty", ["phase", "a", "--runs", ""], "--runs"),
    ("phase_train_flag_nan", ["phase", "a", "--runs", "phase", "--", "--beta", "nan"], "--beta"),
    ("demo_runs_below_a_file", ["demo", "--runs", "afile/demo"], "afile is a file"),
    ("demo_runs_empty", ["demo", "--runs", ""], "--runs"),
    ("demo_max_steps_inf", ["demo", "--max-steps", "inf"], "--max-steps"),
    ("track_ntk_every_zero", [*TRAIN, "--track-ntk-every", "0"], "--track-ntk-every"),
    ("track_ntk_every_without_encoder", [*TRAIN, "--track-ntk-every", "5", "--rung", "auto_decoder"],
     "--track-ntk-every"),
    ("ntk_no_such_run", ["ntk", "no_such_run"], "no such run directory"),
    ("ntk_not_a_run", ["ntk", "."], "has no config.json"),
    ("ntk_corrupt_config", ["ntk", "corrupt_run"], "no readable config.json"),
    ("ntk_samples_negative", ["ntk", "corrupt_run", "--samples", "-1"], "--samples"),
    ("ntk_method_unknown", ["ntk", "corrupt_run", "--method", "exact"], "--method"),
]


@pytest.mark.parametrize("argv,named", [case[1:] for case in BAD_COMMAND_LINES],
                         ids=[case[0] for case in BAD_COMMAND_LINES])
def test_bad_command_line_is_refused_in_one_line(argv, named, scene, capsys):
    (scene / "lr.json").write_text('{"learning_rate": "inf"}')
    before = snapshot(scene)
    status, err = refused_in_process(argv, capsys)
    assert_refused(status, err, named)
    assert snapshot(scene) == before


def test_enough_malformed_inputs_are_kept():
    assert len(MALFORMED_FILES) + len(BAD_COMMAND_LINES) >= 30


# A handful through a real interpreter, as a shell runs them: exit status, stderr, files.
# (None of these imports JAX: a refusal comes before it, which keeps this test short.)
SUBPROCESS_CASES = [
    (["train", "--data-path", "data.npz", "--lr", "inf"], "--learning-rate"),
    (["train", "--data-path", "data.npz", "--output-dir", "corrupt_run", "--resume"],
     "is not readable JSON"),
    (["data", "inspect", "huge.npz"], "header claims shape"),
]


@pytest.mark.slow
def test_refusals_from_a_real_process(scene):
    huge_header(scene / "huge.npz")
    before = snapshot(scene)
    for argv, named in SUBPROCESS_CASES:
        assert_one_line_refusal(run_cli(*argv, timeout=120), named)
    assert snapshot(scene) == before


# ----------------------------------------------------------------------------- the budget


def test_over_budget_names_the_largest_need_of_the_first_resource_short():
    needs = [Need(HOST, 3 * TiB, "the data", "--generate-resolution 99999"),
             Need(HOST, 1 * TiB, "activations", "--batch-size 9"),
             Need(DISK, 10 * TiB, "the run store", "--max-steps 7")]
    line = over_budget(needs, {HOST: 50 * 1024**3, DISK: 20 * 1024**3}, {DISK: "runs"})
    assert line == ("--generate-resolution 99999: the data would need 3 TiB of memory "
                    "(4 TiB in all), 50 GiB available")
    line = over_budget(needs, {HOST: 5 * TiB, DISK: 20 * 1024**3}, {DISK: "runs"})
    assert line == "--max-steps 7: the run store would need 10 TiB on disk, 20 GiB free at runs"
    assert over_budget(needs, {HOST: 5 * TiB, DISK: None}) is None  # unknown disk: not checked
    assert over_budget(needs, {HOST: 4 * TiB, DISK: 10 * TiB}) is None  # exactly enough fits


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                    (5 * 1024**3, "5 GiB"), (38.147 * TiB, "38.1 TiB"),
                                    (250 * 1024**2, "250 MiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_schedule_rows_match_the_store_schedules():
    from fae_lab.store.layout import eval_schedule, train_schedule

    for max_steps, log_every, eval_every in [(10, 2, 5), (11, 3, 4), (1, 50, 500), (1000, 50, 500)]:
        config = RunConfig(max_steps=max_steps, eval=EvalConfig(log_every=log_every,
                                                                eval_every=eval_every))
        assert schedule_rows(config) == (train_schedule(max_steps, log_every).size,
                                         eval_schedule(max_steps, eval_every).size)


def test_run_store_need_counts_rows_and_reconstructions():
    """The disk need, re-derived: metrics rows of float64 plus (n_eval + 1) S T R^2 float32."""
    from fae_lab.store.layout import EVAL_VARIABLES, TRAIN_VARIABLES

    config = RunConfig(max_steps=10**10)  # log_every 50, eval_every 500, S = 4, K = 16, l2
    T, R = 6, 64
    n_train, n_eval = 10**10 // 50, 10**10 // 500 + 1
    eval_values = 0
    for variable in EVAL_VARIABLES.values():
        eval_values += {1: 1, 2: T if "scale" in variable.dims else 16, 3: T * 16}[len(variable.dims)]
    metrics = 8 * (n_train * (len(TRAIN_VARIABLES) + 2) + n_eval * eval_values)
    recon = 4 * (n_eval + 1) * 4 * T * R * R
    disk = [n for n in run_needs(config, 256, T, R) if n.resource == DISK]
    assert len(disk) == 1 and disk[0].bytes == metrics + recon
    assert disk[0].flag == "--max-steps 10000000000"
    assert disk[0].bytes > 7 * TiB  # the figure a 10^10-step run was refused with


def test_activation_need_is_the_larger_of_a_step_and_an_evaluation():
    """Defaults: widths 32 (16 frequencies x cos, sin), 64 x 3, 100 x 5; R = 64, T = 6."""
    config = RunConfig()
    step = 4 * 2 * 32 * 64 * 64 * (32 + 3 * 64 + 5 * 100)  # float32, 2 copies, B 32, P R^2
    evaluation = 4 * 2 * 64 * 6 * 64 * 64 * 100  # float32, 2 layers, B_eval 64, T R^2, max width
    need = activation_need(config, 6, 64, n_members=3)
    assert need.bytes == 3 * max(step, evaluation) and need.resource == "device memory"
    huge = RunConfig(optim=dataclasses.replace(config.optim, batch_size=10**6))
    need = activation_need(huge, 6, 64)
    assert need.bytes == 4 * 2 * 10**6 * 64 * 64 * 724 and need.flag == "--batch-size 1000000"
