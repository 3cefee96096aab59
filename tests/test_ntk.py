"""The empirical NTK (fae_lab.ntk): matrix-free against dense, the closed form of a model linear
in Fourier features, the band-rate fit, the ntk.zarr store, and ``fae-lab ntk`` on a real run."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy.stats import spearmanr

from fae_lab.ntk import kernel, rates
from fae_lab.ntk.spectra import shell_average, spectral_centroid
from fae_lab.ntk.store import read_ntk, spectrum_dataset, variable_name, write_ntk
from tests.train_helpers import (
    TINY,
    assert_one_line_refusal,
    numpy_radial_bins,
    run_cli,
    write_tiny_data,
)

# ----------------------------------------------------------------------------- kernels


def grid_points(R: int) -> np.ndarray:
    """(R*R, 2) coordinates (x, y) = (ix/R, iy/R), row-major in y then x (written again here)."""
    iy, ix = np.meshgrid(np.arange(R), np.arange(R), indexing="ij")
    return np.stack([ix.ravel() / R, iy.ravel() / R], axis=-1)


def tanh_mlp(R: int, width: int = 12, seed: int = 0):
    """A small float64 MLP on the grid's coordinates: f(θ) ∈ R^{R²}."""
    rng = np.random.default_rng(seed)
    params = {"w1": rng.standard_normal((2, width)) * 2.0, "b1": rng.standard_normal(width),
              "w2": rng.standard_normal((width, width)) / np.sqrt(width), "b2": rng.standard_normal(width),
              "w3": rng.standard_normal(width) / np.sqrt(width)}
    params = jax.tree.map(jnp.asarray, params)
    x = jnp.asarray(grid_points(R))

    def f(p, _aux):
        h = jnp.tanh(x @ p["w1"] + p["b1"][None])
        h = jnp.tanh(h @ p["w2"] + p["b2"][None])
        return h @ p["w3"]

    return f, params


@pytest.mark.slow
def test_matrix_free_top_eigenvalues_match_dense(x64):
    R, top = 8, 10
    f, params = tanh_mlp(R)
    flat, theta = kernel.flatten(f, params)
    assert theta.dtype == jnp.float64
    jac = np.asarray(jax.jacrev(lambda t: flat(t, None))(theta))  # independent of the module's J
    dense_values = np.sort(np.linalg.eigvalsh(jac @ jac.T))[::-1][:top]
    kv = kernel.make_ntk_matvec(flat)
    values, vectors = kernel.lanczos_top_eigenpairs(lambda v: kv(theta, None, jnp.asarray(v)), R * R, top)
    np.testing.assert_allclose(values, dense_values, rtol=1e-5)
    # and they are eigenvectors of the dense K
    residual = vectors @ (jac @ jac.T) - values[:, None] * vectors
    assert np.abs(residual).max() < 1e-6 * values[0]
    # the module's dense path agrees with the independent J
    module_values, _ = kernel.dense_top_eigenpairs(np.asarray(kernel.dense_ntk(flat, theta)), top)
    np.testing.assert_allclose(module_values, dense_values, rtol=1e-10)


@pytest.mark.slow
def test_mode_rates_dense_and_matrix_free_agree_with_the_quadratic_form(x64):
    R = 8
    f, params = tanh_mlp(R, seed=1)
    flat, theta = kernel.flatten(f, params)
    jac = np.asarray(jax.jacrev(lambda t: flat(t, None))(theta))
    K = jac @ jac.T
    # f_n^H K f_n for a few modes, straight from the definition
    x = grid_points(R)
    expected = np.empty((R, R))
    for iy in range(R):
        for ix in range(R):
            ny, nx = np.fft.fftfreq(R, 1 / R)[iy], np.fft.fftfreq(R, 1 / R)[ix]
            fn = np.exp(2j * np.pi * (nx * x[:, 0] + ny * x[:, 1])) / R
            expected[iy, ix] = np.real(fn.conj() @ K @ fn)
    np.testing.assert_allclose(kernel.dense_mode_rates(jnp.asarray(jac), R), expected, rtol=1e-9)
    free = kernel.matrix_free_mode_rates(kernel.make_pullback_norms(flat), theta, None, R, chunk=7)
    np.testing.assert_allclose(free, expected, rtol=1e-9)
    assert np.isclose(np.sum(expected), np.trace(K))  # Parseval: F is unitary


