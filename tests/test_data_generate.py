"""The generator: periodic inclusions, exact Fourier filtering, determinism."""

import math

import numpy as np
import pytest

from fae_lab.data.generate import (
    Inclusions,
    default_sigmas,
    gaussian_filter_fourier,
    generate_microstructures,
    render_inclusions,
)
from fae_lab.errors import UsageError


@pytest.fixture(scope="module")
def small():
    return generate_microstructures(n_samples=6, resolution=32, n_scales=5, seed=3)


@pytest.fixture(scope="module")
def many():
    return generate_microstructures(n_samples=192, resolution=32, n_scales=1, seed=11)


def one_inclusion(centre, semi_axes, angle=0.0):
    return Inclusions(np.array([0]), np.array([centre], float), np.array([semi_axes], float),
                      np.array([angle], float))


def test_each_scale_is_the_gaussian_multiplier_times_the_sharp_spectrum(small):
    resolution = small.resolution
    n = np.fft.fftfreq(resolution, d=1.0 / resolution)
    n_squared = n[:, None] ** 2 + n[None, :] ** 2
    sharp = np.fft.fft2(small.fields[:, 0].astype(np.float64))
    for t in range(small.n_scales):
        expected = sharp * np.exp(-0.5 * small.sigmas[t] ** 2 * (2 * np.pi) ** 2 * n_squared)
        got = np.fft.fft2(small.fields[:, t].astype(np.float64))
        # float32 storage: per-mode error ~ R * eps32 * |u|, far below any sigma mistake
        assert np.abs(got - expected).max() < 1e-6 * np.abs(sharp).max(), t
    np.testing.assert_allclose(small.times, small.sigmas**2 / 2, rtol=1e-15)


def test_default_sigma_ladder_is_geometric_from_half_a_cell_to_an_eighth():
    sigmas = default_sigmas(6, 64)
    assert sigmas[0] == 0
    np.testing.assert_allclose(sigmas[[1, -1]], [0.5 / 64, 1 / 8], rtol=1e-12)
    ratios = sigmas[2:] / sigmas[1:-1]
    np.testing.assert_allclose(ratios, (0.125 / (0.5 / 64)) ** (1 / 4), rtol=1e-12)
    np.testing.assert_array_equal(default_sigmas(1, 64), [0.0])


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.05])
def test_filter_of_one_fourier_mode_is_the_closed_form(sigma):
    resolution = 32
    axis = np.arange(resolution) / resolution
    y, x = np.meshgrid(axis, axis, indexing="ij")
    mode = np.cos(2 * np.pi * (3 * x - 5 * y) + 0.4)
    expected = np.exp(-0.5 * sigma**2 * (2 * np.pi) ** 2 * 34) * mode
    np.testing.assert_allclose(gaussian_filter_fourier(mode, sigma), expected, atol=1e-13)


