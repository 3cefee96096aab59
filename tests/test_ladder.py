"""The bottleneck ladder (``--rung``, ``fae-lab phase a``) and the training-split evaluation
(``eval_train_*``): tiny 16x16 runs on the CPU, checked against NumPy re-derivations."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from fae_lab.bands import learned_fraction, resolved_bandwidth
from fae_lab.config import to_json_dict
from fae_lab.data.npz import MultiscaleData, load_npz, save_npz
from fae_lab.data.views import split_samples
from fae_lab.experiments import LADDER_SAMPLES, phase_experiments
from fae_lab.phase import plan
from fae_lab.train.cli import main as train_main
from tests.train_helpers import (
    TINY,
    assert_one_line_refusal,
    numpy_eval_metrics,
    numpy_radial_bins,
    read_json,
    run_cli,
    write_tiny_data,
)

R = 16


def _grid():
    axis = np.arange(R) / R
    return np.meshgrid(axis, axis, indexing="ij")  # (y, x): fields[i, t, iy, ix]


def _save(path, fields: np.ndarray):
    save_npz(path, MultiscaleData(np.asarray(fields, np.float32)[:, None], np.array([0.0]), None, None, path.name))
    return path


def _small(data, out, *more):
    return ["--data-path", str(data), "--output-dir", str(out), "--training-mode", "single_scale",
            "--single-scale-index", "0", "--decoder-hidden", "64,64,64", "--kernels", "xla", *more]


def _eval_row(run, row=-1) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(run / "metrics.zarr").load()
    return {name: ds[name].values[row] for name in ds.data_vars if ds[name].dims[0] == "eval_step"}


# ----------------------------------------------------------------------------- decoder alone

TWO_MODES = ((0, 2), (5, 0))  # (n_y, n_x) of cos(2 pi 2 x) and 0.5 sin(2 pi 5 y)


@pytest.fixture(scope="module")
def decoder_alone_run(tmp_path_factory):
    """The decoder alone fitted to u = cos(2 pi 2x) + 0.5 sin(2 pi 5y), every sample that field."""
    root = tmp_path_factory.mktemp("decoder_alone")
    Y, X = _grid()
    two = np.cos(2 * np.pi * 2 * X) + 0.5 * np.sin(2 * np.pi * 5 * Y)
    data = _save(root / "two_modes.npz", np.stack([two, two, two]))
    out = root / "run"
    steps = ["--max-steps", "300", "--eval-every", "150", "--log-every", "50", "--batch-size", "1",
             "--steps-per-call", "50", "--latent-dim", "8"]
    assert train_main([*_small(data, out, "--rung", "decoder_alone", "--rung-sample", "1"), *steps]) == 0
    return out


@pytest.mark.slow
def test_decoder_alone_resolves_both_modes_of_a_two_mode_field(decoder_alone_run):
    recon = xr.open_zarr(decoder_alone_run / "reconstructions.zarr")
    truth = recon.truth.values[0, 0].astype(np.float64)
    fitted = recon.recon.values[-1, 0, 0].astype(np.float64)
    E = np.abs(np.fft.fft2(fitted - truth)) ** 2  # error power per mode, NumPy's own FFT
    T = np.abs(np.fft.fft2(truth)) ** 2
    for ny, nx in TWO_MODES:
        assert T[ny, nx] > 1.0  # the mode is in the target
        assert 1 - E[ny, nx] / T[ny, nx] >= 0.9, (ny, nx, 1 - E[ny, nx] / T[ny, nx])
    # The same per radial bin, as the store's spectra bin them.
    index, _ = numpy_radial_bins(R, 16)
    for ny, nx in TWO_MODES:
        b = index[ny, nx]
        assert 1 - E[index == b].sum() / T[index == b].sum() >= 0.9


@pytest.mark.slow  # its fixture trains a run
def test_decoder_alone_store_is_a_training_split_run(decoder_alone_run):
    config = read_json(decoder_alone_run / "config.json")
    assert config["rung"] == "decoder_alone" and config["config"]["model"]["rung"] == "decoder_alone"
    assert config["tags"][4] == "decoder_alone" and len(config["tags"]) == 5
    assert config["recon_split"] == "train"
    assert len(config["split"]["train"]) == 1 and config["split"]["eval_train"] == config["split"]["train"]
    recon = xr.open_zarr(decoder_alone_run / "reconstructions.zarr")
    assert recon.sample.values.tolist() == config["split"]["train"]
    row = _eval_row(decoder_alone_run)
    # No encoder: the test split is not evaluated (NaN), the training split is, and its numbers
    # are the ones NumPy derives from the stored reconstruction of that training sample.
    assert np.isnan(row["eval_rel_mse"]) and np.isnan(row["eval_spectral_mse"]).all()
    expected = numpy_eval_metrics(recon.truth.values, recon.recon.values[-1], np.array([True]), 16, R / 4)
    for name, value in expected.items():
        np.testing.assert_allclose(row["eval_train_" + name.removeprefix("eval_")], value,
                                   rtol=1e-4, atol=1e-9, err_msg=name)
    final = read_json(decoder_alone_run / "final.json")
    assert final["final/test_rel_mse"] is None
    assert final["final/train_rel_mse"] == pytest.approx(float(expected["eval_rel_mse"]), rel=1e-4)


# ----------------------------------------------------------------------------- auto-decoder


@pytest.mark.slow
def test_auto_decoder_with_a_latent_per_sample_memorises_a_tiny_training_set(tmp_path):
    Y, X = _grid()
    rng = np.random.default_rng(0)
    fields = []
    for _ in range(5):  # smooth fields, |n| <= 2 per axis; 4 train, 1 test
        u = np.zeros((R, R))
        for ny in range(-2, 3):
            for nx in range(-2, 3):
                a, b = rng.normal(size=2) / (1 + nx * nx + ny * ny)
                phase = 2 * np.pi * (nx * X + ny * Y)
                u += a * np.cos(phase) + b * np.sin(phase)
        fields.append(u)
    data = _save(tmp_path / "smooth.npz", np.asarray(fields))
    out = tmp_path / "auto"
    # latent 8 >= 4 training fields. (Checked when this test was written: latent 1 reaches only
    # ~0.12 in the same steps, so the threshold measures memorisation, not the data's ease.)
    steps = ["--max-steps", "400", "--eval-every", "400", "--log-every", "50", "--batch-size", "4",
             "--steps-per-call", "50", "--latent-dim", "8", "--learning-rate", "3e-3",
             "--eval-train-samples", "4"]
    assert train_main([*_small(data, out, "--rung", "auto_decoder"), *steps]) == 0
    config = read_json(out / "config.json")
    assert config["tags"][4] == "auto_decoder" and len(config["split"]["eval_train"]) == 4
    row = _eval_row(out)
    assert row["eval_train_rel_mse"] < 1e-2, row["eval_train_rel_mse"]
    # The stored reconstructions are training samples; NumPy's relative error of them is small too.
    recon = xr.open_zarr(out / "reconstructions.zarr")
    truth, fitted = recon.truth.values.astype(np.float64), recon.recon.values[-1].astype(np.float64)
    assert ((fitted - truth) ** 2).sum() / (truth ** 2).sum() < 1e-2


# ----------------------------------------------------------------------------- the FAE's training split


@pytest.mark.slow
def test_fae_train_split_variables_are_the_test_metrics_of_the_same_samples(tmp_path):
    """A data file whose two test samples are copies of the first two training samples: the
    training split's variables must then equal the test split's, and NumPy's from the recon."""
    base = load_npz(write_tiny_data(tmp_path / "base.npz", n_samples=10, resolution=R, n_scales=3))
    train_idx, test_idx = split_samples(10, 0.2, 0)
    fields = base.fields.copy()
    fields[test_idx] = fields[train_idx[: len(test_idx)]]
    data = tmp_path / "copies.npz"
    save_npz(data, dataclasses.replace(base, fields=fields))
    out = tmp_path / "fae"
    assert train_main(["--data-path", str(data), "--output-dir", str(out), "--pooling-type", "mean",
                       "--encoder-hidden", "32,32", "--decoder-hidden", "32,32,32", "--latent-dim", "16",
                       "--kernels", "xla", *TINY]) == 0
    config = read_json(out / "config.json")
    assert config["rung"] == "fae" and len(config["tags"]) == 4 and config["recon_split"] == "test"
    assert config["split"]["eval_train"] == [int(i) for i in train_idx[: len(test_idx)]]
    ds = xr.open_zarr(out / "metrics.zarr").load()
    test_names = [n for n in ds.data_vars if n.startswith("eval_") and not n.startswith("eval_train_")
                  and n != "eval_wall_time"]
    assert len(test_names) == 11
    for name in test_names:
        train = ds["eval_train_" + name.removeprefix("eval_")].values
        assert np.isfinite(train).all() or name == "eval_scale_rel_mse", name
        np.testing.assert_allclose(train, ds[name].values, rtol=1e-5, atol=1e-10, err_msg=name)
    recon = xr.open_zarr(out / "reconstructions.zarr")
    trained = ~ds.held_out.values
    expected = numpy_eval_metrics(recon.truth.values, recon.recon.values[-1], trained, 16, R / 4)
    for name, value in expected.items():
        np.testing.assert_allclose(ds["eval_train_" + name.removeprefix("eval_")].values[-1], value,
                                   rtol=1e-4, atol=1e-9, err_msg=name)
    final = read_json(out / "final.json")
    assert final["final/train_rel_mse"] == pytest.approx(final["final/test_rel_mse"], rel=1e-5)


