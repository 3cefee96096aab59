"""Train/test split, scale roles, and the per-scale high-frequency energy share."""

import numpy as np
import pytest

from fae_lab.data.npz import MultiscaleData
from fae_lab.data.views import (
    ScaleRoles,
    default_held_out,
    high_frequency_energy_fraction,
    resolve_scales,
    split_samples,
)
from fae_lab.errors import UsageError


def data_with(n_scales, held_out_indices=None):
    fields = np.zeros((2, n_scales, 4, 4), np.float32)
    return MultiscaleData(fields, np.arange(float(n_scales)), None, held_out_indices, "memory")


@pytest.mark.parametrize(("n_samples", "test_fraction", "n_test"), [
    (100, 0.2, 20), (7, 0.5, 4), (2, 0.2, 1), (10, 0.99, 9), (3, 0.01, 1),
])
def test_split_is_a_sorted_partition_with_both_sides_non_empty(n_samples, test_fraction, n_test):
    train, test = split_samples(n_samples, test_fraction, seed=4)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert len(test) == n_test and len(train) == n_samples - n_test
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(n_samples))


def test_split_is_fixed_by_its_seed_and_uniform_over_seeds():
    first = split_samples(50, 0.2, seed=1)
    np.testing.assert_array_equal(first[1], split_samples(50, 0.2, seed=1)[1])
    assert not np.array_equal(first[1], split_samples(50, 0.2, seed=2)[1])
    # Over many seeds each sample is in the test set with probability 10 / 40.
    counts = np.zeros(40)
    for seed in range(400):
        counts[split_samples(40, 0.25, seed)[1]] += 1
    expected, spread = 400 * 0.25, np.sqrt(400 * 0.25 * 0.75)
    assert np.all(np.abs(counts - expected) < 5 * spread)


@pytest.mark.parametrize(("n_samples", "test_fraction"), [(10, 0.0), (10, 1.0), (10, -0.2),
                                                          (1, 0.5), (0, 0.5)])
def test_impossible_split_is_refused(n_samples, test_fraction):
    with pytest.raises(UsageError):
        split_samples(n_samples, test_fraction, seed=0)


def test_default_held_out_is_the_middle_scale_from_three_scales_on():
    assert [default_held_out(t) for t in range(1, 8)] == [(), (), (1,), (2,), (2,), (3,), (3,)]


def test_single_scale_trains_one_scale_and_holds_out_the_rest():
    roles = resolve_scales(data_with(5, held_out_indices=(2,)), "single_scale", 1)
    assert roles == ScaleRoles(training=(1,), held_out=(0, 2, 3, 4))


@pytest.mark.parametrize(("file_held_out", "flag", "held_out"), [
    (None, None, (2,)),  # the documented default, T // 2
    ((4, 1), None, (1, 4)),  # the file's
    ((4, 1), (0,), (0,)),  # the flag wins
    ((4,), (), ()),  # an empty flag holds nothing out
    ((), None, ()),
])
def test_multi_scale_held_out_comes_from_flag_then_file_then_default(file_held_out, flag,
                                                                      held_out):
    roles = resolve_scales(data_with(5, file_held_out), "multi_scale", 1, flag)
    assert roles.held_out == held_out
    assert roles.training == tuple(i for i in range(5) if i not in held_out)


def test_two_scales_hold_nothing_out_by_default():
    assert resolve_scales(data_with(2), "multi_scale", 1) == ScaleRoles((0, 1), ())


@pytest.mark.parametrize(("mode", "index", "flag", "message"), [
    ("single_scale", 5, None, "--single-scale-index"),
    ("single_scale", -1, None, "--single-scale-index"),
    ("multi_scale", 1, (5,), "--held-out-indices"),
    ("multi_scale", 1, (-1,), "--held-out-indices"),
    ("multi_scale", 1, (2, 2), "--held-out-indices"),
    ("multi_scale", 1, (0, 1, 2, 3, 4), "--held-out-indices"),
    ("both_scales", 1, None, "--training-mode"),
])
def test_bad_scale_choice_names_its_flag_and_the_range(mode, index, flag, message):
    with pytest.raises(UsageError) as caught:
        resolve_scales(data_with(5), mode, index, flag)
    text = str(caught.value)
    assert text.startswith(message)
    if mode != "both_scales":
        assert "0..4" in text


def test_high_frequency_share_of_two_modes_is_their_power_ratio():
    resolution = 32
    axis = np.arange(resolution) / resolution
    y, x = np.meshgrid(axis, axis, indexing="ij")
    low = 0.7 + 2.0 * np.cos(2 * np.pi * (1 * x + 2 * y))  # |n| = sqrt(5) < 8
    high = 0.5 * np.sin(2 * np.pi * (8 * x))  # |n| = 8, exactly the cutoff R / 4
    fields = np.stack([low + high, low])[None].repeat(3, axis=0)  # (3, 2, R, R)
    # mean(u^2): constant c -> c^2, a cosine of amplitude A -> A^2 / 2 (Parseval)
    low_energy, high_energy = 0.7**2 + 2.0**2 / 2, 0.5**2 / 2
    np.testing.assert_allclose(high_frequency_energy_fraction(fields),
                               [high_energy / (low_energy + high_energy), 0.0], atol=1e-12)
    np.testing.assert_allclose(high_frequency_energy_fraction(fields, cutoff=8.5), [0.0, 0.0],
                               atol=1e-12)