FREQUENCIES = [(1, 0), (0, 2), (2, 1), (3, -3), (-1, 2), (4, 0)]  # (n_x, n_y), distinct up to sign
AMPLITUDES = np.array([1.0, 0.5, 2.0, 1.5, 0.75, 3.0])  # a_j: the cos and sin of frequency j


def fourier_feature_model(R: int):
    """f(x) = Σ_j w_j a_j φ_j(x): a cosine and a sine of each of FREQUENCIES, scaled by a_j."""
    x = jnp.asarray(grid_points(R))
    m = jnp.asarray(np.asarray(FREQUENCIES, np.float64))
    a = jnp.asarray(np.concatenate([AMPLITUDES, AMPLITUDES]))
    phases = 2 * jnp.pi * (x @ m.T)  # (n, J)
    features = jnp.concatenate([jnp.cos(phases), jnp.sin(phases)], axis=-1) * a[None]  # (n, 2J)

    def f(w, _aux):
        return features @ w

    return f, jnp.asarray(np.random.default_rng(0).standard_normal(2 * len(FREQUENCIES)))


@pytest.mark.slow
def test_shell_rates_of_a_model_linear_in_fourier_features_match_the_closed_form(x64):
    # K(x, x') = Σ_j a_j² φ_j(x) φ_j(x'); for φ = cos 2π m·x or sin 2π m·x on the R x R grid,
    # |f_n^H φ|² = R²/4 at n = ±m and 0 elsewhere, so ρ(n) = a_j² R²/2 at n = ±m_j (cos and
    # sin), else 0.
    R, n_bins = 16, 8
    f, w = fourier_feature_model(R)
    flat, theta = kernel.flatten(f, w)
    closed = np.zeros((R, R))
    for (nx, ny), a in zip(FREQUENCIES, AMPLITUDES, strict=True):
        for sign in (1, -1):
            closed[(sign * ny) % R, (sign * nx) % R] += a**2 * R**2 / 2
    bin_of, _ = numpy_radial_bins(R, n_bins)
    closed_shells = np.array([closed[bin_of == b].mean() for b in range(n_bins)])

    jac = kernel.make_dense_jacobian(flat)(theta, None)
    dense = kernel.dense_mode_rates(jac, R)
    free = kernel.matrix_free_mode_rates(kernel.make_pullback_norms(flat), theta, None, R)
    np.testing.assert_allclose(dense, closed, atol=1e-9 * R**2)
    np.testing.assert_allclose(free, closed, atol=1e-9 * R**2)
    np.testing.assert_allclose(shell_average(free, n_bins), closed_shells, atol=1e-9 * R**2)
    # a random subset of at most 5 modes per shell: those modes (and their partners -n) exact
    iy, ix = kernel.shell_mode_subset(R, n_bins, 5, seed=2)
    assert np.bincount(bin_of[iy, ix], minlength=n_bins).max() <= 5
    subset = kernel.matrix_free_mode_rates(kernel.make_pullback_norms(flat), theta, None, R, iy=iy, ix=ix)
    computed = np.isfinite(subset)
    assert computed[iy, ix].all() and computed[(-iy) % R, (-ix) % R].all()
    assert computed.sum() < R * R
    np.testing.assert_allclose(subset[computed], closed[computed], atol=1e-9 * R**2)
    # the nonzero eigenvalues are a_j² ‖φ_j‖² = a_j² R²/2, twice per frequency (cos and sin)
    values, vectors = kernel.dense_top_eigenpairs(np.asarray(jac @ jac.T), 2 * len(FREQUENCIES) + 1)
    order = np.argsort(AMPLITUDES)[::-1]
    np.testing.assert_allclose(values[:-1], np.repeat(AMPLITUDES[order] ** 2 * R**2 / 2, 2), rtol=1e-9)
    assert abs(values[-1]) < 1e-9 * R**2
    # each eigenvector lies in its frequency's cos/sin plane: its centroid is that |m_j|
    magnitudes = np.hypot(*np.asarray(FREQUENCIES, np.float64).T)[order]
    np.testing.assert_allclose(spectral_centroid(vectors[:-1], R), np.repeat(magnitudes, 2), rtol=1e-9)


