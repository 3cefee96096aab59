"""The evaluation's batches (fae_lab.train.evaluate.prepare_eval_data): as few as the batch size
allows, as even as they can be, every sample once and in order; and the metrics do not depend
on how the samples are batched, nor on the other members of a group."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fae_lab.config import ModelConfig
from fae_lab.grid import grid_coordinates
from fae_lab.models.fae import build_model
from fae_lab.spectral import radial_bins, resolve_cutoff
from fae_lab.train.evaluate import SplitEvalData, make_evaluate, prepare_eval_data
from fae_lab.train.run import group_programs
from fae_lab.train.step import StepStatics, stack_members

R, T = 8, 3


def fields_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, T, R, R)).astype(np.float32)


def layout(n: int, batch_size: int, at_least: int = 1):
    data = prepare_eval_data(fields_of(n), batch_size, np.ones(T, bool), grid_coordinates(R),
                             sample_index=np.arange(n) + 100, at_least=at_least)
    return data, data.fields.shape[0], data.fields.shape[1]


@pytest.mark.parametrize(("n", "batch_size", "at_least"),
                         [(819, 64, 4), (65, 64, 4), (64, 64, 4), (7, 64, 4), (5, 4, 4), (10, 3, 1),
                          (1, 8, 1), (100, 1, 1), (9, 2, 6)])
def test_few_even_batches_hold_every_sample_once_in_order(n, batch_size, at_least):
    data, n_batches, batch = layout(n, batch_size, at_least)
    fewest = -(-n // min(batch_size, n))  # written out: ceil(n / batch_size)
    if at_least <= -(-n // fewest):  # the even batches hold enough samples for the reconstructions
        assert n_batches == fewest and batch <= batch_size
        assert n_batches * batch - n < n_batches  # padding under one sample per batch
    else:  # batches of exactly at_least samples, the last one padded
        assert batch == min(at_least, n) and n_batches * batch - n < batch
    assert batch >= min(at_least, n)  # the reconstructions come from the first batch
    valid = np.asarray(data.valid).reshape(-1)
    assert valid.sum() == n and valid[:n].all()  # the padding is the tail
    flat = np.asarray(data.fields).reshape(n_batches * batch, T, R, R)
    np.testing.assert_array_equal(flat[:n], fields_of(n))
    np.testing.assert_array_equal(np.asarray(data.sample).reshape(-1)[:n], np.arange(n) + 100)


def test_the_seed_sizes_are_thirteen_batches_of_sixty_three():
    _, n_batches, batch = layout(819, 64, 4)
    assert (n_batches, batch) == (13, 63)  # not 13 of 64 with 13 padded


def test_metrics_and_reconstructions_do_not_depend_on_the_batching():
    """A decoder that is a fixed function of the field: every batching gives the same sums
    (up to float32 summation order) and the same first reconstructions."""

    def apply_fn(params, rest, x_enc, u_enc, x_dec, field):
        return 0.8 * u_enc + 0.1 * jnp.roll(u_enc, 3, axis=-1) + params, jnp.zeros((u_enc.shape[0], 2))

    evaluate = make_evaluate(apply_fn, radial_bins(R, 4), resolve_cutoff(R, None), 3)
    fields = fields_of(11, seed=1)
    results = []
    for batch_size in (1, 2, 4, 11, 64):
        data = prepare_eval_data(fields, batch_size, np.array([True, False, True]), grid_coordinates(R), at_least=3)
        metrics, recon = evaluate(jnp.float32(0.05), None, data)
        results.append(({k: np.asarray(v) for k, v in metrics.items()}, np.asarray(recon)))
    reference, reference_recon = results[0]
    for metrics, recon in results[1:]:
        assert metrics.keys() == reference.keys()
        for name, value in reference.items():
            np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(recon, reference_recon, rtol=1e-6, atol=1e-6)
    # The reconstructions are the first three samples' decoded fields.
    expected = 0.8 * fields[:3] + 0.1 * np.roll(fields[:3].reshape(3, T, R * R), 3, axis=-1).reshape(3, T, R, R) + 0.05
    np.testing.assert_allclose(reference_recon, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_turn", [True, False])
def test_a_group_evaluates_each_member_as_that_member_alone(in_turn):
    """A group's evaluation (its members one after another, or side by side as when they are
    sharded over devices) gives each member the metrics and reconstructions of that member
    evaluated as a group of one: nothing is mixed up between members."""
    cfg = ModelConfig(latent_dim=6, encoder_hidden=(12, 12), decoder_hidden=(10, 10), n_heads=3,
                      n_coordinate_frequencies=3, pooling_type="mean")
    models = [build_model(dataclasses.replace(cfg, feature_seed=seed), R, seed=seed) for seed in (0, 1, 2)]
    graphdef = nnx.split(models[0], nnx.Param, ...)[0]
    params, rest = zip(*(nnx.split(m, nnx.Param, ...)[1:] for m in models), strict=True)
    statics = StepStatics("l2", "finite_difference", None, R, 4, None, None)
    split = [prepare_eval_data(fields_of(n, seed=n), 3, np.array([True, False, True]), grid_coordinates(R),
                               at_least=2) for n in (7, 5)]
    data = SplitEvalData(test=split[0], train=split[1])
    bins, cutoff = radial_bins(R, 4), resolve_cutoff(R, None)
    group = group_programs(graphdef, statics, None, bins, cutoff, 2, members_in_turn=in_turn).evaluate
    metrics, recon = group(stack_members(list(params)), stack_members(list(rest)), data)
    alone = group_programs(graphdef, statics, None, bins, cutoff, 2).evaluate
    for i in range(3):
        one_metrics, one_recon = alone(stack_members([params[i]]), stack_members([rest[i]]), data)
        for name, value in one_metrics.items():
            np.testing.assert_allclose(np.asarray(metrics[name][i]), np.asarray(value[0]), rtol=1e-5,
                                       atol=1e-7, err_msg=f"member {i}: {name}")
        np.testing.assert_allclose(np.asarray(recon[i]), np.asarray(one_recon[0]), rtol=1e-5, atol=1e-6)
    # The members differ, so a mix-up would show.
    assert not np.allclose(np.asarray(recon[0]), np.asarray(recon[1]))
