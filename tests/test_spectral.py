"""docs/metrics.md metrics against NumPy FFTs, Parseval and closed forms of single modes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fae_lab.errors import UsageError
from fae_lab.spectral import (
    default_cutoff,
    error_power,
    evaluation_metrics,
    evaluation_sums,
    low_high_split,
    radial_bins,
    radial_spectrum,
    resolve_cutoff,
)


def np_power(e):
    """|fft2(e) / R²|² in NumPy, float64."""
    r = e.shape[-1]
    return np.abs(np.fft.fft2(np.asarray(e, np.float64)) / r**2) ** 2


def np_magnitude(r):
    n = np.fft.fftfreq(r) * r
    ny, nx = np.meshgrid(n, n, indexing="ij")
    return np.hypot(nx, ny)


def np_bin_of_modes(r, n_bins):
    """Bins by np.digitize on float edges; exact when no mode lies on an interior edge."""
    edges = np.linspace(0.0, r / math.sqrt(2.0), n_bins + 1)
    return np.clip(np.digitize(np_magnitude(r), edges[1:-1]), 0, n_bins - 1)


def np_radial_spectrum(e, n_bins):
    r = e.shape[-1]
    power = np_power(e).reshape(*e.shape[:-2], r * r)
    which = np_bin_of_modes(r, n_bins).ravel()
    return np.stack([power[..., which == b].sum(-1) for b in range(n_bins)], axis=-1)


def cosine_mode(r, nx, ny, amplitude):
    """amplitude · cos(2π(nx x + ny y)) on the grid, u[y, x] with x = ix / R."""
    iy, ix = np.meshgrid(np.arange(r), np.arange(r), indexing="ij")
    return amplitude * np.cos(2 * np.pi * (nx * ix + ny * iy) / r)


# R = 16 with 7 bins: edge b sits at |n|² = 128 b² / 49, an integer only at b = 7 (the corner),
# so no mode lies on an interior edge and np.digitize is an unambiguous reference.
R, N_BINS = 16, 7


@pytest.mark.parametrize(("r", "n_bins"), [(16, 7), (64, 16), (15, 5), (8, 1), (24, 16), (14, 16)])
def test_every_mode_in_exactly_one_bin(r, n_bins):
    bins = radial_bins(r, n_bins)
    magnitude = np_magnitude(r)
    edges = np.linspace(0.0, r / math.sqrt(2.0), n_bins + 1)
    np.testing.assert_allclose(bins.lower, edges[:-1], rtol=1e-15)
    np.testing.assert_allclose(bins.upper, edges[1:], rtol=1e-15)
    np.testing.assert_allclose(bins.centres, (edges[:-1] + edges[1:]) / 2, rtol=1e-15)
    assert bins.index.shape == (r, r) and bins.index.dtype == np.int32
    assert bins.index.min() >= 0 and bins.index.max() < n_bins
    tol = 1e-9
    lower, upper = bins.lower[bins.index], bins.upper[bins.index]
    assert np.all(magnitude >= lower - tol)
    inner = bins.index < n_bins - 1
    assert np.all(magnitude[inner] < upper[inner] + tol)
    assert np.all(magnitude <= r / math.sqrt(2.0) + tol)
    assert np.bincount(bins.index.ravel(), minlength=n_bins).sum() == r * r
    # Exactly one bin per mode in the matrix the spectrum is computed with.
    np.testing.assert_array_equal(bins.one_hot.sum(axis=1), np.ones(r * r))
    if r % 2 == 0:
        assert bins.index[r // 2, r // 2] == n_bins - 1  # the corner mode |n| = R/√2


def test_mode_on_an_edge_goes_to_the_upper_bin():
    # R = 64, 16 bins: width 2√2, and mode (2, 2) has |n| = 2√2 exactly.
    bins = radial_bins(64, 16)
    assert bins.index[2, 2] == 1 and bins.index[-2, 2] == 1
    assert bins.index[2, 1] == 0  # |n| = √5 < 2√2


@pytest.mark.parametrize("shape", [(R, R), (3, 2, R, R)])
def test_radial_spectrum_parseval_and_numpy(x64, shape):
    e = np.random.default_rng(0).normal(size=shape)
    spectrum = np.asarray(radial_spectrum(jnp.asarray(e), radial_bins(R, N_BINS)))
    assert spectrum.dtype == np.float64 and spectrum.shape == (*shape[:-2], N_BINS)
    np.testing.assert_allclose(spectrum.sum(-1), np.mean(e**2, axis=(-2, -1)), rtol=1e-6)
    np.testing.assert_allclose(spectrum, np_radial_spectrum(e, N_BINS), rtol=1e-10, atol=1e-14)


def test_radial_spectrum_float32():
    e = np.random.default_rng(1).normal(size=(4, R, R)).astype(np.float32)
    spectrum = radial_spectrum(jnp.asarray(e), radial_bins(R, N_BINS))
    assert spectrum.dtype == jnp.float32
    np.testing.assert_allclose(spectrum, np_radial_spectrum(e, N_BINS), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("nx", "ny", "total"),
    # a cos(2πn·x) has mean square a²/2, split as a²/4 over ±n; on a mode that is its own
    # mirror image (2n ≡ 0 mod R: Nyquist in both components) it is a² in one mode.
    [(3, 5, 0.5), (-7, 2, 0.5), (0, 1, 0.5), (16, 3, 0.5), (16, 16, 1.0), (16, 0, 1.0)],
)
def test_single_cosine_mode(x64, nx, ny, total):
    r, n_bins, amplitude = 32, 8, 1.7
    bins = radial_bins(r, n_bins)
    e = cosine_mode(r, nx, ny, amplitude)
    power = np.asarray(error_power(jnp.asarray(e)))
    expected_power = np.zeros((r, r))
    expected_power[ny % r, nx % r] += amplitude**2 * total / 2
    expected_power[-ny % r, -nx % r] += amplitude**2 * total / 2
    np.testing.assert_allclose(power, expected_power, atol=1e-12)

    width = r / math.sqrt(2.0) / n_bins
    expected_bin = min(int(math.hypot(nx, ny) / width), n_bins - 1)
    expected = np.zeros(n_bins)
    expected[expected_bin] = amplitude**2 * total
    np.testing.assert_allclose(
        np.asarray(radial_spectrum(jnp.asarray(e), bins)), expected, atol=1e-12
    )
    if (nx, ny) == (16, 16):
        assert expected_bin == n_bins - 1


def test_low_high_split(x64):
    e = np.random.default_rng(2).normal(size=(3, R, R))
    cutoff = default_cutoff(R)
    assert cutoff == R / 4
    low, high = (np.asarray(x) for x in low_high_split(jnp.asarray(e), cutoff))
    power, is_low = np_power(e), np_magnitude(R) < cutoff
    np.testing.assert_allclose(low, (power * is_low).sum((-2, -1)), rtol=1e-10)
    np.testing.assert_allclose(high, (power * ~is_low).sum((-2, -1)), rtol=1e-10)
    np.testing.assert_allclose(low + high, np.mean(e**2, axis=(-2, -1)), rtol=1e-10)


def test_split_at_the_cutoff_counts_as_high(x64):
    e = jnp.asarray(cosine_mode(32, 8, 0, 1.0))  # |n| = 8 = R/4
    low, high = low_high_split(e, default_cutoff(32))
    assert abs(float(low)) < 1e-12 and float(high) == pytest.approx(0.5, rel=1e-12)
    low, high = low_high_split(e, 8.5)
    assert float(low) == pytest.approx(0.5, rel=1e-12) and abs(float(high)) < 1e-12


def numpy_metrics(pred, target, training, n_bins, cutoff):
    """docs/metrics.md computed directly in NumPy from (S, T, R, R) fields."""
    e = pred - target
    r = e.shape[-1]
    power = np_power(e)
    is_low = np_magnitude(r) < cutoff
    return {
        "eval_mse": np.mean(e[:, training] ** 2),
        "eval_rel_mse": np.sum(e[:, training] ** 2) / np.sum(target[:, training] ** 2),
        "eval_scale_mse": np.mean(e**2, axis=(0, 2, 3)),
        "eval_scale_rel_mse": np.sum(e**2, axis=(0, 2, 3)) / np.sum(target**2, axis=(0, 2, 3)),
        "eval_spectral_mse": np_radial_spectrum(e[:, training], n_bins).mean((0, 1)),
        "eval_spectral_target": np_radial_spectrum(target[:, training], n_bins).mean((0, 1)),
        "eval_scale_spectral_mse": np_radial_spectrum(e, n_bins).mean(0),
        "eval_scale_spectral_target": np_radial_spectrum(target, n_bins).mean(0),
        "eval_low_freq_mse": (power * is_low)[:, training].sum((-2, -1)).mean(),
        "eval_high_freq_mse": (power * ~is_low)[:, training].sum((-2, -1)).mean(),
    }


def make_fields(seed, s=5, t=3, r=R):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(s, t, r, r)) * np.array([1.0, 2.0, 0.5])[None, :t, None, None]
    pred = target + 0.3 * rng.normal(size=target.shape)
    return pred, target


@pytest.mark.slow
def test_evaluation_metrics_against_numpy(x64):
    pred, target = make_fields(3)
    training = np.array([True, False, True])
    cutoff = default_cutoff(R)
    sums = evaluation_sums(jnp.asarray(pred), jnp.asarray(target), radial_bins(R, N_BINS), cutoff)
    assert float(sums["count"]) == 5
    metrics = {k: np.asarray(v) for k, v in evaluation_metrics(sums, training).items()}
    expected = numpy_metrics(pred, target, training, N_BINS, cutoff)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-10, err_msg=name)
    # The identities docs/metrics.md promises.
    np.testing.assert_allclose(metrics["eval_spectral_mse"].sum(), metrics["eval_mse"], rtol=1e-10)
    np.testing.assert_allclose(
        metrics["eval_scale_spectral_mse"].sum(-1), metrics["eval_scale_mse"], rtol=1e-10
    )
    low, high = metrics["eval_low_freq_mse"], metrics["eval_high_freq_mse"]
    np.testing.assert_allclose(low + high, metrics["eval_mse"], rtol=1e-10)
    np.testing.assert_allclose(metrics["eval_high_freq_error_ratio"], high / (low + high))
    assert 0 < metrics["eval_high_freq_error_ratio"] < 1


@pytest.mark.slow
def test_evaluation_float32_close_to_float64_reference():
    pred, target = make_fields(4)
    training = np.array([True, True, False])
    sums = evaluation_sums(
        jnp.asarray(pred, jnp.float32),
        jnp.asarray(target, jnp.float32),
        radial_bins(R, N_BINS),
        4.0,
    )
    metrics = evaluation_metrics(sums, jnp.asarray(training))
    assert metrics["eval_mse"].dtype == jnp.float32
    expected = numpy_metrics(
        pred.astype(np.float32), target.astype(np.float32), training, N_BINS, 4.0
    )
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-8, err_msg=name)


@pytest.mark.slow
def test_sums_accumulate_over_batches(x64):
    pred, target = make_fields(5)
    training = np.array([True, False, True])
    bins = radial_bins(R, N_BINS)
    whole = evaluation_sums(jnp.asarray(pred), jnp.asarray(target), bins, 4.0)
    first = evaluation_sums(jnp.asarray(pred[:2]), jnp.asarray(target[:2]), bins, 4.0)
    second = evaluation_sums(jnp.asarray(pred[2:]), jnp.asarray(target[2:]), bins, 4.0)
    summed = jax.tree.map(jnp.add, first, second)
    for name in whole:
        np.testing.assert_allclose(summed[name], whole[name], rtol=1e-12, err_msg=name)
    for name, value in evaluation_metrics(whole, training).items():
        np.testing.assert_allclose(
            evaluation_metrics(summed, training)[name], value, rtol=1e-12, err_msg=name
        )


@pytest.mark.slow
def test_padded_samples_contribute_nothing(x64):
    pred, target = make_fields(6)
    bins = radial_bins(R, N_BINS)
    padded_pred = np.concatenate([pred, np.full_like(pred[:2], np.nan)])
    padded_target = np.concatenate([target, np.full_like(target[:2], 7.0)])
    valid = np.arange(7) < 5
    padded = evaluation_sums(jnp.asarray(padded_pred), jnp.asarray(padded_target), bins, 4.0, valid)
    plain = evaluation_sums(jnp.asarray(pred), jnp.asarray(target), bins, 4.0)
    for name in plain:
        np.testing.assert_allclose(padded[name], plain[name], rtol=1e-12, err_msg=name)


@pytest.mark.slow
def test_jit_and_vmap_agree_with_eager():
    pred, target = (jnp.asarray(x, jnp.float32) for x in make_fields(7))
    bins = radial_bins(R, N_BINS)
    eager = evaluation_sums(pred, target, bins, 4.0)
    jitted = jax.jit(evaluation_sums, static_argnums=(2, 3))(pred, target, bins, 4.0)
    traced_cutoff = jax.jit(evaluation_sums, static_argnums=2)(pred, target, bins, 4.5)
    for name in eager:
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-6, err_msg=name)
    # A traced cutoff (compared on the device) must select the same modes as a static one.
    static_cutoff = evaluation_sums(pred, target, bins, 4.5)
    np.testing.assert_allclose(traced_cutoff["low"], static_cutoff["low"], rtol=1e-6)
    e = pred - target
    per_sample = jax.vmap(lambda x: radial_spectrum(x, bins))(e)
    np.testing.assert_allclose(per_sample, radial_spectrum(e, bins), rtol=1e-6)
    metrics = jax.jit(evaluation_metrics)(eager, jnp.array([True, False, True]))
    np.testing.assert_allclose(
        metrics["eval_mse"], evaluation_metrics(eager, np.array([True, False, True]))["eval_mse"]
    )


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="--spectral-n-bins"):
        radial_bins(16, 0)
    with pytest.raises(UsageError, match="--spectral-cutoff"):
        resolve_cutoff(16, -1.0)
    with pytest.raises(UsageError, match="--spectral-cutoff"):
        resolve_cutoff(16, 12.0)  # above R/√2: nothing would be "high"
    assert resolve_cutoff(16, None) == 4.0 and resolve_cutoff(16, 6) == 6.0