def test_spectral_centroid_of_a_single_mode_is_its_magnitude():
    R = 16
    iy, ix = np.meshgrid(np.arange(R), np.arange(R), indexing="ij")
    field = np.cos(2 * np.pi * (3 * ix + 4 * iy) / R)
    np.testing.assert_allclose(spectral_centroid(field.reshape(1, -1), R), [5.0])


# ----------------------------------------------------------------------------- the FAE


@pytest.mark.slow
def test_fae_parts_add_up_and_matrix_free_matches_dense():
    from fae_lab.config import ModelConfig
    from fae_lab.models import build_model
    from fae_lab.ntk.model import PARTS, FAEKernels

    # the encoder part has rank <= latent_dim (J_enc = ∂g/∂z ∂z/∂θ_enc): keep top below it
    cfg = dataclasses.replace(ModelConfig(), encoder_hidden=(8, 8), decoder_hidden=(8, 8), latent_dim=8)
    R, top, n_bins = 8, 6, 4
    model = build_model(cfg, R, seed=0)
    field = np.random.default_rng(0).random((R, R)).astype(np.float32)
    dense = FAEKernels(model, R, "dense").field_spectrum(model, field, n_bins, top)
    free = FAEKernels(model, R, "matrix-free").field_spectrum(model, field, n_bins, top)
    for part in PARTS:
        np.testing.assert_allclose(free[part][1], dense[part][1], rtol=1e-5)  # eigenvalues
        np.testing.assert_allclose(free[part][0], dense[part][0], rtol=1e-4)  # shell rates
    # Ker_FAE = Ker_dec + Ker_enc: the FAE's own Jacobian, independently
    from fae_lab.grid import grid_coordinates

    grid = jnp.asarray(grid_coordinates(R))
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def output(p):
        m = nnx.merge(graphdef, p, rest)
        return m.decode(m.encode(grid, jnp.asarray(field.reshape(1, -1))), grid)[0]

    flat, theta = kernel.flatten(lambda p, _a: output(p), params)
    jac = np.asarray(jax.jacrev(lambda t: flat(t, None))(theta), np.float64)
    values = np.sort(np.linalg.eigvalsh(jac @ jac.T))[::-1][:top]
    np.testing.assert_allclose(dense["fae"][1], values, rtol=1e-4)
    assert dense["fae"][3] == pytest.approx(dense["decoder"][3] + dense["encoder"][3], rel=1e-9)
    assert dense["fae"][3] == pytest.approx(np.sum(jac**2), rel=1e-4)


# ----------------------------------------------------------------------------- measured rates


