"""Random point subsets of the grid, drawn on the device with JAX keys.

A functional autoencoder sees a field as a point set {(x_p, u(x_p))}. Training on random
subsets of the R*R grid points (the encoder's input and the decoder's loss points) makes the
model resolution-independent and each step cheaper. Subsets are drawn for the whole batch at
once inside the jitted step, never per sample on the host.

The encoder's and the decoder's subsets come from independent keys: each is a uniform random
subset of its own size. (The public reference code masks the decoder's points and hands the
encoder the complement, so the encoder sees 1 - r of the points and never the decoder's.)
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from fae_lab.errors import UsageError


@partial(jax.jit, static_argnames=("batch_size", "n_total", "n_points"))
def sample_point_indices(key: jax.Array, batch_size: int, n_total: int,
                         n_points: int) -> jax.Array:
    """For each of B samples, ``n_points`` distinct indices in 0..n_total-1: ``(B, P)`` int32.

    Each row is a uniform random P-subset (in random order): the positions of the P largest
    of n_total i.i.d. uniform numbers. Sizes are static; one top_k over ``(B, n_total)``.
    """
    if not 1 <= n_points <= n_total:
        raise UsageError(f"points per sample: expected 1..{n_total} (the grid has {n_total} "
                         f"points), got {n_points}")
    noise = jax.random.uniform(key, (batch_size, n_total))
    return jax.lax.top_k(noise, n_points)[1].astype(jnp.int32)


def gather_points(values: jax.Array, coordinates: jax.Array,
                  indices: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The point sets of a batch: ``x[b, p] = coordinates[indices[b, p]]``, same for ``u``.

    ``values`` ``(B, n_total)``, ``coordinates`` ``(n_total, 2)``, ``indices`` ``(B, P)``
    -> ``x`` ``(B, P, 2)``, ``u`` ``(B, P)``. ``indices=None`` is the full grid: ``x`` is the
    shared ``(n_total, 2)`` and ``u`` is ``values``.
    """
    if indices is None:
        return coordinates, values
    return coordinates[indices], jnp.take_along_axis(values, indices, axis=1)


def draw_point_subsets(key: jax.Array, batch_size: int, n_total: int,
                       encoder_points: int | None,
                       decoder_points: int | None) -> tuple[jax.Array | None, jax.Array | None]:
    """Independent point subsets for the encoder and the decoder's loss: ``(enc_idx, dec_idx)``.

    ``key`` splits into one key per side; each side gets :func:`sample_point_indices` of its
    own size, ``(B, P_enc)`` and ``(B, P_dec)``, or None (the full grid) where its size is None.
    """
    encoder_key, decoder_key = jax.random.split(key)
    return (_subset(encoder_key, batch_size, n_total, encoder_points, "--encoder-points"),
            _subset(decoder_key, batch_size, n_total, decoder_points, "--decoder-points"))


def _subset(key: jax.Array, batch_size: int, n_total: int, n_points: int | None,
            flag: str) -> jax.Array | None:
    if n_points is None:
        return None
    if not 1 <= n_points <= n_total:
        raise UsageError(f"{flag}: expected 1..{n_total} points per sample (the grid has "
                         f"{n_total}), got {n_points}")
    return sample_point_indices(key, batch_size, n_total, n_points)