def test_filter_equals_convolution_with_the_periodised_gaussian_kernel():
    resolution, sigma = 16, 3 / 16  # kernel spectrum beyond Nyquist < exp(-40): no aliasing
    fields = np.random.default_rng(0).standard_normal((2, resolution, resolution))
    offsets = np.arange(resolution) / resolution
    images = np.arange(-3, 4)
    d = offsets[:, None] + images[None, :]  # every periodic image of each offset, 1-D
    kernel_1d = np.exp(-(d**2) / (2 * sigma**2)).sum(axis=1) / math.sqrt(2 * math.pi * sigma**2)
    kernel = np.outer(kernel_1d, kernel_1d)  # the 2-D Gaussian factorises
    expected = np.zeros_like(fields)
    for sy in range(resolution):
        for sx in range(resolution):
            shifted = np.roll(fields, (sy, sx), axis=(-2, -1))
            expected += kernel[sy, sx] * shifted / resolution**2
    got = gaussian_filter_fourier(fields, sigma)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_an_inclusion_across_the_edge_continues_on_the_opposite_edge():
    resolution = 64
    # Binary fractions, so both placements see bit-identical displacements.
    centred = one_inclusion((0.484375, 0.5), (0.2, 0.07), angle=0.6)
    across_edge = one_inclusion((0.984375, 0.0), (0.2, 0.07), angle=0.6)
    inside = render_inclusions(centred, 1, resolution)[0]
    wrapped = render_inclusions(across_edge, 1, resolution)[0]
    np.testing.assert_array_equal(wrapped, np.roll(inside, (-resolution // 2, resolution // 2),
                                                   axis=(0, 1)))
    assert wrapped[:, 0].any() and wrapped[:, -1].any() and wrapped[0].any() and wrapped[-1].any()
    area = wrapped.mean()  # a clipped inclusion would lose about 3/4 of its area
    assert abs(area - math.pi * 0.2 * 0.07) < 0.02 * math.pi * 0.2 * 0.07


def test_an_ellipse_has_the_second_moments_of_its_axes_and_angle():
    resolution, a, b, angle = 128, 0.2, 0.08, 0.7
    cover = render_inclusions(one_inclusion((0.5, 0.5), (a, b), angle), 1, resolution)[0]
    axis = np.arange(resolution) / resolution - 0.5
    y, x = np.meshgrid(axis, axis, indexing="ij")
    mass = cover.sum()
    # Cell (iy, ix) is centred on its grid point: an ellipse centred on a grid point is
    # point-symmetric there, so its centroid is that point.
    centroid = [(cover * x).sum() / mass, (cover * y).sum() / mass]
    np.testing.assert_allclose(centroid, [0.0, 0.0], atol=1e-12)
    moments = np.array([[(cover * x * x).sum(), (cover * x * y).sum()],
                        [(cover * x * y).sum(), (cover * y * y).sum()]]) / mass
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    expected = rotation @ np.diag([a**2 / 4, b**2 / 4]) @ rotation.T  # uniform ellipse
    np.testing.assert_allclose(moments, expected, atol=2e-2 * a**2 / 4)
    assert abs(mass / resolution**2 - math.pi * a * b) < 5e-3 * math.pi * a * b


def test_no_seam_at_the_domain_edges(many):
    sharp = many.fields[:, 0].astype(np.float64)
    for axis in (1, 2):
        steps = np.abs(np.diff(sharp, axis=axis, append=np.take(sharp, [0], axis=axis)))
        per_line = steps.mean(axis=(0, 3 - axis))  # mean jump between line k and k + 1
        seam, interior = per_line[-1], per_line[:-1]
        # Periodic: the seam is one more exchangeable line. A clipped generator puts the
        # two sides' independent phases next to each other (jump about 4x the interior's).
        assert interior.min() * 0.8 < seam < interior.max() * 1.2, (axis, seam, interior)
        coverage = sharp.mean(axis=(0, 3 - axis))
        assert coverage.min() * 0.9 < coverage[0] < coverage.max() * 1.1


@pytest.mark.parametrize("volume_fraction", [0.2, 0.5])
def test_expected_inclusion_fraction_is_the_boolean_model_coverage(volume_fraction):
    data = generate_microstructures(n_samples=192, resolution=32, n_scales=1, seed=5,
                                    volume_fraction=volume_fraction)
    per_sample = data.fields[:, 0].mean(axis=(1, 2), dtype=np.float64)
    standard_error = per_sample.std(ddof=1) / math.sqrt(per_sample.size)
    assert abs(per_sample.mean() - volume_fraction) < 4 * standard_error


def test_sharp_scale_is_two_phase_with_antialiased_boundary_pixels():
    contrast = 2.5
    data = generate_microstructures(n_samples=8, resolution=32, n_scales=2, seed=2,
                                    contrast=contrast)
    levels = data.fields[:, 0].astype(np.float64) / contrast * 16  # 4 x 4 subgrid: sixteenths
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-5)
    assert levels.min() == 0 and levels.max() == 16
    partial = (levels > 0.5) & (levels < 15.5)
    assert 0.02 < partial.mean() < 0.5


