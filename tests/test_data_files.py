"""The .npz data file (docs/data-file.md): round trip, and every broken rule refused in one line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fae_lab.data.npz import MultiscaleData, load_npz, save_npz
from fae_lab.errors import DataFileError, UsageError

R = 8


def good_arrays(n=3, t=3):
    rng = np.random.default_rng(0)
    return {
        "fields": rng.random((n, t, R, R)).astype(np.float32),
        "resolution": np.int64(R),
        "times": np.linspace(0.0, 0.2, t),
        "sigmas": np.linspace(0.0, 0.4, t),
        "held_out_indices": np.array([1]),
    }


def changed(**edits):
    arrays = good_arrays()
    for key, value in edits.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return arrays


def with_value(key, index, value):
    arrays = good_arrays()
    array = arrays[key].astype(np.float64)
    array[index] = value
    arrays[key] = array
    return arrays


# (case name, arrays written with np.savez, key the refusal must name)
BROKEN = [
    ("no_fields", changed(fields=None), "fields"),
    ("no_resolution", changed(resolution=None), "resolution"),
    ("no_times", changed(times=None), "times"),
    ("fields_rank_2", changed(fields=np.zeros((R, R))), "fields"),
    ("fields_rank_5", changed(fields=np.zeros((3, 3, 1, R, R))), "fields"),
    ("fields_not_square", changed(fields=np.zeros((3, 3, R, R - 2))), "fields"),
    ("fields_one_sample", changed(fields=np.zeros((1, 3, R, R))), "fields"),
    ("fields_nan", with_value("fields", (0, 1, 2, 3), np.nan), "fields"),
    ("fields_inf", with_value("fields", (2, 0, 0, 0), -np.inf), "fields"),
    ("fields_beyond_float32", with_value("fields", (1, 1, 1, 1), 1e39), "fields"),
    ("fields_complex", changed(fields=np.zeros((3, 3, R, R), complex)), "fields"),
    ("fields_text", changed(fields=np.full((3, 3, R, R), "a")), "fields"),
    ("resolution_mismatch", changed(resolution=np.int64(2 * R)), "resolution"),
    ("resolution_fractional", changed(resolution=np.float64(R + 0.5)), "resolution"),
    ("resolution_two_values", changed(resolution=np.array([R, R])), "resolution"),
    ("resolution_text", changed(resolution=np.array("eight")), "resolution"),
    ("times_short", changed(times=np.array([0.0, 0.1])), "times"),
    ("times_not_increasing", changed(times=np.array([0.0, 0.1, 0.1])), "times"),
    ("times_decreasing", changed(times=np.array([0.2, 0.1, 0.0])), "times"),
    ("times_nan", changed(times=np.array([0.0, np.nan, 0.2])), "times"),
    ("times_2d", changed(times=np.array([[0.0], [0.1], [0.2]])), "times"),
    ("sigmas_long", changed(sigmas=np.arange(4.0)), "sigmas"),
    ("sigmas_negative", changed(sigmas=np.array([0.0, -0.1, 0.2])), "sigmas"),
    ("sigmas_nan", changed(sigmas=np.array([0.0, np.nan, 0.2])), "sigmas"),
    ("held_out_fractional", changed(held_out_indices=np.array([0.5])), "held_out_indices"),
    ("held_out_too_large", changed(held_out_indices=np.array([3])), "held_out_indices"),
    ("held_out_negative", changed(held_out_indices=np.array([-1])), "held_out_indices"),
    ("held_out_duplicates", changed(held_out_indices=np.array([1, 1])), "held_out_indices"),
    ("held_out_every_scale", changed(held_out_indices=np.array([2, 0, 1])), "held_out_indices"),
    ("held_out_bool", changed(held_out_indices=np.array([True])), "held_out_indices"),
    ("fields_pickled_objects", changed(fields=np.array([None, 1], dtype=object)), "fields"),
]

def truncated_archive(path):
    np.savez(path, **good_arrays())
    path.write_bytes(path.read_bytes()[:300])


# (case name, how to make the path, words the refusal must contain)
UNREADABLE = [
    ("truncated_archive", truncated_archive, "npz"),
    ("missing_file", lambda p: None, "no such file"),
    ("directory", lambda p: p.mkdir(), "directory"),
    ("text_file", lambda p: p.write_text("fields = 1\n"), "npz"),
    ("empty_file", lambda p: p.write_bytes(b""), "npz"),
    ("single_npy_array", lambda p: np.save(p.open("wb"), np.zeros(3)), "npz"),
]


def write_broken(directory: Path) -> list[tuple[Path, str]]:
    """Every broken file, with the text its refusal must contain."""
    cases = []
    for name, arrays, key in BROKEN:
        path = directory / f"{name}.npz"
        np.savez(path, **arrays)
        cases.append((path, f"key '{key}'"))
    for name, make, words in UNREADABLE:
        path = directory / f"{name}.npz"
        make(path)
        cases.append((path, words))
    return cases


def test_round_trip_keeps_every_key(tmp_path):
    arrays = good_arrays()
    data = MultiscaleData(arrays["fields"], arrays["times"], arrays["sigmas"], (1,), "memory")
    path = tmp_path / "data.npz"
    save_npz(path, data)
    loaded = load_npz(path)
    with np.load(path) as raw:
        assert sorted(raw.files) == sorted(arrays)
        assert int(raw["resolution"]) == R
    assert loaded.fields.dtype == np.float32
    np.testing.assert_array_equal(loaded.fields, arrays["fields"])
    np.testing.assert_array_equal(loaded.times, arrays["times"])
    np.testing.assert_array_equal(loaded.sigmas, arrays["sigmas"])
    assert loaded.held_out_indices == (1,)
    assert (loaded.n_samples, loaded.n_scales, loaded.resolution) == (3, 3, R)
    assert loaded.source == str(path)


def test_optional_keys_absent_and_extra_keys_ignored(tmp_path):
    arrays = changed(sigmas=None, held_out_indices=None)
    arrays["notes"] = np.array("anything else is ignored")
    np.savez(tmp_path / "d.npz", **arrays)
    loaded = load_npz(tmp_path / "d.npz")
    assert loaded.sigmas is None and loaded.held_out_indices is None


def test_single_scale_file_reads_as_one_scale(tmp_path):
    fields = np.random.default_rng(1).random((4, R, R))
    np.savez(tmp_path / "d.npz", fields=fields, resolution=R, times=np.array([0.0]))
    loaded = load_npz(tmp_path / "d.npz")
    assert loaded.fields.shape == (4, 1, R, R)
    np.testing.assert_array_equal(loaded.fields[:, 0], fields.astype(np.float32))


def test_empty_held_out_means_none_held_out(tmp_path):
    np.savez(tmp_path / "d.npz", **changed(held_out_indices=np.array([])))
    assert load_npz(tmp_path / "d.npz").held_out_indices == ()


@pytest.mark.parametrize(("name", "arrays", "key"), BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_rule_names_its_key(tmp_path, name, arrays, key):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFileError) as caught:
        load_npz(path)
    assert caught.value.key == key
    message = str(caught.value)
    assert f"key '{key}'" in message and "\n" not in message and str(path) in message


@pytest.mark.parametrize(("name", "make", "words"), UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_unreadable_path_is_refused(tmp_path, name, make, words):
    path = tmp_path / f"{name}.npz"
    make(path)
    with pytest.raises(DataFileError) as caught:
        load_npz(path)
    message = str(caught.value)
    assert words in message and "\n" not in message and str(path) in message


@pytest.mark.slow
def test_every_refusal_is_one_line_and_status_2_from_the_command_line(tmp_path):
    cases = write_broken(tmp_path)
    fae_lab_script = str(Path(sys.executable).parent / "fae-lab")
    commands = [[sys.executable, "-m", "fae_lab", "data", "inspect", str(path)]
                for path, _ in cases]
    commands += [[fae_lab_script, "data", "inspect", str(path)] for path, _ in cases[::12]]
    expected = [words for _, words in cases] + [words for _, words in cases[::12]]
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]
    for command, process, words in zip(commands, running, expected, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        lines = stderr.strip().splitlines()
        assert process.returncode == 2, (command, stderr)
        assert len(lines) == 1, (command, stderr)
        assert lines[0].startswith("fae-lab data: error: ") and words in lines[0], lines
        assert "Traceback" not in stderr and stdout == ""


def test_save_refuses_to_overwrite_and_leaves_no_temporary_file(tmp_path):
    arrays = good_arrays()
    first = MultiscaleData(arrays["fields"], arrays["times"], None, None, "memory")
    second = MultiscaleData(arrays["fields"] + 1, arrays["times"], None, None, "memory")
    path = tmp_path / "data.npz"
    save_npz(path, first)
    before = path.read_bytes()
    with pytest.raises(UsageError, match="--overwrite"):
        save_npz(path, second)
    assert path.read_bytes() == before
    save_npz(path, second, overwrite=True)
    np.testing.assert_array_equal(load_npz(path).fields, arrays["fields"] + 1)
    assert os.listdir(tmp_path) == ["data.npz"]


def test_save_refuses_data_that_load_would_refuse(tmp_path):
    arrays = good_arrays()
    broken = MultiscaleData(arrays["fields"], arrays["times"], None, (0, 1, 2), "memory")
    with pytest.raises(DataFileError) as caught:
        save_npz(tmp_path / "data.npz", broken)
    assert caught.value.key == "held_out_indices"
    assert os.listdir(tmp_path) == []


def test_a_file_that_appears_while_writing_is_not_clobbered(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    savez = np.savez

    def savez_while_another_process_writes(stream, **arrays):
        path.write_bytes(b"written by someone else meanwhile")
        savez(stream, **arrays)

    monkeypatch.setattr(np, "savez", savez_while_another_process_writes)
    arrays = good_arrays()
    with pytest.raises(UsageError, match="already exists"):
        save_npz(path, MultiscaleData(arrays["fields"], arrays["times"], None, None, "memory"))
    assert path.read_bytes() == b"written by someone else meanwhile"
    assert os.listdir(tmp_path) == ["data.npz"]
