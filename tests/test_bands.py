"""Learned fraction 1 − E(k)/T(k) and resolved bandwidth (fae_lab.bands): the definitions on
small hand-made spectra, and on a real tiny training run against E and T computed again in
NumPy from its stored truth and reconstructions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from fae_lab.bands import learned_fraction, resolved_bandwidth
from fae_lab.train.cli import main as train_main
from tests.train_helpers import TINY, read_json, write_tiny_data

UPPER = np.array([1.0, 2.0, 3.0, 4.0])


def test_learned_fraction_is_one_minus_error_over_target_and_nan_without_target():
    error = np.array([0.0, 1.0, 3.0, 1.0, np.nan])
    target = np.array([2.0, 4.0, 2.0, 0.0, 1.0])
    fraction = learned_fraction(error, target)
    np.testing.assert_allclose(fraction[:3], [1.0, 0.75, -0.5])
    assert np.isnan(fraction[3]) and np.isnan(fraction[4])  # T = 0; an unwritten row


@pytest.mark.parametrize("fraction, expected", [
    ([0.9, 0.8, 0.6, 0.7], 4.0),            # every bin passes: the top edge
    ([0.9, 0.5, 0.4, 0.9], 2.0),            # 0.5 passes; the run stops at the first failure
    ([0.4, 0.9, 0.9, 0.9], 0.0),            # the lowest bin fails: nothing resolved
    ([0.9, np.nan, 0.7, 0.1], 3.0),         # a bin without target power is skipped
    ([np.nan, 0.2, 0.9, 0.9], 0.0),         # ... also at the bottom
    ([np.nan, np.nan, np.nan, np.nan], math.nan),
])
def test_resolved_bandwidth_is_the_upper_edge_of_the_initial_run_of_learned_bins(fraction, expected):
    got = resolved_bandwidth(np.array(fraction), UPPER)
    if math.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == expected


def test_resolved_bandwidth_works_over_leading_axes():
    fractions = np.array([[[0.9, 0.8, 0.1, 0.9], [0.1, 0.9, 0.9, 0.9]],
                          [[0.9, 0.9, 0.9, 0.9], [0.6, 0.4, 0.9, 0.9]]])
    np.testing.assert_array_equal(resolved_bandwidth(fractions, UPPER), [[2.0, 0.0], [4.0, 1.0]])
    with pytest.raises(ValueError):
        resolved_bandwidth(fractions, UPPER[:3])


def _numpy_bin_powers(fields: np.ndarray, n_bins: int) -> np.ndarray:
    """Σ over the modes of each radial bin of |fft2(f)/R²|², ``(..., R, R) -> (..., n_bins)``,
    with |n| from fftfreq and n_bins equal-width bins over [0, R/√2] (a mode on an edge goes to
    the upper bin, the corner modes to the last bin: docs/run-store.md)."""
    R = fields.shape[-1]
    n = np.fft.fftfreq(R) * R
    magnitude = np.hypot(*np.meshgrid(n, n, indexing="ij"))
    edges = np.linspace(0, R / np.sqrt(2), n_bins + 1)
    index = np.clip(np.searchsorted(edges, magnitude + 1e-9, side="right") - 1, 0, n_bins - 1)
    power = np.abs(np.fft.fft2(fields.astype(np.float64)) / R**2) ** 2
    return np.stack([power[..., index == b].sum(-1) for b in range(n_bins)], axis=-1)


def _bandwidth_by_loop(fraction: np.ndarray, upper: np.ndarray) -> float:
    """The definition, bin by bin."""
    width = 0.0
    for value, edge in zip(fraction, upper, strict=True):
        if np.isnan(value):
            continue
        if value < 0.5:
            break
        width = edge
    return width


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 10-step CPU run on 16 x 16 fields; its 8 reconstructed samples are its whole
    test set (10 samples, test fraction 0.2 → 2 test samples), so the store's spectra are
    averages over exactly the stored truth and reconstructions."""
    root = tmp_path_factory.mktemp("bands")
    data = write_tiny_data(root / "tiny.npz")
    out = root / "run"
    assert train_main(["--data-path", str(data), "--output-dir", str(out), "--loss-type", "l2",
                       "--pooling-type", "mean", "--learning-rate", "1e-2",
                       "--spectral-n-bins", "6", *TINY]) == 0
    return out


@pytest.mark.slow
def test_learned_fraction_and_bandwidth_of_a_real_run_match_numpy(tiny_run):
    progress = read_json(tiny_run / "progress.json")
    metrics = xr.open_zarr(tiny_run / "metrics.zarr").isel(
        eval_step=slice(0, progress["n_eval"])).load()
    recon = xr.open_zarr(tiny_run / "reconstructions.zarr").isel(
        eval_step=slice(0, progress["n_eval"])).load()
    n_bins = metrics.sizes["k"]
    trained = ~metrics["held_out"].values
    truth = recon["truth"].values  # (S, T, R, R)
    upper = metrics["k_upper"].values
    assert truth.shape[0] == 2 and trained.sum() >= 1
    target = _numpy_bin_powers(truth, n_bins).mean(0)  # (T, n_bins)
    widths = []
    for row in range(progress["n_eval"]):
        error = _numpy_bin_powers(recon["recon"].values[row] - truth, n_bins).mean(0)
        # E and T from the store agree with NumPy's, per scale and over the training scales.
        np.testing.assert_allclose(metrics["eval_scale_spectral_mse"].values[row], error,
                                   rtol=2e-4, atol=1e-10)
        np.testing.assert_allclose(metrics["eval_spectral_target"].values[row],
                                   target[trained].mean(0), rtol=2e-4, atol=1e-10)
        # The learned fraction and bandwidth from the store's spectra equal NumPy's.
        expected = 1 - error[trained].mean(0) / target[trained].mean(0)
        got = learned_fraction(metrics["eval_spectral_mse"].values[row],
                               metrics["eval_spectral_target"].values[row])
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
        width = resolved_bandwidth(got, upper)
        assert width == _bandwidth_by_loop(expected, upper)
        widths.append(float(width))
        # Per scale, from the per-scale variables.
        per_scale = learned_fraction(metrics["eval_scale_spectral_mse"].values[row],
                                     metrics["eval_scale_spectral_target"].values[row])
        # Bins of the most filtered scale hold ~1e-16 of target power, below what the float32
        # evaluation resolves; their fractions are hugely negative either way.
        resolved = target > 1e-8
        np.testing.assert_allclose(per_scale[resolved], (1 - error / target)[resolved],
                                   rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(
            resolved_bandwidth(per_scale, upper),
            [_bandwidth_by_loop(f, upper) for f in 1 - error / target])
    # Untrained, the reconstruction reproduces little of the target; after training the
    # lowest band (the mean field) is learned.
    assert widths[0] == 0 < widths[-1], widths
