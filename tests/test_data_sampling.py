"""Point subsets drawn on the device: the ones asked for, uniform, independent per side."""

import jax
import numpy as np
import pytest

from fae_lab.data.sampling import draw_point_subsets, gather_points, sample_point_indices
from fae_lab.errors import UsageError
from fae_lab.grid import grid_coordinates

R = 8
N_TOTAL = R * R


@pytest.mark.slow
def test_each_row_is_a_set_of_distinct_indices_in_range():
    indices = np.asarray(sample_point_indices(jax.random.key(0), 64, N_TOTAL, 20))
    assert indices.shape == (64, 20) and indices.dtype == np.int32
    assert indices.min() >= 0 and indices.max() < N_TOTAL
    assert all(len(set(row)) == 20 for row in indices.tolist())
    full = np.sort(np.asarray(sample_point_indices(jax.random.key(1), 4, N_TOTAL, N_TOTAL)), 1)
    np.testing.assert_array_equal(full, np.broadcast_to(np.arange(N_TOTAL), (4, N_TOTAL)))


def test_every_point_is_drawn_equally_often():
    rows, points = 2000, 16
    indices = np.asarray(sample_point_indices(jax.random.key(2), rows, N_TOTAL, points))
    counts = np.bincount(indices.ravel(), minlength=N_TOTAL)
    p = points / N_TOTAL
    # Per point: Binomial(rows, p). Chi-square with N_TOTAL - 1 degrees of freedom has mean
    # 63 and standard deviation sqrt(126); drawing without replacement only shrinks it.
    chi_square = ((counts - rows * p) ** 2 / (rows * p * (1 - p))).sum()
    assert chi_square < 63 + 6 * np.sqrt(126)
    # Pairs too: a point and its neighbour land in the same row at the rate of a uniform subset.
    members = np.zeros((rows, N_TOTAL), bool)
    np.put_along_axis(members, indices, True, axis=1)
    together = (members & np.roll(members, 1, axis=1)).mean(axis=0)
    pair_rate = points * (points - 1) / (N_TOTAL * (N_TOTAL - 1))
    assert abs(together.mean() - pair_rate) < 5 * np.sqrt(pair_rate / (rows * N_TOTAL))


def test_gathered_points_are_the_grid_points_of_those_indices():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, N_TOTAL)).astype(np.float32)
    coordinates = grid_coordinates(R)
    indices = np.asarray(sample_point_indices(jax.random.key(3), 3, N_TOTAL, 10))
    x, u = gather_points(values, coordinates, indices)
    assert x.shape == (3, 10, 2) and u.shape == (3, 10)
    for b in range(3):
        iy, ix = np.divmod(indices[b], R)  # flattened point p = iy * R + ix
        np.testing.assert_array_equal(np.asarray(x[b]), np.stack([ix / R, iy / R], -1))
        np.testing.assert_array_equal(np.asarray(u[b]), values.reshape(3, R, R)[b, iy, ix])
    x_full, u_full = gather_points(values, coordinates, None)
    assert x_full is coordinates and u_full is values


def test_none_is_the_full_grid_for_that_side_only():
    encoder, decoder = draw_point_subsets(jax.random.key(4), 5, N_TOTAL, None, 12)
    assert encoder is None and decoder.shape == (5, 12)
    encoder, decoder = draw_point_subsets(jax.random.key(4), 5, N_TOTAL, 30, None)
    assert encoder.shape == (5, 30) and decoder is None
    assert draw_point_subsets(jax.random.key(4), 5, N_TOTAL, None, None) == (None, None)


def test_encoder_and_decoder_subsets_are_independent_uniform_subsets():
    rows, n_encoder, n_decoder = 600, 19, 32  # encoder 30 %, decoder 50 % of the points
    encoder, decoder = draw_point_subsets(jax.random.key(5), rows, N_TOTAL, n_encoder, n_decoder)
    encoder, decoder = np.asarray(encoder), np.asarray(decoder)
    # The encoder sees its own 30 %, not the complement of the decoder's (the reference bug).
    assert encoder.shape == (rows, n_encoder) and decoder.shape == (rows, n_decoder)
    overlap = np.array([len(np.intersect1d(e, d)) for e, d in zip(encoder, decoder, strict=True)])
    # Independent uniform subsets: the overlap is hypergeometric.
    mean = n_encoder * n_decoder / N_TOTAL
    variance = mean * (1 - n_decoder / N_TOTAL) * (N_TOTAL - n_encoder) / (N_TOTAL - 1)
    assert abs(overlap.mean() - mean) < 5 * np.sqrt(variance / rows)
    assert 0.75 * variance < overlap.var() < 1.33 * variance


@pytest.mark.slow
def test_draws_are_fixed_by_the_key_and_jittable():
    key = jax.random.key(6)
    eager = draw_point_subsets(key, 4, N_TOTAL, 10, 20)
    jitted = jax.jit(lambda k: draw_point_subsets(k, 4, N_TOTAL, 10, 20))(key)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = draw_point_subsets(jax.random.key(7), 4, N_TOTAL, 10, 20)
    assert not np.array_equal(np.asarray(eager[0]), np.asarray(other[0]))


@pytest.mark.parametrize(("encoder_points", "decoder_points", "flag"), [
    (0, None, "--encoder-points"), (N_TOTAL + 1, None, "--encoder-points"),
    (None, 0, "--decoder-points"), (None, N_TOTAL + 1, "--decoder-points"),
])
def test_impossible_subset_size_is_refused(encoder_points, decoder_points, flag):
    with pytest.raises(UsageError, match=flag):
        draw_point_subsets(jax.random.key(0), 2, N_TOTAL, encoder_points, decoder_points)