# ----------------------------------------------------------------------------- phase a and flags


def test_phase_a_plans_the_ladder_on_the_baselines_settings(tmp_path):
    planned = {name: cfg for name, cfg, _ in plan(phase_experiments("a"), tmp_path, None, 10, [], False)}
    rungs = {name: cfg.model.rung for name, cfg in planned.items()}
    alone = sorted(cfg.model.rung_sample for cfg in planned.values() if cfg.model.rung == "decoder_alone")
    assert alone == list(LADDER_SAMPLES) and len(alone) >= 3
    assert list(rungs.values()).count("auto_decoder") == 1 and rungs["baseline_multi_scale"] == "fae"

    def settings(cfg):  # everything but the rung, where it writes and what it is called
        doc = to_json_dict(cfg)
        doc["model"] = {k: v for k, v in doc["model"].items() if k not in ("rung", "rung_sample")}
        return {k: v for k, v in doc.items() if k not in ("output_dir", "wandb_name")}

    baseline = settings(planned["baseline_multi_scale"])
    for name, cfg in planned.items():
        if cfg.model.rung != "fae":
            assert settings(cfg) == baseline, name


@pytest.mark.slow
def test_phase_a_help_names_the_ladder():
    result = run_cli("phase", "a", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "bottleneck ladder" in text and "decoder alone" in text and "auto-decoder" in text


@pytest.mark.parametrize("flags, named", [
    (["--rung", "encoder_only"], "--rung"),
    (["--rung-sample", "-1"], "--rung-sample"),
    (["--rung-sample", "2"], "--rung-sample"),  # only with --rung decoder_alone
    (["--eval-train-samples", "0"], "--eval-train-samples"),
    (["--eval-train-samples", "many"], "--eval-train-samples"),
])
@pytest.mark.slow
def test_bad_ladder_flags_exit_2_with_one_line(flags, named, tmp_path):
    result = run_cli("train", "--output-dir", str(tmp_path / "run"), *flags)
    assert_one_line_refusal(result, named)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_rung_sample_outside_the_training_split_is_refused_before_writing(tmp_path):
    _, X = _grid()
    data = _save(tmp_path / "d.npz", np.stack([np.cos(2 * np.pi * X)] * 3))
    result = run_cli("train", *_small(data, tmp_path / "run", "--rung", "decoder_alone", "--rung-sample", "7"),
                     *TINY)
    assert_one_line_refusal(result, "--rung-sample")
    assert not (tmp_path / "run" / "config.json").exists()


def test_learned_fraction_and_resolved_bandwidth_follow_their_definitions():
    k_upper = [1.0, 2.0, 3.0, 4.0, 5.0]
    err = [0.0, 0.1, 0.0, 0.8, 0.0]
    target = [1.0, 1.0, 0.0, 1.0, 1.0]  # bin 2 has no target power: skipped
    fraction = learned_fraction(err, target)
    np.testing.assert_allclose(fraction, [1.0, 0.9, np.nan, 0.2, 1.0])
    assert resolved_bandwidth(fraction, k_upper, 0.5) == 2.0  # bin 3 fails, bin 4 is beyond the run
    assert resolved_bandwidth(fraction, k_upper, 0.95) == 1.0
    assert resolved_bandwidth(learned_fraction([2.0] * 5, [1.0] * 5), k_upper, 0.5) == 0.0
    assert np.isnan(resolved_bandwidth(learned_fraction(err, [0.0] * 5), k_upper, 0.5))
    json.dumps(float(fraction[0]))  # plain floats, as the phase table writes them