def test_same_seed_same_fields_other_seed_other_fields():
    first = generate_microstructures(n_samples=4, resolution=16, n_scales=3, seed=7)
    again = generate_microstructures(n_samples=4, resolution=16, n_scales=3, seed=7)
    other = generate_microstructures(n_samples=4, resolution=16, n_scales=3, seed=8)
    assert first.fields.tobytes() == again.fields.tobytes()
    assert np.abs(first.fields - other.fields).mean() > 0.05


def test_explicit_sigmas_and_held_out_indices_are_kept():
    data = generate_microstructures(n_samples=3, resolution=16, n_scales=3, seed=0,
                                    sigmas=(0.0, 0.02, 0.05), held_out_indices=(2,))
    np.testing.assert_array_equal(data.sigmas, [0.0, 0.02, 0.05])
    np.testing.assert_allclose(data.times, [0.0, 0.0002, 0.00125], rtol=1e-15)
    assert data.held_out_indices == (2,)
    assert data.fields.shape == (3, 3, 16, 16) and data.fields.dtype == np.float32


@pytest.mark.parametrize(("arguments", "flag"), [
    ({"n_samples": 1}, "--n-samples"),
    ({"resolution": 4}, "--resolution"),
    ({"volume_fraction": 1.0}, "--volume-fraction"),
    ({"volume_fraction": 0.0}, "--volume-fraction"),
    ({"contrast": 0.0}, "--contrast"),
    ({"contrast": math.nan}, "--contrast"),
    ({"n_scales": 3, "sigmas": (0.0, 0.1)}, "--sigmas"),
    ({"n_scales": 2, "sigmas": (0.01, 0.1)}, "--sigmas"),
    ({"n_scales": 3, "sigmas": (0.0, 0.1, 0.05)}, "--sigmas"),
    ({"n_scales": 3, "held_out_indices": (3,)}, "--held-out-indices"),
    ({"n_scales": 2, "held_out_indices": (0, 1)}, "--held-out-indices"),
])
def test_bad_arguments_name_their_flag(arguments, flag):
    settings = {"n_samples": 2, "resolution": 16, **arguments}
    with pytest.raises(UsageError, match=flag):
        generate_microstructures(**settings)


def test_runs_of_one_process_share_one_generation_of_the_same_data(monkeypatch):
    """A phase's groups, trained one after another, generate the built-in data once; the shared
    arrays are read-only, and other settings generate anew."""
    from fae_lab.train import run as train_run
    from fae_lab.train.args import parse_run_config

    calls = []

    def counted(**settings):
        calls.append(settings)
        return generate_microstructures(**settings)

    monkeypatch.setattr(train_run, "generate_microstructures", counted)
    train_run.generated_data.cache_clear()
    data_flags = ["--generate-n-samples", "6", "--generate-resolution", "16", "--generate-n-scales", "2"]
    baseline = parse_run_config([*data_flags, "--output-dir", "a"])
    h1 = parse_run_config([*data_flags, "--output-dir", "b", "--loss-type", "h1", "--seed", "4"])
    first, second = train_run.load_data(baseline), train_run.load_data(h1)
    assert second is first and len(calls) == 1
    with pytest.raises(ValueError, match="read-only"):
        first.fields[0, 0, 0, 0] = 1.0
    other = train_run.load_data(parse_run_config([*data_flags, "--output-dir", "c", "--generate-seed", "1"]))
    assert len(calls) == 2 and not np.array_equal(other.fields, first.fields)
    expected = generate_microstructures(n_samples=6, resolution=16, n_scales=2, seed=0)
    np.testing.assert_array_equal(first.fields, expected.fields)
    train_run.generated_data.cache_clear()
