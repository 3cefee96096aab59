"""The dashboards as a daily user meets them (no browser): informative default samples,
readable axes, stable run colours (the browser checks are in test_browser_daily.py)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from fae_lab.testing.fake_runs import write_synthetic_run
from lab.state import LabState
from lab.views import ReconstructionsView, TwoRunComparison


def high_power_by_hand(truth: np.ndarray, cutoff: float) -> np.ndarray:
    """Σ_t Σ_{|n| >= c} |FFT(u)/R²|² per sample, wavenumbers folded by hand (min(i, R - i))."""
    S, T, R, _ = truth.shape
    folded = np.array([min(i, R - i) for i in range(R)], dtype=float)
    out = np.zeros(S)
    for s in range(S):
        for t in range(T):
            spectrum = np.fft.fft2(truth[s, t].astype(np.float64)) / R**2
            for i in range(R):
                for j in range(R):
                    if np.sqrt(folded[i] ** 2 + folded[j] ** 2) >= cutoff:
                        out[s] += abs(spectrum[i, j]) ** 2
    return out


@pytest.fixture(scope="module")
def blank_first(tmp_path_factory):
    """Two runs of four test samples whose sample 0 is an empty (all-zero) field."""
    root = tmp_path_factory.mktemp("blank")
    for name, loss in (("a", "l2"), ("b", "h1")):
        write_synthetic_run(root / name, loss_type=loss, n_evals=3, eval_every=10, log_every=5,
                            resolution=16, n_scales=2, n_samples=4, n_bins=6, seed=3)
        group = zarr.open_group(root / name / "reconstructions.zarr", mode="r+")
        truth = group["truth"][...]
        truth[0] = 0.0
        group["truth"][...] = truth
    return root


def truth_on_disk(run_dir) -> tuple[np.ndarray, float]:
    with xr.open_zarr(run_dir / "reconstructions.zarr") as recon:
        truth = recon["truth"].values
    with xr.open_zarr(run_dir / "metrics.zarr") as metrics:
        cutoff = float(metrics.attrs["spectral_cutoff"])
    return truth, cutoff


def test_views_open_on_the_sample_with_most_high_band_power(blank_first):
    truth, cutoff = truth_on_disk(blank_first / "a")
    power = high_power_by_hand(truth, cutoff)
    assert power[0] == 0.0 and power.max() > 0
    best = int(np.argmax(power))
    state = LabState(blank_first)
    recon = ReconstructionsView(state)
    compare = TwoRunComparison(state)
    assert recon.sample == best
    assert compare.sample == best
    # The choices are ordered by that power, the blank field last.
    assert list(recon.param.sample.objects.values()) == list(np.argsort(-power, kind="stable"))
    # A user's pick is kept when the other run (same samples) is chosen.
    recon.sample = 2
    recon.run = "b"
    assert recon.sample == 2


def test_a_constant_field_paints_mid_map_and_colour_bars_have_ticks(blank_first):
    state = LabState(blank_first)
    view = ReconstructionsView(state)
    view.sample = 0  # the empty field
    mapper = view.images.mappers[0]
    assert mapper.low < 0.0 < mapper.high  # not at the top of the map (low == high == 0)
    for figure in view.images.figures:
        (bar,) = figure.right
        assert bar.ticker.desired_num_ticks >= 3
