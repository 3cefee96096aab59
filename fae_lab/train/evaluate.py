"""Evaluation on the device: every test sample at every scale, on the full grid.

The test set is padded to a whole number of batches; padded samples are marked invalid and
add nothing to the sums. Per batch, :func:`fae_lab.spectral.evaluation_sums` returns sums over samples; they
are added up in a ``lax.scan`` and turned into the run store's variables (docs/metrics.md) by
:func:`fae_lab.spectral.evaluation_metrics`, all inside one jitted call. The first
``n_reconstruction_samples`` test samples' reconstructions come back too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fae_lab.spectral import RadialBins, evaluation_metrics, evaluation_sums


class EvalData(NamedTuple):
    fields: jax.Array  # (n_batches, batch, T, R, R) float32, padded with zeros
    valid: jax.Array  # (n_batches, batch) bool
    training_mask: jax.Array  # (T,) bool
    grid: jax.Array  # (R*R, 2)


def prepare_eval_data(test_fields: np.ndarray, batch_size: int, training_mask: np.ndarray,
                      grid: np.ndarray) -> EvalData:
    """Pad ``test_fields (S, T, R, R)`` to whole batches of ``batch_size`` samples."""
    n, T, R, _ = test_fields.shape
    batch_size = max(1, min(batch_size, n))
    n_batches = -(-n // batch_size)
    padded = np.zeros((n_batches * batch_size, T, R, R), np.float32)
    padded[:n] = test_fields
    valid = np.zeros(n_batches * batch_size, bool)
    valid[:n] = True
    return EvalData(
        fields=jnp.asarray(padded.reshape(n_batches, batch_size, T, R, R)),
        valid=jnp.asarray(valid.reshape(n_batches, batch_size)),
        training_mask=jnp.asarray(training_mask),
        grid=jnp.asarray(grid),
    )


def make_evaluate(apply_fn, bins: RadialBins, cutoff: float, n_reconstructions: int):
    """Build ``evaluate(params, rest, data) -> (metrics dict, reconstructions (S_r, T, R, R))``."""

    def reconstruct(params, rest, fields, grid):
        S, T, R, _ = fields.shape
        pred, _ = apply_fn(params, rest, grid, fields.reshape(S * T, R * R), grid)
        return pred.reshape(S, T, R, R)

    def batch_sums(params, rest, batch, grid):
        fields, valid = batch
        pred = reconstruct(params, rest, fields, grid)
        return evaluation_sums(pred.astype(fields.dtype), fields, bins, cutoff, valid=valid)

    def evaluate(params, rest, data: EvalData):
        batches = (data.fields, data.valid)
        first = jax.tree.map(lambda a: a[0], batches)
        zero = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(batch_sums, params, rest, first, data.grid)
        )

        def body(total, batch):
            return jax.tree.map(jnp.add, total, batch_sums(params, rest, batch, data.grid)), None

        total, _ = jax.lax.scan(body, zero, batches)
        metrics = evaluation_metrics(total, data.training_mask)
        n_rec = min(n_reconstructions, data.fields.shape[1])
        recon = reconstruct(params, rest, data.fields[0, :n_rec], data.grid)
        return metrics, recon

    return evaluate
