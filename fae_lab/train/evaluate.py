"""Evaluation on the device: every test sample at every scale, on the full grid, and the same
metrics on a fixed subset of the training samples.

A split's samples are padded to a whole number of batches; padded samples are marked invalid and
add nothing to the sums. Per batch, :func:`fae_lab.spectral.evaluation_sums` returns sums over samples; they
are added up in a ``lax.scan`` and turned into the run store's evaluation variables
(docs/run-store.md) by :func:`fae_lab.spectral.evaluation_metrics`, all inside one jitted call.
The first ``n_reconstruction_samples`` samples' reconstructions come back too.

:func:`make_split_evaluate` runs that evaluation on the test split (``eval_*``) and on the
training subset (``eval_train_*``, the same quantities), so every curve carries its
generalisation gap. Rungs of the bottleneck ladder without an encoder cannot reconstruct an
unseen sample: they evaluate the training subset only, their ``eval_*`` stay NaN, and their
reconstructions are of training samples.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.spectral import RadialBins, evaluation_metrics, evaluation_sums

TRAIN_PREFIX = "eval_train_"


class EvalData(NamedTuple):
    fields: jax.Array  # (n_batches, batch, T, R, R) float32, padded with zeros
    valid: jax.Array  # (n_batches, batch) bool
    training_mask: jax.Array  # (T,) bool
    grid: jax.Array  # (R*R, 2)
    sample: jax.Array  # (n_batches, batch) int32: index into the training split (latent tables), else 0


class SplitEvalData(NamedTuple):
    """The two evaluated splits; ``test`` is None for a rung without an encoder."""

    test: EvalData | None
    train: EvalData


def prepare_eval_data(fields: np.ndarray, batch_size: int, training_mask: np.ndarray,
                      grid: np.ndarray, sample_index: np.ndarray | None = None, *,
                      at_least: int = 1) -> EvalData:
    """Pad ``fields (S, T, R, R)`` to whole batches: as few batches as ``batch_size`` samples
    each allow, made as even as they can be, so the padding (decoded, then masked out) is
    under one sample per batch: 819 samples at 64 are 13 batches of 63, not 13 of 64 with 13
    padded. A batch holds at least ``at_least`` samples (the reconstructions are the first
    batch's first samples), at most all of them.

    ``sample_index (S,)``: each sample's index into the training split (training subsets),
    read by the ladder's latent tables; None (the test split) gives 0.
    """
    n, T, R, _ = fields.shape
    n_batches = -(-n // max(1, min(batch_size, n)))
    batch_size = min(n, max(-(-n // n_batches), at_least))
    n_batches = -(-n // batch_size)
    padded = np.zeros((n_batches * batch_size, T, R, R), np.float32)
    padded[:n] = fields
    valid = np.zeros(n_batches * batch_size, bool)
    valid[:n] = True
    sample = np.zeros(n_batches * batch_size, np.int32)
    if sample_index is not None:
        sample[:n] = sample_index
    return EvalData(
        fields=jnp.asarray(padded.reshape(n_batches, batch_size, T, R, R)),
        valid=jnp.asarray(valid.reshape(n_batches, batch_size)),
        training_mask=jnp.asarray(training_mask),
        grid=jnp.asarray(grid),
        sample=jnp.asarray(sample.reshape(n_batches, batch_size)),
    )


def make_evaluate(apply_fn, bins: RadialBins, cutoff: float, n_reconstructions: int):
    """Build ``evaluate(params, rest, data) -> (metrics dict, reconstructions (S_r, T, R, R))``."""

    def reconstruct(params, rest, fields, sample, grid):
        S, T, R, _ = fields.shape
        field = (sample[:, None] * T + jnp.arange(T)[None, :]).reshape(S * T)  # the latent row
        pred, _ = apply_fn(params, rest, grid, fields.reshape(S * T, R * R), grid, field)
        return pred.reshape(S, T, R, R)

    def batch_sums(params, rest, batch, grid):
        fields, valid, sample = batch
        pred = reconstruct(params, rest, fields, sample, grid)
        return evaluation_sums(pred.astype(fields.dtype), fields, bins, cutoff, valid=valid)

    def evaluate(params, rest, data: EvalData):
        batches = (data.fields, data.valid, data.sample)
        first = jax.tree.map(lambda a: a[0], batches)
        zero = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(batch_sums, params, rest, first, data.grid)
        )

        def body(total, batch):
            return jax.tree.map(jnp.add, total, batch_sums(params, rest, batch, data.grid)), None

        total, _ = jax.lax.scan(body, zero, batches)
        metrics = evaluation_metrics(total, data.training_mask)
        n_rec = min(n_reconstructions, data.fields.shape[1])
        recon = reconstruct(params, rest, data.fields[0, :n_rec], data.sample[0, :n_rec], data.grid)
        return metrics, recon

    return evaluate


def make_split_evaluate(evaluate):
    """``evaluate`` of :func:`make_evaluate` on both splits: ``(params, rest, SplitEvalData) ->
    (metrics, reconstructions)``. Each ``eval_<name>`` of the test split comes with
    ``eval_train_<name>`` of the training subset. Without a test split the ``eval_<name>`` are
    NaN and the reconstructions are the training subset's."""

    def split_evaluate(params, rest, data: SplitEvalData):
        train_metrics, train_recon = evaluate(params, rest, data.train)
        if data.test is None:
            metrics = {k: jnp.full_like(v, jnp.nan) for k, v in train_metrics.items()}
            recon = train_recon
        else:
            metrics, recon = evaluate(params, rest, data.test)
        renamed = {TRAIN_PREFIX + k.removeprefix("eval_"): v for k, v in train_metrics.items()}
        return {**metrics, **renamed}, recon

    return split_evaluate
