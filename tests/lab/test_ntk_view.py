"""The NTK page on fabricated stores (no JAX): the NTK-rate lines are the stored rates averaged
over samples, the predicted-vs-measured points and the Spearman ρ are recomputed here from the
stored error spectra with a plain least-squares loop, a run without ntk.zarr is listed as such,
and an ntk.zarr written later (no new rows) is picked up at the next poll."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from scipy.stats import spearmanr

from fae_lab.ntk.store import spectrum_dataset, write_ntk
from fae_lab.testing.fake_runs import write_synthetic_run
from lab.state import LabState
from lab.views.ntk import NTKView


def write_fake_ntk(run_dir, steps=(0, 100), seed=0):
    metrics = xr.open_zarr(run_dir / "metrics.zarr")
    k, lo, hi = (metrics[c].values for c in ("k", "k_lower", "k_upper"))
    rng = np.random.default_rng(seed)
    written = []
    for step in steps:
        spectrum = SimpleNamespace(rate=rng.random((3, 2, len(k))) * np.exp(-k)[None, None],
                                   eigenvalue=np.sort(rng.random((3, 2, 4)))[..., ::-1],
                                   centroid=rng.random((3, 2, 4)), trace=rng.random((3, 2)))
        write_ntk(run_dir, spectrum_dataset(step, spectrum, np.array([3, 5]), np.zeros(2), k, lo, hi,
                                            resolution=16, method="dense"))
        written.append(spectrum)
    return written


def measured_by_loop(run_dir) -> np.ndarray:
    metrics = xr.open_zarr(run_dir / "metrics.zarr")
    steps = metrics["eval_step"].values.astype(float)
    error = metrics["eval_spectral_mse"].values
    half = steps[0] + 0.5 * (steps[-1] - steps[0])
    out = []
    for b in range(error.shape[1]):
        t = np.array([s for s, e in zip(steps, error[:, b], strict=True) if s <= half and e > 0])
        y = np.log([e for s, e in zip(steps, error[:, b], strict=True) if s <= half and e > 0])
        slope = np.polyfit(t, y, 1)[0]
        out.append(-slope)
    return np.array(out)


@pytest.mark.slow
def test_ntk_view_draws_the_stored_rates_and_the_rank_correlation(tmp_path):
    a = write_synthetic_run(tmp_path / "a", resolution=16, n_bins=8, n_evals=6, eval_every=50)
    b = write_synthetic_run(tmp_path / "b", resolution=16, n_bins=8, n_evals=6, eval_every=50,
                            loss_type="h1", seed=1)
    spectra = write_fake_ntk(a)
    view = NTKView(LabState(tmp_path))
    assert list(view.rate_sources) == ["a"]
    np.testing.assert_allclose(view.rate_sources["a"].data["rate"], spectra[0].rate[2].mean(axis=0))
    measured = measured_by_loop(a)
    c = view.comparisons["a"]
    np.testing.assert_allclose(c.measured, measured, rtol=1e-9)
    assert c.ntk_step == 0
    assert abs(c.spearman - spearmanr(spectra[0].rate[2].mean(axis=0), measured).statistic) < 1e-12
    assert "No ntk.zarr" in view._table.object and "<bdi>b</bdi>" in view._table.object
    # the decoder's kernel
    view.kernel = "decoder"
    np.testing.assert_allclose(view.rate_sources["a"].data["rate"], spectra[0].rate[0].mean(axis=0))
    # an ntk.zarr written after the run finished shows at the next poll
    write_fake_ntk(b, steps=(0,), seed=3)
    view.state.poll()
    assert set(view.rate_sources) == {"a", "b"}