def test_band_rate_fit_recovers_known_decay_rates():
    steps = np.arange(0, 2001, 50, dtype=np.float64)
    true = np.array([3e-3, 1e-3, 2e-4, 0.0, 5e-3])
    amplitude = np.array([2.0, 1.0, 0.5, 0.1, 4.0])
    error = amplitude * np.exp(-true * steps[:, None])
    # after the window (the first half) the error stops falling: the fit must not see it
    late = steps > 1000
    error[late] = error[~late][-1] * (1 + 0.01 * np.arange(late.sum()))[:, None]
    fitted = rates.band_decay_rates(steps, error)
    np.testing.assert_allclose(fitted, true, atol=1e-12)
    assert rates.default_window(steps) == (0.0, 1000.0)
    # an explicit window, and a band with too few usable points
    error[:, 2] = np.nan
    error[0, 2] = 1.0
    windowed = rates.band_decay_rates(steps, error, window=(100.0, 600.0))
    np.testing.assert_allclose(windowed[[0, 1, 3, 4]], true[[0, 1, 3, 4]], atol=1e-12)
    assert np.isnan(windowed[2])


def test_spearman_matches_scipy_and_the_comparison_picks_the_nearest_ntk_step():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(12), rng.standard_normal(12)
    b[3] = b[7]  # a tie
    assert rates.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    a[0] = np.nan
    assert rates.spearman(a, b) == pytest.approx(spearmanr(a[1:], b[1:]).statistic, abs=1e-12)
    steps = np.arange(0, 101, 10.0)
    lam = np.array([0.05, 0.02, 0.01, 0.001])
    error = np.exp(-lam * steps[:, None])
    ntk = np.stack([lam[::-1], lam * 7.0])  # rows: NTK steps 100 (ranks reversed) and 0 (agree)
    c = rates.RateComparison(steps, error, np.array([100, 0]), ntk)
    assert c.ntk_step == 0 and c.spearman == pytest.approx(1.0)
    np.testing.assert_allclose(c.predicted, lam * 7.0)
    c = rates.RateComparison(steps, error, np.array([100, 0]), ntk, window=(90.0, 100.0))
    assert c.ntk_step == 100 and c.spearman == pytest.approx(-1.0)
    np.testing.assert_allclose(c.measured, lam, rtol=1e-9)


# ----------------------------------------------------------------------------- ntk.zarr


def fake_spectrum(S=2, top=3, n_bins=4, offset=0.0):
    from fae_lab.ntk.model import NTKSpectrum

    rng = np.random.default_rng(int(offset))
    return NTKSpectrum(rate=rng.random((3, S, n_bins)) + offset, eigenvalue=rng.random((3, S, top)),
                       centroid=rng.random((3, S, top)), trace=rng.random((3, S)))


def step_dataset(step, spectrum, samples=(4, 6)):
    edges = np.linspace(0, 4, 5)
    return spectrum_dataset(step, spectrum, np.asarray(samples), np.zeros(len(samples)), 0.5 * (edges[1:] + edges[:-1]),
                            edges[:-1], edges[1:], resolution=8, method="dense")


@pytest.mark.slow
def test_ntk_store_adds_steps_in_order_replaces_a_step_and_refuses_a_mismatch(tmp_path):
    from fae_lab.errors import UsageError

    a, b, c = fake_spectrum(offset=0), fake_spectrum(offset=1), fake_spectrum(offset=2)
    assert read_ntk(tmp_path) is None
    write_ntk(tmp_path, step_dataset(10, a))
    write_ntk(tmp_path, step_dataset(0, b))
    write_ntk(tmp_path, step_dataset(10, c))  # recomputed: replaces step 10
    ds = xr.open_zarr(tmp_path / "ntk.zarr").load()  # plain xarray, as a user would
    assert list(ds["ntk_step"].values) == [0, 10]
    np.testing.assert_array_equal(ds[variable_name("decoder", "rate")].values[0], b.rate[0])
    np.testing.assert_array_equal(ds[variable_name("encoder", "eigenvalue")].values[1], c.eigenvalue[1])
    np.testing.assert_array_equal(ds[variable_name("fae", "trace")].values[1], c.trace[2])
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "ntk.zarr").rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="eigenvalues"):
        write_ntk(tmp_path, step_dataset(20, fake_spectrum(top=5)))
    with pytest.raises(UsageError, match="samples"):
        write_ntk(tmp_path, step_dataset(20, a, samples=(1, 2)))
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "ntk.zarr").rglob("*") if p.is_file()}
    assert before == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntk.zarr"]  # no temporary left


