"""``fae-lab data generate|inspect`` end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fae_lab.data.cli import main
from fae_lab.data.generate import generate_microstructures
from fae_lab.data.npz import load_npz
from tests.train_helpers import assert_one_line_refusal, run_cli


def fae_lab_data(*arguments):
    return run_cli("data", *arguments, timeout=120)


def test_generate_writes_the_generators_fields_with_the_flags_given(tmp_path, capsys):
    path = tmp_path / "d.npz"
    status = main(["generate", "--out", str(path), "--n-samples", "5", "--resolution", "16",
                   "--seed", "9", "--sigmas", "0,0.02,0.05", "--contrast", "2",
                   "--volume-fraction", "0.4", "--held-out-indices", "1"])
    assert status == 0
    assert capsys.readouterr().out.startswith(f"wrote {path}: 5 samples x 3 scales x 16^2")
    written = load_npz(path)
    direct = generate_microstructures(5, 16, 3, 9, sigmas=(0.0, 0.02, 0.05), contrast=2.0,
                                      volume_fraction=0.4)
    np.testing.assert_array_equal(written.fields, direct.fields)
    np.testing.assert_array_equal(written.sigmas, [0.0, 0.02, 0.05])
    np.testing.assert_allclose(written.times, [0.0, 0.0002, 0.00125], rtol=1e-15)
    assert written.held_out_indices == (1,)
    assert written.fields[:, 0].max() == 2.0 and written.fields[:, 0].min() == 0.0


def test_generate_radius_range_reaches_the_generator(tmp_path, capsys):
    path = tmp_path / "d.npz"
    assert main(["generate", "--out", str(path), "--n-samples", "6", "--resolution", "16",
                 "--n-scales", "2", "--radius-range", "0.15,0.25", "--volume-fraction", "0.1"]) == 0
    direct = generate_microstructures(6, 16, 2, 0, radius_range=(0.15, 0.25), volume_fraction=0.1)
    np.testing.assert_array_equal(load_npz(path).fields, direct.fields)
    default = generate_microstructures(6, 16, 2, 0, volume_fraction=0.1)
    assert not np.array_equal(direct.fields, default.fields)


def test_generate_refuses_an_existing_file_and_leaves_it_untouched(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"precious")
    stamp = os.stat(path).st_mtime_ns
    refused = fae_lab_data("generate", "--out", str(path), "--n-samples", "2",
                           "--resolution", "8", "--n-scales", "2")
    assert_one_line_refusal(refused, "--overwrite")
    assert path.read_bytes() == b"precious" and os.stat(path).st_mtime_ns == stamp
    assert main(["generate", "--out", str(path), "--n-samples", "2", "--resolution", "8",
                 "--n-scales", "2", "--overwrite"]) == 0
    assert load_npz(path).fields.shape == (2, 2, 8, 8)
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]


def test_inspect_reports_sizes_ranges_and_high_frequency_share(tmp_path, capsys):
    path = tmp_path / "d.npz"
    assert main(["generate", "--out", str(path), "--n-samples", "6", "--resolution", "32",
                 "--n-scales", "4", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    report = capsys.readouterr().out
    fields = np.load(path)["fields"].astype(np.float64)
    n, t, resolution = fields.shape[0], fields.shape[1], fields.shape[-1]
    assert re.search(rf"^samples\s+{n}$", report, re.M)
    assert re.search(rf"^scales\s+{t}$", report, re.M)
    assert re.search(rf"^resolution\s+{resolution}$", report, re.M)
    assert re.search(r"^held-out\s+not in the file \(multi-scale default: 2\)$", report, re.M)
    # Independent spectrum: u^ = fft2(u) / R^2, energy share at |n| >= R / 4 per scale.
    n_axis = np.fft.fftfreq(resolution) * resolution
    high = np.hypot(n_axis[:, None], n_axis[None, :]) >= resolution / 4
    power = np.abs(np.fft.fft2(fields) / resolution**2) ** 2
    share = power[..., high].sum(axis=(0, 2)) / power.sum(axis=(0, 2, 3))
    rows = re.findall(r"^\s+(\d+)" + r"\s+(\S+)" * 6 + r"$", report, re.M)
    assert [int(row[0]) for row in rows] == list(range(t))
    table = np.array([[float(v) for v in row[1:]] for row in rows])
    times = np.load(path)["times"]
    np.testing.assert_allclose(table[:, 0], times, rtol=1e-5)
    np.testing.assert_allclose(table[:, 2], fields.min(axis=(0, 2, 3)), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(table[:, 3], fields.max(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(table[:, 4], fields.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(table[:, 5], share, rtol=1e-5, atol=1e-15)
    assert share[0] > share[1] > share[2] > share[3]  # filtering removes the fine scales


def test_data_commands_never_import_jax(tmp_path):
    path = tmp_path / "d.npz"
    script = (
        "import sys\n"
        "from fae_lab.cli import main\n"
        f"assert main(['data', 'generate', '--out', {str(path)!r}, '--n-samples', '2',"
        " '--resolution', '8', '--n-scales', '2']) == 0\n"
        f"assert main(['data', 'inspect', {str(path)!r}]) == 0\n"
        "import fae_lab.data\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("arguments", "named"), [
    (["--n-samples", "0"], "--n-samples"),
    (["--n-samples", "1"], "--n-samples"),
    (["--resolution", "4"], "--resolution"),
    (["--volume-fraction", "1.5"], "--volume-fraction"),
    (["--sigmas", "0,x"], "--sigmas"),
    (["--sigmas", "0.1,0.2"], "--sigmas"),
    (["--n-scales", "3", "--sigmas", "0,0.1"], "--sigmas"),
    (["--n-scales", "3", "--held-out-indices", "3"], "--held-out-indices"),
    (["--contrast", "nan"], "--contrast"),
    (["--radius-range", "0.3,0.1"], "--radius-range"),
    (["--radius-range", "0.1"], "--radius-range"),
])
@pytest.mark.slow
def test_bad_generate_flag_is_one_line_naming_it(tmp_path, arguments, named):
    path = tmp_path / "d.npz"
    refused = fae_lab_data("generate", "--out", str(path), *arguments)
    assert_one_line_refusal(refused, named)
    assert not path.exists()