# ----------------------------------------------------------------------------- a real run

TRAIN = [*TINY, "--encoder-hidden", "16,16", "--decoder-hidden", "16,16", "--latent-dim", "8",
         "--n-reconstruction-samples", "2", "--spectral-n-bins", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny FAE (16² grid, 10 steps) trained with --track-ntk-every 5."""
    root = tmp_path_factory.mktemp("ntk_run")
    data = write_tiny_data(root / "data.npz")
    result = run_cli("train", "--data-path", str(data), "--output-dir", str(root / "runs" / "fae"),
                     *TRAIN, "--track-ntk-every", "5")
    assert result.returncode == 0, result.stderr
    return root / "runs" / "fae"


@pytest.mark.slow
def test_track_ntk_every_writes_the_tracked_steps(trained):
    ds = read_ntk(trained)
    assert list(ds["ntk_step"].values) == [0, 5, 10]
    assert ds.sizes["sample"] == 2 and ds.sizes["eigen"] == 16 and ds.sizes["k"] == 8
    metrics = xr.open_zarr(trained / "metrics.zarr")
    np.testing.assert_array_equal(ds["k_upper"].values, metrics["k_upper"].values)
    for part in ("decoder", "encoder", "fae"):
        values = ds[variable_name(part, "eigenvalue")].values
        assert np.all(np.isfinite(values)) and np.all(np.diff(values, axis=-1) <= 0)
    # rates add; Σ_b (modes in b) × ρ_b = trace K
    np.testing.assert_allclose(ds["ntk_fae_rate"], ds["ntk_decoder_rate"] + ds["ntk_encoder_rate"], rtol=1e-12)
    bin_of, _ = numpy_radial_bins(16, 8)
    counts = np.bincount(bin_of.ravel(), minlength=8)
    np.testing.assert_allclose((ds["ntk_fae_rate"].values * counts).sum(-1), ds["ntk_fae_trace"].values, rtol=1e-4)


@pytest.mark.slow
def test_fae_lab_ntk_recomputes_a_step_matrix_free_and_the_view_reads_it(trained, tmp_path):
    from fae_lab.ntk.cli import main

    run = tmp_path / "runs" / "fae"
    shutil.copytree(trained, run)
    tracked = read_ntk(run)
    assert main([str(run), "--method", "matrix-free"]) == 0  # latest checkpoint: step 10
    ds = read_ntk(run)
    assert list(ds["ntk_step"].values) == [0, 5, 10]
    for name in ("ntk_decoder_eigenvalue", "ntk_encoder_eigenvalue", "ntk_fae_eigenvalue", "ntk_fae_rate"):
        # the encoder's kernel has rank <= latent_dim (8): below that, float32 rounding
        scale = float(np.abs(tracked[name].sel(ntk_step=10)).max())
        np.testing.assert_allclose(ds[name].sel(ntk_step=10), tracked[name].sel(ntk_step=10), rtol=2e-3,
                                   atol=1e-5 * scale)
        np.testing.assert_array_equal(ds[name].sel(ntk_step=0), tracked[name].sel(ntk_step=0))
    assert ds.attrs["method"] == "matrix-free"

    from lab.state import LabState
    from lab.views.ntk import NTKView

    view = NTKView(LabState(tmp_path / "runs"))
    source = view.rate_sources["fae"].data
    expected = ds["ntk_fae_rate"].values[0].mean(axis=0)
    np.testing.assert_allclose(source["rate"], expected[expected > 0])
    comparison = view.comparisons["fae"]
    metrics = xr.open_zarr(run / "metrics.zarr")
    error = metrics["eval_spectral_mse"].values
    steps = metrics["eval_step"].values
    # window: evaluations 0 and 5 -> the slope of two points, by hand
    measured = -(np.log(error[1]) - np.log(error[0])) / (steps[1] - steps[0])
    np.testing.assert_allclose(comparison.measured, measured, rtol=1e-9)
    assert comparison.spearman == pytest.approx(spearmanr(expected, measured).statistic, abs=1e-9)
    assert "fae" in view._table.object


@pytest.mark.slow
def test_the_ntk_of_a_checkpoint_uses_the_features_the_run_trained_with(trained):
    """``fae-lab ntk`` restores the checkpoint's Fourier features, not a new draw of them."""
    from flax import nnx

    from fae_lab.config import from_json_dict
    from fae_lab.ntk.run import float32_model, restore_parameters, run_payload
    from fae_lab.train.checkpoint import Checkpoints
    from fae_lab.train.step import TrainState, adam

    model = float32_model(from_json_dict(run_payload(trained)["config"]), 16)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    abstract = TrainState(params, adam().init(params), jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32))
    redrawn = jax.tree.map(lambda a: 2 * np.asarray(a) + 1, rest.to_pure_dict())  # another draw
    nnx.replace_by_pure_dict(rest, redrawn)
    nnx.update(model, rest)
    checkpoints = Checkpoints(trained, keep_best=False)
    try:
        _, _, stored = checkpoints.restore_latest(abstract, rest.to_pure_dict())
    finally:
        checkpoints.close()
    assert stored is not None and jax.tree.leaves(stored)
    assert restore_parameters(trained, model, None) == 10
    _, _, after = nnx.split(model, nnx.Param, ...)
    for kept, used in zip(jax.tree.leaves(stored), jax.tree.leaves(after.to_pure_dict()), strict=True):
        np.testing.assert_array_equal(np.asarray(used), np.asarray(kept))
    assert not any(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(redrawn), jax.tree.leaves(stored), strict=True))


@pytest.mark.slow
def test_fae_lab_ntk_refuses_bad_input_in_one_line(trained, tmp_path, capsys):
    from fae_lab.ntk.cli import main

    run = tmp_path / "fae"
    shutil.copytree(trained, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cases = [
        ([str(tmp_path / "nothing")], "no such run directory"),
        ([str(tmp_path)], "config.json"),
        ([str(run), "--step", "7"], "--step"),
        ([str(run), "--samples", "99"], "--samples"),
        ([str(run), "--samples", "0"], "--samples"),
        ([str(run), "--top", "256"], "--top"),
        ([str(run), "--scale", "9"], "--scale"),
        ([str(run), "--top", "4"], "eigenvalues"),  # ntk.zarr holds 16 per kernel
        ([str(run), "--method", "magic"], "--method"),
    ]
    for argv, named in cases:
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse's own refusals
            status = stop.code
        assert status == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], (argv, err)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert before == after
    # a shell's view of it: the real entry point
    assert_one_line_refusal(run_cli("ntk", str(run), "--step", "3"), "--step")



def test_shell_mode_subset_keeps_every_mode_of_a_small_shell_and_one_of_each_pair():
    R, n_bins = 16, 8
    bin_of, _ = numpy_radial_bins(R, n_bins)
    iy, ix = kernel.shell_mode_subset(R, n_bins, R * R)  # no shell is that large: the half plane
    pairs = {frozenset({(y, x), ((-y) % R, (-x) % R)}) for y in range(R) for x in range(R)}
    assert len(iy) == len(pairs)  # one mode of each {n, -n}
    assert {frozenset({(y, x), ((-y) % R, (-x) % R)}) for y, x in zip(iy, ix, strict=True)} == pairs
    iy, ix = kernel.shell_mode_subset(R, n_bins, 3, seed=1)
    counts = np.bincount(bin_of[iy, ix], minlength=n_bins)
    half = np.bincount(bin_of[kernel.half_plane_modes(R)], minlength=n_bins)
    np.testing.assert_array_equal(counts, np.minimum(half, 3))
